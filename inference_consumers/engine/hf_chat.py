"""What both engines share: the model folder's Hugging Face tokenizer (chat template in, text
out, the same ids the gateway's prompt counter sees), request checks, the EOS ids, and the
lifecycle of an engine that loads its model in a thread and streams each request's events
through a queue."""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from inference_consumers.engine.base import (
    EngineError,
    EngineFinishReason,
    GenerationRequest,
    TokenEvent,
)

__all__ = [
    "EngineState",
    "EngineStream",
    "HuggingFaceChat",
    "ThreadLoadedEngine",
    "eos_ids",
    "read_events",
    "room_for",
]


class EngineState(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class HuggingFaceChat:
    """``encode_chat``/``decode`` of :class:`InferenceEngine` over a loaded tokenizer."""

    _tokenizer: Any = None

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        tokenizer = self._require_tokenizer()
        try:
            ids = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except Exception as exc:  # jinja's raise_exception, a message without role/content
            raise EngineError(f"cannot apply the chat template: {exc}") from exc
        return [int(i) for i in ids]

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._require_tokenizer().decode(list(token_ids), skip_special_tokens=True))

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise EngineError("engine not started: call start() first")
        return self._tokenizer


@dataclass(eq=False, slots=True)
class EngineStream:
    """The loop-side state of one request; touched only on the event loop's thread."""

    request_id: str
    queue: asyncio.Queue[TokenEvent] = field(default_factory=asyncio.Queue)
    done: bool = False


StreamT = TypeVar("StreamT", bound=EngineStream)


class ThreadLoadedEngine(HuggingFaceChat, Generic[StreamT]):
    """``start``/``stop`` and the end of a stream for an engine whose model loads in a thread.

    ``start`` runs ``_load`` in a worker thread (a cancelled start lets it finish, then undoes it
    with ``_shutdown``), then ``_after_start`` on the loop (a failure there stops the engine);
    ``stop`` ends every open stream as ``cancelled`` and runs ``_shutdown`` in a thread. Both are
    safe to call twice; a stopped engine cannot start again.
    """

    def _init_lifecycle(self) -> None:
        self._state = EngineState.NEW
        self._lock = asyncio.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: dict[str, StreamT] = {}

    def _load(self) -> None:
        """Load the model and start generating (runs in a worker thread)."""
        raise NotImplementedError

    def _shutdown(self) -> None:
        """Undo what ``_load`` did, whether it finished or not (runs in a worker thread)."""
        raise NotImplementedError

    async def _after_start(self) -> None:
        """What runs on the loop once loaded (a warm-up request, say)."""

    def _forget(self, stream: StreamT) -> None:
        self._streams.pop(stream.request_id, None)

    async def start(self) -> None:
        async with self._lock:
            if self._state is EngineState.STARTED:
                return
            if self._state is EngineState.STOPPED:
                raise EngineError(f"this engine was stopped; create a new {type(self).__name__}")
            self._loop = asyncio.get_running_loop()
            loading = asyncio.ensure_future(asyncio.to_thread(self._load))
            try:
                await asyncio.shield(loading)
            except asyncio.CancelledError:
                # The thread cannot be interrupted: let it finish, then undo what it started.
                with contextlib.suppress(Exception):
                    await loading
                await asyncio.to_thread(self._shutdown)
                raise
            self._state = EngineState.STARTED
            try:
                await self._after_start()
            except BaseException:
                self._state = EngineState.STOPPED
                await asyncio.to_thread(self._shutdown)
                raise

    async def stop(self) -> None:
        async with self._lock:
            if self._state is not EngineState.STARTED:
                self._state = EngineState.STOPPED
                return
            self._state = EngineState.STOPPED
            for stream in list(self._streams.values()):
                self._finish(stream, "cancelled")
            await asyncio.to_thread(self._shutdown)

    def _finish(
        self,
        stream: StreamT,
        reason: EngineFinishReason,
        token_ids: list[int] | None = None,
        *,
        error: str | None = None,
    ) -> None:
        if stream.done:
            return
        stream.done = True
        self._forget(stream)
        stream.queue.put_nowait(
            TokenEvent(
                stream.request_id,
                token_ids or [],
                finished=True,
                finish_reason=reason,
                error=error if reason == "error" else None,
            )
        )

    @property
    def inflight(self) -> int:
        """Requests whose stream has not finished yet."""
        return len(self._streams)


def room_for(request: GenerationRequest, max_context: int) -> int:
    """Tokens ``request`` may generate in a context of ``max_context``; raises
    :class:`EngineError` for an empty prompt, a bad ``max_new_tokens`` or no room at all."""
    if not request.prompt_ids:
        raise EngineError("prompt_ids is empty")
    if request.max_new_tokens < 1:
        raise EngineError(f"max_new_tokens must be at least 1, got {request.max_new_tokens}")
    room = max_context - len(request.prompt_ids)
    if room < 1:
        raise EngineError(
            f"prompt of {len(request.prompt_ids)} tokens leaves no room to generate in the "
            f"context of {max_context} tokens"
        )
    return room


def eos_ids(*sources: int | Iterable[int] | None) -> frozenset[int]:
    """Every non-negative id named by ``sources`` (an id, a list of ids, or None)."""
    ids: set[int] = set()
    for source in sources:
        if source is None:
            continue
        ids.update(int(i) for i in ([source] if isinstance(source, int) else source))
    return frozenset(i for i in ids if i >= 0)


async def read_events(
    queue: asyncio.Queue[TokenEvent], *, abandoned: Callable[[], None]
) -> AsyncIterator[TokenEvent]:
    """A request's events from its queue up to the finished one; ``abandoned`` runs when the
    consumer stops reading before that (it went away: the engine frees the slot)."""
    finished = False
    try:
        while not finished:
            event = await queue.get()
            finished = event.finished
            yield event
    finally:
        if not finished:
            abandoned()
