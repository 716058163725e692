"""Send simulated conversations through the live bus (small N), and wait for their answers.

The conversations' user turns come from :class:`analytics.simulate.generator.Simulator` (the same
seed gives the same prompts); each turn is sent with :class:`producers.sdk.ChatClient` to the
served model, continuing its conversation (``use_history``) after the first turn, and read to its
end before the next turn goes. A turn the simulation cancels is cancelled after its first chunk.
Everything the pipeline does with them (moderation, inference, history, the archiver) is real.

It lives on the command line's side (``chatbus simulate --to pipeline``) because it joins two
components: the analytics generator and the producers' client SDK. Components never import each
other; the command line is where they are wired together.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from analytics.simulate.generator import P_RATING, Profile, Simulator
from analytics.simulate.rater import rate_answer
from chatbus.errors import ChatbusError
from chatbus.settings import Settings
from schemas.events import CancelRequest, ChatRequest, SamplingParams
from schemas.topics import TopicName


@dataclass
class PipelineResult:
    conversations: int = 0
    requests: int = 0
    answered: int = 0
    cancelled: int = 0
    refused: int = 0
    rated_up: int = 0
    rated_down: int = 0
    failed: int = 0  # no answer before the deadline
    finish_reasons: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _turns(sim: Simulator, index: int) -> list[tuple[ChatRequest, bool]]:
    """The user turns of conversation ``index`` and whether each gets cancelled."""
    events = sim.conversation(index)
    cancelled = {
        e.event.request_id
        for e in events
        if isinstance(e.event, CancelRequest) and e.event.reason != "content_filter"
    }
    return [
        (e.event, e.event.request_id in cancelled)
        for e in events
        if e.topic == TopicName.REQUESTS and isinstance(e.event, ChatRequest)
    ]


async def simulate_to_pipeline(
    profile: Profile,
    settings: Settings,
    *,
    model: str | None = None,
    max_tokens: int = 32,
    concurrency: int = 4,
    timeout_s: float = 120.0,
    rate_share: float = P_RATING,
    on_progress: Callable[[int], None] | None = None,
) -> PipelineResult:
    """Send ``profile.conversations`` conversations; every answer awaited (or ``timeout_s``).
    About ``rate_share`` of the answers are rated by their user (:func:`rate_answer`, on the
    answer's real text), as ``chat.rating`` events."""
    from producers.sdk import ChatClient, ChatError

    sim = Simulator(profile)
    result = PipelineResult(conversations=profile.conversations)
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    gate = asyncio.Semaphore(concurrency)
    model_name = model or settings.model.name

    async def one(client: ChatClient, index: int) -> None:
        async with gate:
            conversation_id: str | None = None
            for turn, cancel in _turns(sim, index):
                left = deadline - time.monotonic()
                if left <= 0:
                    result.failed += 1
                    result.errors.append(f"{turn.request_id}: deadline passed before sending")
                    return
                request = await client.send(
                    [m.model_dump() for m in turn.messages],
                    model=model_name,
                    sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens),
                    conversation_id=conversation_id,
                    user_id=turn.user_id,
                    use_history=conversation_id is not None,
                )
                conversation_id = request.conversation_id
                result.requests += 1
                finish = None
                text = []
                try:
                    async for chunk in client.chunks(request.request_id, timeout_s=left):
                        if cancel and chunk.seq == 0 and not chunk.is_last:
                            await client.cancel(request.request_id)
                        finish = chunk.finish_reason or finish
                        text.append(chunk.text)
                except ChatError as exc:  # the service answered with an error (or a refusal)
                    finish = (
                        "content_filter" if exc.info.code == "content_policy_violation" else "error"
                    )
                    result.refused += finish == "content_filter"
                    if finish == "error":
                        result.errors.append(f"{request.request_id}: {exc}")
                except ChatbusError as exc:  # no answer in time
                    result.failed += 1
                    result.errors.append(f"{request.request_id}: {exc}")
                    return
                rates = random.Random(f"rate:{turn.request_id}").random() < rate_share  # noqa: S311
                if finish not in (None, "content_filter", "error") and rates:
                    rating, category = rate_answer("".join(text), finish)
                    await client.feedback(request, rating, category=category)  # type: ignore[arg-type]
                    result.rated_up += rating == "up"
                    result.rated_down += rating == "down"
                if finish is not None:
                    result.finish_reasons[finish] = result.finish_reasons.get(finish, 0) + 1
                    result.answered += finish not in ("content_filter", "error")
                    result.cancelled += finish == "cancelled"
                if finish in ("cancelled", "content_filter", "error"):
                    break
            if on_progress is not None:
                on_progress(1)

    async with ChatClient(settings, client_id="chatbus-simulate") as client:
        await asyncio.gather(*(one(client, i) for i in range(profile.conversations)))
    result.seconds = time.perf_counter() - started
    return result
