"""Serve one request: engine tokens → text → chunks on the reply partition → completion.

A traced request (``StreamState.trace``) is stamped ``admitted`` when it is handed to the engine,
``first_token`` when the engine yields its first token and ``chunk_published`` when its first
chunk goes to the producer; that chunk and the completion carry the trace in their headers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field

from aiokafka.structs import RecordMetadata

from chatbus.errors import ServiceUnavailable
from chatbus.history.context import ConversationContext
from chatbus.history.turns import ContextTurn, context_messages
from chatbus.kafka.publisher import Publisher
from chatbus.settings import Settings
from chatbus.tracing import Hop, RequestTrace
from inference_consumers import metrics
from inference_consumers.chunker import Chunker, PendingChunk
from inference_consumers.engine import GenerationRequest, InferenceEngine
from inference_consumers.publish_hold import PublishHold
from inference_consumers.resume import Published
from inference_consumers.text_stream import TextStream
from schemas.events import (
    ChatRequest,
    Completion,
    ErrorInfo,
    FinishReason,
    Timings,
    TokenChunk,
    Usage,
)
from schemas.topics import TopicName


def with_default_system(messages: list[dict[str, str]], system_prompt: str) -> list[dict[str, str]]:
    """``messages`` with ``system_prompt`` first when they carry no system message of their own
    (and the prompt is not empty)."""
    if not system_prompt or any(m.get("role") == "system" for m in messages):
        return messages
    return [{"role": "system", "content": system_prompt}, *messages]


class RequestRejected(Exception):
    """The request cannot be served as asked; ``info`` tells the client why."""

    def __init__(self, info: ErrorInfo) -> None:
        super().__init__(info.message)
        self.info = info


@dataclass
class StreamState:
    """What one in-flight request has done so far."""

    request: ChatRequest
    picked_at: float = field(default_factory=time.monotonic)
    since_ms: int = 0  # when the request was published (Kafka timestamp)
    queue_wait_ms: float = 0.0
    next_seq: int = 0
    first_token_at: float | None = None
    token_times: list[float] = field(default_factory=list)
    cancel_requested: bool = False
    cancel_reason: str = ""  # "content_filter" when output moderation stopped it
    handing_off: bool = False  # stop without a final chunk: another worker continues it
    moved: bool = False  # its partition went to another member: it goes on under its lease
    lease_held: bool = False  # this worker holds the request's lease (renews it while serving)
    lease_until: float = 0.0  # monotonic: past it, a moved stream may be resumed elsewhere
    hold: PublishHold = field(default_factory=PublishHold)  # closed while a rebalance decides
    engine_id: str = ""  # this attempt's id in the engine (a resumed request gets a new one)
    resumed: Published | None = None  # what an earlier worker already streamed
    last_send: asyncio.Future[RecordMetadata] | None = None
    trace: RequestTrace | None = None  # the request's trace, continued by this worker
    trace_sent: bool = False  # a chunk of this attempt carried the trace already

    @property
    def handed_over(self) -> bool:
        """It publishes nothing more: handed to another worker, or its partition moved and its
        lease is past its deadline (the partition's new owner may resume it from then on)."""
        return self.handing_off or (self.moved and time.monotonic() >= self.lease_until)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a request ended: what the completion and the last chunk report."""

    text: str
    finish_reason: FinishReason
    generation: GenerationRequest | None
    token_ids: list[int]
    error: ErrorInfo | None = None


def _cancelled(state: StreamState) -> FinishReason:
    """How a cancelled stream ends: output moderation's stop reads as a content filter."""
    return "content_filter" if state.cancel_reason == "content_filter" else "cancelled"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class RequestStreamer:
    """Runs requests on an engine and publishes what they produce."""

    def __init__(
        self,
        settings: Settings,
        engine: InferenceEngine,
        publisher: Publisher,
        worker_id: str,
        context: ConversationContext | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._publisher = publisher
        self._worker_id = worker_id
        self._context = context  # conversation context (requests with use_history)

    def prepare(
        self,
        request: ChatRequest,
        resumed: Published | None = None,
        context: list[ContextTurn] | None = None,
    ) -> GenerationRequest:
        """Validate ``request`` against this model; raises :class:`RequestRejected`.

        ``context`` (earlier turns, oldest first) precedes the request's messages; its oldest
        turns are dropped until the prompt fits the model's context.
        """
        engine = self._engine
        if request.model != engine.model_name:
            raise RequestRejected(
                ErrorInfo(
                    code="model_not_found",
                    param="model",
                    message=f"model {request.model!r} is not served by this worker group; "
                    f"available: {engine.model_name!r}",
                )
            )
        sampling = request.sampling
        max_new = sampling.max_tokens or self._settings.model.default_max_tokens
        turns = list(context or ())
        while True:
            messages = [*context_messages(turns), *request.messages]
            prompt_ids = engine.encode_chat(
                with_default_system(
                    [m.model_dump() for m in messages], self._settings.model.default_system_prompt
                )
            )
            if not turns or len(prompt_ids) + max_new <= engine.max_context:
                break
            turns.pop(0)
        if len(prompt_ids) + max_new > engine.max_context:
            raise RequestRejected(
                ErrorInfo(
                    code="context_length_exceeded",
                    param="messages",
                    message=f"the prompt has {len(prompt_ids)} tokens and max_tokens is {max_new}; "
                    f"together they exceed the model's context of {engine.max_context} "
                    "tokens: shorten the conversation or lower max_tokens",
                )
            )
        if resumed is not None:  # prefill the prompt plus what was streamed; continue after it
            prompt_ids = prompt_ids + resumed.token_ids
            max_new -= len(resumed.token_ids)
        return GenerationRequest(
            request_id=f"{request.request_id}@{uuid.uuid4().hex[:8]}",  # unique per attempt
            prompt_ids=prompt_ids,
            max_new_tokens=max_new,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            seed=sampling.seed,
            resumed=resumed is not None,
        )

    async def run(self, state: StreamState) -> Completion | None:
        """Generate, stream chunks, then publish the completion and return it.

        Returns None when the request was handed over (``state.handed_over``): its chunks are on
        the broker, and the member that takes the partition continues after them.
        """
        request = state.request
        model = self._engine.model_name
        resumed = state.resumed
        try:
            generation = self.prepare(request, resumed, await self._load_context(request))
        except ServiceUnavailable as exc:
            return await self.fail(state, ErrorInfo(code="service_unavailable", message=str(exc)))
        except RequestRejected as rejected:
            return await self.fail(state, rejected.info)
        state.engine_id = generation.request_id
        text_stream = TextStream(self._engine.decode, request.sampling.stop)
        if resumed is not None:
            state.next_seq = resumed.next_seq
            text_stream.resume(resumed.token_ids, resumed.text)
            if resumed.finish_reason is not None:  # it had streamed everything: just complete
                async with state.hold.publishing():
                    if state.handed_over:
                        return None
                    return await self._complete(
                        state,
                        Outcome(resumed.text, resumed.finish_reason, generation, resumed.token_ids),
                    )
        if state.handed_over:  # revoked before it started: the next owner serves it
            return None
        if state.cancel_requested or generation.max_new_tokens <= 0:
            reason: FinishReason = _cancelled(state) if state.cancel_requested else "length"
            return await self._finish(
                state, Outcome(text_stream.text, reason, generation, text_stream.token_ids)
            )
        chunker = Chunker(
            self._settings.worker.chunk_max_tokens, self._settings.worker.chunk_max_ms
        )
        finish_reason: FinishReason = "error"
        error: ErrorInfo | None = None
        stopping = False
        if state.trace is not None:
            state.trace.stamp(Hop.ADMITTED)
        async for event in self._engine.generate(generation):
            if event.token_ids and not stopping:
                now = time.monotonic()
                if state.first_token_at is None:
                    state.first_token_at = now
                    if state.trace is not None:
                        state.trace.stamp(Hop.FIRST_TOKEN)
                state.token_times.extend([now] * len(event.token_ids))
                released = text_stream.push(event.token_ids)
                chunk = chunker.add(released, list(event.token_ids))
                if chunk is not None:
                    async with state.hold.publishing():  # waits while a rebalance decides
                        if not state.handed_over:
                            await self._send_chunk(state, chunk)
                if text_stream.stopped:  # a stop sequence: no more tokens are wanted
                    stopping = True
                    finish_reason = "stop"
                    await self._engine.cancel(generation.request_id)
            if event.finished:
                if not stopping:
                    finish_reason = event.finish_reason or "error"
                    if state.cancel_requested and finish_reason == "cancelled":
                        finish_reason = _cancelled(state)
                        metrics.CANCELLATIONS.labels(model).inc()
                if event.error:
                    error = ErrorInfo(code="engine_error", message=event.error)
                break
        if state.handed_over:
            if state.last_send is not None:
                await state.last_send  # what we streamed is on the broker before we let go
            return None
        last = chunker.take()
        last.text += text_stream.finish()
        outcome = Outcome(text_stream.text, finish_reason, generation, text_stream.token_ids, error)
        return await self._finish(state, outcome, last)

    async def _load_context(self, request: ChatRequest) -> list[ContextTurn]:
        if not request.use_history or self._context is None:
            return []
        return await self._context.load(request.conversation_id, exclude=request.request_id)

    async def _remember(self, state: StreamState, text: str, finish_reason: FinishReason) -> None:
        """Put the finished turn in the context cache before the client learns it ended, so a
        follow-up sent right away sees it (the history processor writes the same entry)."""
        if self._context is None:
            return
        request = state.request
        await self._context.append(
            request.conversation_id,
            ContextTurn(
                request_id=request.request_id,
                created_at=request.created_at.timestamp(),
                messages=tuple(request.messages),
                answer=text,
                finish_reason=finish_reason,
                use_history=request.use_history,
            ),
            newest=True,
        )

    async def fail(self, state: StreamState, info: ErrorInfo) -> Completion | None:
        """End the request's stream with an error the client can act on (None: handed over
        first, its next owner answers)."""
        return await self._finish(state, Outcome("", "error", None, [], info))

    async def _send_chunk(
        self,
        state: StreamState,
        chunk: PendingChunk,
        *,
        finish_reason: FinishReason | None = None,
        error: ErrorInfo | None = None,
        usage: Usage | None = None,
    ) -> None:
        request = state.request
        event = TokenChunk(
            request_id=request.request_id,
            conversation_id=request.conversation_id,
            seq=state.next_seq,
            text=chunk.text,
            token_ids=chunk.token_ids,
            finish_reason=finish_reason,
            error=error,
            usage=usage,
            worker_id=self._worker_id,
        )
        state.next_seq += 1
        headers: list[tuple[str, bytes]] = []
        if state.trace is not None and not state.trace_sent:  # the first chunk brings the trace
            state.trace.stamp(Hop.CHUNK_PUBLISHED)
            state.trace_sent = True
            headers = state.trace.headers()
        state.last_send = await self._publisher.send(
            TopicName.TOKENS, event, partition=request.reply_to.partition, headers=headers
        )
        metrics.CHUNKS.labels(self._engine.model_name).inc()

    async def _finish(
        self, state: StreamState, outcome: Outcome, last: PendingChunk | None = None
    ) -> Completion | None:
        """The last chunk, then the completion; None when the stream was handed over while a
        rebalance held it (its next owner finishes it)."""
        async with state.hold.publishing():
            if state.handed_over:
                return None
            await self._remember(state, outcome.text, outcome.finish_reason)
            await self._send_chunk(
                state,
                last or PendingChunk(),
                finish_reason=outcome.finish_reason,
                error=outcome.error,
                usage=self._usage(state, outcome),
            )
            assert state.last_send is not None
            await state.last_send  # every chunk is on the broker before the completion
            return await self._complete(state, outcome)

    @staticmethod
    def _usage(state: StreamState, outcome: Outcome) -> Usage:
        generation, token_ids = outcome.generation, outcome.token_ids
        prompt_tokens = len(generation.prompt_ids) if generation else 0
        if state.resumed is not None:  # the prefill included what was already streamed
            prompt_tokens -= len(state.resumed.token_ids)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=len(token_ids),
            total_tokens=prompt_tokens + len(token_ids),
        )

    async def _complete(self, state: StreamState, outcome: Outcome) -> Completion:
        request = state.request
        finish_reason = outcome.finish_reason
        model = self._engine.model_name
        done = time.monotonic()
        gaps = [b - a for a, b in zip(state.token_times, state.token_times[1:], strict=False)]
        timings = Timings(
            queue_wait_ms=state.queue_wait_ms,
            time_to_first_token_ms=(
                None
                if state.first_token_at is None
                else (state.first_token_at - state.picked_at) * 1000
            ),
            inter_token_mean_ms=(sum(gaps) / len(gaps) * 1000) if gaps else None,
            inter_token_p99_ms=_percentile(gaps, 0.99) * 1000 if gaps else None,
            total_ms=(done - state.picked_at) * 1000,
        )
        completion = Completion(
            request_id=request.request_id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            key_id=request.key_id,
            model=request.model,
            text=outcome.text,
            finish_reason=finish_reason,
            usage=self._usage(state, outcome),
            timings=timings,
            worker_id=self._worker_id,
            error=outcome.error,
        )
        await self._publisher.publish(
            TopicName.COMPLETIONS, completion, headers=state.trace.headers() if state.trace else ()
        )
        metrics.REQUESTS.labels(model, finish_reason).inc()
        metrics.TOKENS.labels(model).inc(len(outcome.token_ids))
        if state.first_token_at is not None:
            metrics.TTFT.labels(model).observe(state.first_token_at - state.picked_at)
        for gap in gaps:
            metrics.ITL.labels(model).observe(gap)
        return completion
