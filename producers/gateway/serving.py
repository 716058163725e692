"""Chat completions: an OpenAI request → a ``ChatRequest`` on the bus → OpenAI's answer.

The service depends only on :class:`ChatBackend` and :class:`PromptCounter`, so it is tested
with fakes. It waits for the first chunk before answering, so a refusal by the worker (unknown
model, prompt over the context, bad parameters) is a proper HTTP status, not a broken stream.

Finish reasons: ours ``stop`` and ``length`` and ``content_filter`` pass through; ``cancelled``
(someone cancelled the request on ``chat.control``) becomes ``stop``, the answer so far being
complete as far as the client is concerned; ``error`` becomes an error event (streaming) or a
5xx/4xx (non-streaming).

A traced request (``submit(..., trace=...)``) is reported once its first byte is out: the stamp
``delivered`` is the first SSE event handed to the server (``stream: false``: when the first chunk
reached the handler, since nothing reaches the client before the whole answer), then
:func:`~producers.gateway.trace_report.report_trace` logs and measures the stages.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from chatbus.errors import ChatbusError
from chatbus.logging import get_logger
from chatbus.tracing import Hop, RequestTrace
from producers.gateway import metrics
from producers.gateway.backend import ChatBackend, PromptCounter
from producers.gateway.client_hints import refuse_unserved, refuse_verbosity
from producers.gateway.errors import (
    APIError,
    from_chat_error,
    from_validation,
    invalid,
    unsupported,
)
from producers.gateway.protocol import (
    DONE_EVENT,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    Delta,
    ErrorBody,
    ErrorResponse,
    OpenAIFinishReason,
    UsageInfo,
)
from producers.gateway.resume import OnCancelled, StreamKeeper, StreamOrigin
from producers.gateway.trace_report import report_trace
from producers.sdk import ChatError
from schemas.events import ChatMessage, FinishReason, SamplingParams, TokenChunk

log = get_logger(__name__)

UsageHook = Callable[[UsageInfo], Awaitable[None]]

_FINISH: dict[FinishReason, OpenAIFinishReason] = {
    "stop": "stop",
    "length": "length",
    "cancelled": "stop",
    "content_filter": "content_filter",
}


def completion_id(request_id: str) -> str:
    """OpenAI's id of the answer to ``request_id`` (stable across its chunks)."""
    return "chatcmpl-" + request_id.removeprefix("req-")


@dataclass(frozen=True)
class ValidRequest:
    """A request checked and translated into our terms."""

    body: ChatCompletionRequest
    messages: list[ChatMessage]
    sampling: SamplingParams
    max_tokens: int  # what the answer may use at most (the request's, or the default)


@dataclass
class Answer:
    """A request on the bus whose first chunk has arrived (or whose chunks are replayed)."""

    model: str
    include_usage: bool  # its stream ends with a usage chunk
    request_id: str
    prompt_tokens: int
    created: int
    first: TokenChunk
    rest: AsyncIterator[TokenChunk]
    on_usage: UsageHook | None = None
    completion_tokens: int = field(default=0)
    trace: RequestTrace | None = None

    @property
    def id(self) -> str:
        return completion_id(self.request_id)

    def usage(self) -> UsageInfo:
        return UsageInfo(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.prompt_tokens + self.completion_tokens,
        )

    async def all_chunks(self) -> AsyncIterator[TokenChunk]:
        chunk: TokenChunk | None = self.first
        while chunk is not None:
            self.completion_tokens += len(chunk.token_ids)
            if chunk.usage is not None:  # the worker's count includes a conversation's context
                self.prompt_tokens = chunk.usage.prompt_tokens
            yield chunk
            if chunk.is_last:
                return
            chunk = await anext(self.rest, None)


class ChatCompletionService:
    """Serves ``POST /v1/chat/completions`` on a :class:`ChatBackend`."""

    def __init__(
        self,
        backend: ChatBackend,
        counter: PromptCounter,
        *,
        models: Sequence[str],
        default_max_tokens: int,
        max_messages: int,
        clock: Callable[[], float] = time.time,
        keeper: StreamKeeper | None = None,
        request_timeout_s: float = 120.0,
        owner: str = "",
    ) -> None:
        self._backend = backend
        self._keeper = keeper
        self._owner = owner  # this gateway, as its streams' origins name it
        self.request_timeout_s = request_timeout_s
        self._counter = counter
        self._models = tuple(models)
        self._default_max_tokens = default_max_tokens
        self._max_messages = max_messages
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()

    # --- before the bus ------------------------------------------------------------------------
    def validate(self, body: ChatCompletionRequest) -> ValidRequest:
        """Check ``body`` against what we serve; raises :class:`APIError` naming the param."""
        if body.model not in self._models:
            raise APIError(
                404,
                f"The model '{body.model}' does not exist or is not served "
                f"here; available: {', '.join(self._models)}",
                param="model",
                code="model_not_found",
            )
        refuse_unserved(body)
        refuse_verbosity(body.verbosity, "verbosity")
        if body.logprobs:
            raise unsupported("logprobs", "Log probabilities ('logprobs')")
        if len(body.messages) > self._max_messages:
            raise invalid(
                f"{len(body.messages)} messages are more than the "
                f"{self._max_messages} one request may carry",
                "messages",
                "too_many_messages",
            )
        messages = []
        for i, message in enumerate(body.messages):
            role = "system" if message.role == "developer" else message.role
            try:
                messages.append(ChatMessage(role=role, content=message.text()))
            except ValidationError as exc:
                raise from_validation(
                    exc, rename={"content": f"messages.{i}.content", "role": f"messages.{i}.role"}
                ) from None
        max_tokens = (
            body.max_completion_tokens
            if body.max_completion_tokens is not None
            else body.max_tokens
        )
        fields: dict[str, object] = {
            "max_tokens": max_tokens,
            "seed": body.seed,
            "stop": [body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        }
        if body.temperature is not None:
            fields["temperature"] = body.temperature
        if body.top_p is not None:
            fields["top_p"] = body.top_p
        try:
            sampling = SamplingParams.model_validate(fields)
        except ValidationError as exc:
            raise from_validation(exc, rename={"max_tokens": body.max_tokens_param}) from None
        return ValidRequest(
            body, messages, sampling, sampling.max_tokens or self._default_max_tokens
        )

    async def count_prompt(self, request: ValidRequest) -> int:
        return await self._counter.count(request.messages)

    # --- on the bus ----------------------------------------------------------------------------
    async def submit(
        self,
        request: ValidRequest,
        *,
        user_id: str,
        prompt_tokens: int,
        on_usage: UsageHook | None = None,
        on_sent: Callable[[str], None] | None = None,
        conversation_id: str | None = None,
        use_history: bool = False,
        trace: RequestTrace | None = None,
        key_id: str = "",
    ) -> Answer:
        """Publish the request and wait for its first chunk (a refusal raises APIError).

        ``on_sent`` learns the request_id as soon as the request is on the bus; ``trace`` (begun
        when the HTTP request arrived) travels with it and is reported at the first byte.
        """
        created = int(self._clock())
        traced: dict[str, RequestTrace] = {} if trace is None else {"trace": trace}
        try:
            request_id = await self._backend.send(
                request.messages,
                model=request.body.model,
                sampling=request.sampling,
                user_id=user_id,
                key_id=key_id,
                conversation_id=conversation_id,
                use_history=use_history,
                **traced,
            )
        except BaseException:
            await self._settle(on_usage, UsageInfo())
            raise
        await self._keep(request, request_id, user_id, created, prompt_tokens)
        if on_sent is not None:
            on_sent(request_id)
        rest = self._backend.chunks(request_id)
        try:
            first = await anext(rest)
        except ChatError as exc:
            await self._settle(on_usage, UsageInfo(prompt_tokens=0))
            raise from_chat_error(exc.info) from None
        except BaseException:
            self._cancel_soon(request_id)
            raise
        answer = Answer(
            model=request.body.model,
            include_usage=request.body.include_usage,
            request_id=request_id,
            prompt_tokens=prompt_tokens,
            created=created,
            first=first,
            rest=rest,
            on_usage=on_usage,
            trace=trace,
        )
        return answer

    async def _keep(
        self,
        request: ValidRequest,
        request_id: str,
        user_id: str,
        created: int,
        prompt_tokens: int,
    ) -> None:
        """Record where the answer to ``request_id`` begins on the bus (before its first chunk:
        a queued request can be resumed too), so its stream can be picked up anywhere."""
        position = self._backend.position(request_id)
        if self._keeper is None or position is None:
            return
        await self._keeper.record(
            StreamOrigin(
                request_id=request_id,
                user_id=user_id,
                position=position,
                model=request.body.model,
                created=created,
                prompt_tokens=prompt_tokens,
                include_usage=request.body.include_usage,
                owner=self._owner,
            )
        )

    async def origin(self, user_id: str, request_id: str) -> StreamOrigin:
        """Where the user's answer ``request_id`` begins; a 404 when it is unknown, someone
        else's, or forgotten (after ``CHATBUS_GATEWAY_RESUME_TTL_S``)."""
        found = await self.find_origin(user_id, request_id)
        if found is None:
            raise APIError(
                404,
                f"No stream found for '{request_id}' (unknown, not yours, or older than the "
                "gateway keeps streams resumable).",
                param="id",
                code="stream_not_found",
            )
        return found

    async def orphaned(self, user_id: str, request_id: str) -> bool:
        """Whether the user's ``request_id`` is still running with nobody to see it end: no
        gateway follows it and the gateway that began it is gone (False when unknown)."""
        if self._keeper is None:
            return False
        directory = self._keeper.directory
        try:
            origin = await self._keeper.find(user_id, request_id)
            if origin is None or await directory.followed(request_id):
                return False
            return not await directory.owner_alive(origin)
        except ChatbusError:
            return False

    @property
    def resume_grace_s(self) -> float:
        return 0.0 if self._keeper is None else self._keeper.grace_s

    async def find_origin(self, user_id: str, request_id: str) -> StreamOrigin | None:
        """Where the user's answer ``request_id`` begins, when known."""
        return None if self._keeper is None else await self._keeper.find(user_id, request_id)

    async def replay(self, origin: StreamOrigin) -> Answer:
        """The answer at ``origin`` again, its chunks read from the bus (then live)."""
        rest = self._backend.replay(origin.position, origin.request_id)
        try:
            first = await anext(rest)
        except ChatError as exc:
            raise from_chat_error(exc.info) from None
        except StopAsyncIteration:
            raise APIError(404, f"No chunks of '{origin.request_id}' on the bus.") from None
        return Answer(
            model=origin.model,
            include_usage=origin.include_usage,
            request_id=origin.request_id,
            prompt_tokens=origin.prompt_tokens,
            created=origin.created,
            first=first,
            rest=rest,
        )

    def trace(self, request_id: str) -> RequestTrace | None:
        """The trace of a recent request (its stamps, and its stages once reported)."""
        return self._backend.trace(request_id)

    async def complete(self, answer: Answer) -> ChatCompletion:
        """Collect the whole answer (``stream: false``)."""
        text: list[str] = []
        finish: FinishReason | None = None
        if answer.trace is not None:  # delivered: when the first chunk reached us (SDK's stamp)
            report_trace(answer.trace, request_id=answer.request_id, stream=False)
        try:
            async for chunk in self._followed(answer):
                text.append(chunk.text)
                finish = chunk.finish_reason
        except ChatError as exc:
            raise from_chat_error(exc.info) from None
        finally:
            if finish is None:
                self._cancel_soon(answer.request_id)
            await self._settle(answer.on_usage, answer.usage())
        return ChatCompletion(
            id=answer.id,
            created=answer.created,
            model=answer.model,
            choices=[
                Choice(
                    message=AssistantMessage(content="".join(text)),
                    finish_reason=_FINISH.get(finish or "stop", "stop"),
                )
            ],
            usage=answer.usage(),
        )

    async def stream(
        self, answer: Answer, *, starting_after: int = -1
    ) -> AsyncGenerator[str, None]:
        """The answer as SSE events, ending with ``[DONE]`` (``stream: true``).

        Each event carries its number in the SSE ``id`` field (0, 1, …: the role, each piece of
        text, the finish, the usage, ``[DONE]``); the same chunks always give the same events
        with the same numbers, so a resumed stream (``starting_after``: the last number the
        client has) continues exactly where the client stopped.

        When the client goes away first (the generator is closed or cancelled), the request is
        cancelled on the bus so the worker frees its slot (after the resume grace period).
        """
        with_usage = answer.include_usage
        numbered = _Numbered(starting_after)

        def event(delta: Delta, finish: OpenAIFinishReason | None = None) -> str:
            chunk = ChatCompletionChunk(
                id=answer.id,
                created=answer.created,
                model=answer.model,
                choices=[ChunkChoice(delta=delta, finish_reason=finish)],
            )
            return chunk.sse(with_usage_field=with_usage)

        finished = False
        metrics.STREAMS.inc()
        try:
            if first := numbered(event(Delta(role="assistant", content=""))):
                yield first
            if answer.trace is not None:  # resumed: the first event was handed to the server
                answer.trace.stamp(Hop.DELIVERED)
                report_trace(answer.trace, request_id=answer.request_id, stream=True)
            try:
                async for chunk in self._followed(answer):
                    if chunk.text and (text := numbered(event(Delta(content=chunk.text)))):
                        yield text
                    if chunk.finish_reason is not None:
                        finished = True
                        finish = _FINISH.get(chunk.finish_reason, "stop")
                        if last := numbered(event(Delta(), finish)):
                            yield last
            except ChatError as exc:
                finished = True
                yield numbered(_error_event(exc)) or _error_event(exc)
                return
            if with_usage:
                usage = ChatCompletionChunk(
                    id=answer.id,
                    created=answer.created,
                    model=answer.model,
                    choices=[],
                    usage=answer.usage(),
                ).sse(with_usage_field=True)
                if usage := numbered(usage):
                    yield usage
            yield numbered(DONE_EVENT) or DONE_EVENT
        finally:
            metrics.STREAMS.dec()
            if not finished:
                metrics.DISCONNECTS.inc()
                log.info("client_disconnected", request_id=answer.request_id)
                self._cancel_soon(answer.request_id)
            self._settle_soon(answer.on_usage, answer.usage())
            await _close_quietly(answer.rest)

    async def follow(
        self, answer: Answer, on_cancelled: OnCancelled | None = None
    ) -> AsyncGenerator[TokenChunk, None]:
        """The answer's chunks, for another view of it (the Responses API): when the consumer
        stops before the last chunk (its client went away) the request is cancelled on the bus
        (``on_cancelled`` runs then); the usage is settled either way. A worker's error raises
        ``ChatError``."""
        ended = False
        try:
            async for chunk in self._followed(answer):
                ended = chunk.finish_reason is not None
                yield chunk
        except ChatError:
            ended = True
            raise
        finally:
            await self.release(answer, ended=ended, on_cancelled=on_cancelled)

    async def release(
        self, answer: Answer, *, ended: bool, on_cancelled: OnCancelled | None = None
    ) -> None:
        """Done with ``answer``: cancel it on the bus unless it ended, settle its usage, stop
        reading its chunks (what :meth:`follow` does when it stops)."""
        if not ended:
            self._cancel_soon(answer.request_id, on_cancelled)
        self._settle_soon(answer.on_usage, answer.usage())
        await _close_quietly(answer.rest)

    def _followed(self, answer: Answer) -> AsyncIterator[TokenChunk]:
        """The answer's chunks, marked followed (for the resume grace period) as they come."""
        if self._keeper is None:
            return answer.all_chunks()
        return self._keeper.follow(answer.request_id, answer.all_chunks())

    async def cancel(self, request_id: str) -> None:
        """Stop ``request_id`` wherever it runs (``chat.control``)."""
        await self._backend.cancel(request_id)

    # --- background work -----------------------------------------------------------------------
    def _cancel_soon(self, request_id: str, on_cancelled: OnCancelled | None = None) -> None:
        """Cancel on the bus in a task (the caller may itself be being cancelled): at once, or,
        when streams are kept resumable, once the grace period passed with nobody resuming."""
        if self._keeper is None:
            work = self._cancel_now(request_id, on_cancelled)
        else:
            work = self._keeper.abandon(request_id, self._backend.cancel, on_cancelled or _nothing)
        self.spawn(work, f"cancel-{request_id}")

    async def _cancel_now(self, request_id: str, on_cancelled: OnCancelled | None) -> None:
        await self._backend.cancel(request_id)
        if on_cancelled is not None:
            await on_cancelled()

    def _settle_soon(self, hook: UsageHook | None, usage: UsageInfo) -> None:
        if hook is not None:
            self.spawn(hook(usage), "settle-usage")

    async def _settle(self, hook: UsageHook | None, usage: UsageInfo) -> None:
        if hook is not None:
            await hook(usage)

    def spawn(self, work: Awaitable[None], name: str) -> None:
        """Run ``work`` in the background (failures logged); :meth:`drain` waits for it."""

        async def run() -> None:
            try:
                await work
            except Exception as exc:  # noqa: BLE001 - best effort; logged, never raised
                log.warning("background_failed", task=name, error=repr(exc))

        task = asyncio.create_task(run(), name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self) -> None:
        """Wait for pending cancels and usage updates (on shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


async def _nothing() -> None:
    return None


class _Numbered:
    """Numbers a stream's SSE events in its ``id`` field, dropping those up to ``starting_after``
    (those a resuming client already has): returns the event to send, or ``""``."""

    def __init__(self, starting_after: int) -> None:
        self._next = 0
        self._after = starting_after

    def __call__(self, event: str) -> str:
        n, self._next = self._next, self._next + 1
        return f"id: {n}\n{event}" if n > self._after else ""


def _error_event(exc: ChatError) -> str:
    info = exc.info
    error = from_chat_error(info).body.error
    body = ErrorResponse(
        error=ErrorBody(message=info.message, type=error.type, param=info.param, code=info.code)
    )
    return f"data: {body.model_dump_json()}\n\n"


async def _close_quietly(iterator: AsyncIterator[TokenChunk]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except RuntimeError:
        pass
