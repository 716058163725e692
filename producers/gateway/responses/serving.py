"""The Responses API served as a view of a chat completion on the bus.

A response *is* a chat request: :class:`ResponsesService` checks and translates the request
(:mod:`.translate`), the route hands it to the same :class:`ChatCompletionService` submit as
chat completions (same auth, limits, conversation, trace), and this service renders the answer
as a response object or as OpenAI's streamed events (:mod:`.events`), and keeps it in a
:class:`ResponseStore`. A follow-up (``previous_response_id``) continues the stored response's
conversation, so its earlier turns come from the history store, never from the client.

Outcomes: ``stop`` → ``completed``; ``length`` → ``incomplete`` (``max_output_tokens``);
``content_filter`` → ``incomplete`` (``content_filter``); ``cancelled`` (or a client gone before
the end) → ``cancelled``; a worker error after the first chunk → ``failed``. A refusal before it
(unknown model, prompt too long, blocked by moderation) is an HTTP error, as for chat.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from chatbus.errors import ChatbusError
from chatbus.logging import get_logger
from chatbus.tracing import Hop
from producers.gateway import metrics
from producers.gateway.errors import APIError, invalid
from producers.gateway.responses.events import Encode, ResponseEvents, sse
from producers.gateway.responses.protocol import (
    ConversationRef,
    IncompleteDetails,
    InputItem,
    InputItemList,
    OutputMessage,
    OutputText,
    ResponseCreateRequest,
    ResponseDeleted,
    ResponseError,
    ResponseObject,
    ResponseStatus,
    ResponseUsage,
    message_id,
    request_id_of,
    response_id,
)
from producers.gateway.responses.store import ResponseStore, StoredResponse
from producers.gateway.responses.translate import (
    TranslatedInput,
    chat_request,
    check_supported,
    rename_param,
    translate_input,
)
from producers.gateway.resume import StreamOrigin
from producers.gateway.serving import Answer, ChatCompletionService, ValidRequest
from producers.gateway.trace_report import report_trace
from producers.sdk import ChatError, ChatTimeout
from schemas.events import ErrorInfo, FinishReason

log = get_logger(__name__)

_OUTCOME: dict[FinishReason, tuple[ResponseStatus, IncompleteDetails | None]] = {
    "stop": ("completed", None),
    "length": ("incomplete", IncompleteDetails(reason="max_output_tokens")),
    "content_filter": ("incomplete", IncompleteDetails(reason="content_filter")),
    "cancelled": ("cancelled", None),
}
_TERMINAL: frozenset[ResponseStatus] = frozenset({"completed", "incomplete", "cancelled", "failed"})


def not_found(response_id: str, param: str | None = None) -> APIError:
    return APIError(
        404,
        f"No response found with id '{response_id}'.",
        param=param,
        code="response_not_found",
    )


@dataclass(frozen=True)
class PreparedResponse:
    """A request checked and translated: the chat request it is served as, and its input."""

    body: ResponseCreateRequest
    valid: ValidRequest
    input: TranslatedInput


@dataclass
class ResponseRun:
    """A response whose request is on the bus: its text so far and, once ended, its object.

    ``base`` is the response as it starts (``in_progress``, no output); every later state is
    ``base`` with an outcome (:meth:`snapshot`). A resumed stream builds its run from the stored
    response, so its events are the original's.
    """

    base: ResponseObject
    answer: Answer
    user_id: str
    conversation_id: str
    input_items: list[InputItem]
    store: bool
    text: list[str] = field(default_factory=list)
    final: ResponseObject | None = None
    started: bool = False  # its chunks are being read
    saving: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.base.id

    def snapshot(
        self,
        status: ResponseStatus,
        *,
        incomplete: IncompleteDetails | None = None,
        error: ErrorInfo | None = None,
        ended_at: int | None = None,
    ) -> ResponseObject:
        output = []
        if status not in ("queued", "in_progress", "failed"):
            output.append(
                OutputMessage(
                    id=message_id(self.answer.request_id),
                    status="completed" if status == "completed" else "incomplete",
                    content=[OutputText(text="".join(self.text))],
                )
            )
        in_flight = status in ("queued", "in_progress")
        return self.base.model_copy(
            update={
                "status": status,
                "completed_at": ended_at if status == "completed" else None,
                "error": None if error is None else _failure(error),
                "incomplete_details": incomplete,
                "output": output,
                "usage": None if in_flight else ResponseUsage.of(self.answer.usage()),
            }
        )

    def stored(self, response: ResponseObject) -> StoredResponse:
        return StoredResponse(
            response=response,
            input_items=self.input_items,
            user_id=self.user_id,
            request_id=self.answer.request_id,
            conversation_id=self.conversation_id,
        )


BackgroundSubmit = Callable[
    [ValidRequest, str | None, Callable[[str], None]], Coroutine[Any, Any, Answer]
]


def initial_response(
    prepared: PreparedResponse, request_id: str, created: int, conversation_id: str | None
) -> ResponseObject:
    """The response to ``prepared`` as it starts: queued, with no output yet."""
    body = prepared.body
    return ResponseObject(
        id=response_id(request_id),
        created_at=created,
        status="queued",
        instructions=body.instructions,
        max_output_tokens=body.max_output_tokens,
        model=body.model,
        previous_response_id=body.previous_response_id,
        conversation=None if conversation_id is None else ConversationRef(id=conversation_id),
        background=bool(body.background),
        store=body.store,
        temperature=prepared.valid.sampling.temperature,
        top_p=prepared.valid.sampling.top_p,
        tool_choice=body.tool_choice if isinstance(body.tool_choice, str) else "none",
        prompt_cache_key=body.prompt_cache_key,
        prompt_cache_retention=body.prompt_cache_retention,
        safety_identifier=body.safety_identifier,
        user=body.user,
        metadata=body.metadata or {},
    )


def input_items_of(prepared: PreparedResponse, request_id: str) -> list[InputItem]:
    return prepared.input.items(f"msg_{request_id.removeprefix('req-')}_in")


async def _stored_events(
    response: ResponseObject, encode: Encode, starting_after: int
) -> AsyncGenerator[str, None]:
    """The events of an ended response rebuilt from its stored object (its text in one delta)."""
    item = message_id(request_id_of(response.id) or "")
    events = ResponseEvents(item, encode, starting_after)
    opening = response.model_copy(
        update={
            "status": "in_progress",
            "output": [],
            "usage": None,
            "completed_at": None,
            "error": None,
            "incomplete_details": None,
        }
    )
    text = "".join(part.text for message in response.output for part in message.content)
    pieces = [*events.opening(opening), events.delta(text) if text else ""]
    for event in [*pieces, *events.closing(response)]:
        if event:
            yield event


def _failure(info: ErrorInfo) -> ResponseError:
    # OpenAI's failure codes are a closed list; the worker's own code goes in the message
    return ResponseError(code="server_error", message=f"{info.message} ({info.code})")


class ResponsesService:
    """Serves ``/v1/responses`` on a :class:`ChatCompletionService` and a :class:`ResponseStore`."""

    def __init__(
        self,
        chat: ChatCompletionService,
        store: ResponseStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._chat = chat
        self._store = store
        self._clock = clock
        self._adopted: set[str] = set()  # responses this gateway took over, while it follows them

    @property
    def chat(self) -> ChatCompletionService:
        return self._chat

    # --- before the bus ------------------------------------------------------------------------
    def prepare(self, body: ResponseCreateRequest) -> PreparedResponse:
        """Check ``body`` and translate it; raises :class:`APIError` naming the parameter."""
        check_supported(body)
        translated = translate_input(body)
        try:
            valid = self._chat.validate(chat_request(body, translated.messages))
        except APIError as exc:
            raise rename_param(exc, body) from None
        return PreparedResponse(body, valid, translated)

    async def conversation_of(self, user_id: str, body: ResponseCreateRequest) -> str | None:
        """The conversation the response continues: the previous response's, or the one named."""
        if body.previous_response_id is None:
            return body.conversation_id
        stored = await self._find(user_id, body.previous_response_id, "previous_response_id")
        return stored.conversation_id

    # --- on the bus ----------------------------------------------------------------------------
    async def open(
        self,
        body: ResponseCreateRequest,
        *,
        user_id: str,
        submit: Callable[[ValidRequest, str | None], Awaitable[Answer]],
    ) -> ResponseRun:
        """Check ``body``, put it on the bus through ``submit`` (the caller's admission: limits,
        conversation, trace) and begin its response; what ``POST`` and the WebSocket both do."""
        prepared = self.prepare(body)
        answer = await submit(prepared.valid, await self.conversation_of(user_id, body))
        return self.begin(
            prepared, answer, user_id=user_id, conversation_id=answer.first.conversation_id
        )

    def begin(
        self, prepared: PreparedResponse, answer: Answer, *, user_id: str, conversation_id: str
    ) -> ResponseRun:
        """The response of ``answer``; stored as ``in_progress`` in the background."""
        base = initial_response(prepared, answer.request_id, answer.created, conversation_id)
        run = ResponseRun(
            base.model_copy(update={"status": "in_progress"}),
            answer,
            user_id,
            conversation_id,
            input_items_of(prepared, answer.request_id),
            prepared.body.store,
        )
        if run.store:
            saving = self._store.save(run.stored(run.snapshot("in_progress")))
            run.saving = asyncio.create_task(saving, name=f"store-{run.id}")
        return run

    async def open_background(
        self,
        body: ResponseCreateRequest,
        *,
        user_id: str,
        submit: Callable[
            [ValidRequest, str | None, Callable[[str], None]], Coroutine[Any, Any, Answer]
        ],
    ) -> ResponseObject:
        """``background: true``: put the request on the bus and return it ``queued`` at once;
        this gateway follows the answer with no client attached and stores it as it goes, and
        the client polls ``GET /v1/responses/{id}`` or streams it with ``?stream=true``."""
        prepared = self.prepare(body)
        if not body.store:
            raise invalid(
                "A background response must be stored ('store': true): it is read back later.",
                "store",
                "background_requires_store",
            )
        conversation_id = await self.conversation_of(user_id, body)
        published: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def sent(request_id: str) -> None:
            if not published.done():
                published.set_result(request_id)

        task = asyncio.create_task(
            submit(prepared.valid, conversation_id, sent), name="background-response"
        )
        waiting: list[asyncio.Future[Any]] = [published, task]
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not published.done():  # refused before it reached the bus: an HTTP error
            published.cancel()
            task.result()
            raise AssertionError("submit returned without publishing")
        request_id = published.result()
        queued = initial_response(prepared, request_id, int(self._clock()), conversation_id)
        stored = StoredResponse(
            queued,
            input_items_of(prepared, request_id),
            user_id,
            request_id,
            conversation_id or "",
        )
        await self._store.save(stored)
        self._chat.spawn(self._run_background(prepared, task, stored), f"background-{queued.id}")
        return queued

    async def _run_background(
        self, prepared: PreparedResponse, submitted: asyncio.Task[Answer], queued: StoredResponse
    ) -> None:
        """Follow a background response to its end, storing it (failed when refused)."""
        try:
            answer = await submitted
        except (APIError, ChatbusError) as exc:
            message = exc.body.error.message if isinstance(exc, APIError) else str(exc)
            failed = queued.response.model_copy(
                update={
                    "status": "failed",
                    "error": ResponseError(code="server_error", message=message),
                }
            )
            await self._store.save(replace(queued, response=failed))
            return
        run = self.begin(
            prepared,
            answer,
            user_id=queued.user_id,
            conversation_id=answer.first.conversation_id,
        )
        async with aclosing(self._generate(run, quiet=True)) as pieces:
            async for _ in pieces:
                pass

    async def complete(self, run: ResponseRun) -> ResponseObject:
        """The whole response (``stream: false``), stored before it is returned."""
        if run.answer.trace is not None:
            report_trace(run.answer.trace, request_id=run.answer.request_id, stream=False)
        async with aclosing(self._generate(run, quiet=True)) as pieces:  # a store outage
            async for _ in pieces:  # costs the stored copy, not the answer
                pass
        assert run.final is not None
        return run.final

    async def stream(
        self, run: ResponseRun, encode: Encode = sse, *, starting_after: int = -1
    ) -> AsyncGenerator[str, None]:
        """The response as OpenAI's events (SSE unless ``encode`` says otherwise); stored before
        its terminal event. ``starting_after``: leave out the events up to that sequence number
        (a resumed stream: the client has them)."""
        answer = run.answer
        events = ResponseEvents(message_id(answer.request_id), encode, starting_after)
        metrics.STREAMS.inc()
        try:
            for n, event in enumerate(events.opening(run.snapshot("in_progress"))):
                if event:
                    yield event
                if n == 0 and answer.trace is not None:  # the first event is handed over
                    answer.trace.stamp(Hop.DELIVERED)
                    report_trace(answer.trace, request_id=answer.request_id, stream=True)
            async with aclosing(self._generate(run, quiet=True)) as pieces:
                async for text in pieces:
                    if delta := events.delta(text):
                        yield delta
            assert run.final is not None
            for event in events.closing(run.final):
                if event:
                    yield event
        finally:
            metrics.STREAMS.dec()
            if run.final is None:
                metrics.DISCONNECTS.inc()
                log.info("client_disconnected", request_id=answer.request_id)
                if not run.started:  # gone before the first delta: nobody read the chunks
                    await self._chat.release(
                        answer, ended=False, on_cancelled=self._on_cancelled(run)
                    )

    async def _generate(
        self, run: ResponseRun, *, quiet: bool = False
    ) -> AsyncGenerator[str, None]:
        """The answer's text pieces; then ``run.final`` is set and stored. Abandoned before the
        end (the client went away): the request is cancelled and the response stored as such.
        ``quiet``: a store that fails at the end is logged (the stream has begun), not raised."""
        finish: FinishReason | None = None
        error: ErrorInfo | None = None
        run.started = True
        follow = self._chat.follow(run.answer, on_cancelled=self._on_cancelled(run))
        try:
            async with aclosing(follow) as chunks:
                async for chunk in chunks:
                    finish = chunk.finish_reason or finish
                    if chunk.text:
                        run.text.append(chunk.text)
                        yield chunk.text
        except ChatError as exc:
            error = exc.info
        except ChatTimeout as exc:
            error = ErrorInfo(code="timeout", message=str(exc))
        run.final = self._ended(run, finish, error)
        await self._record(run, run.final, quiet=quiet)

    def _on_cancelled(self, run: ResponseRun) -> Callable[[], Awaitable[None]]:
        """What to do once a response its client left is cancelled on the bus: store it so."""

        async def record() -> None:
            await self._record(run, self._ended(run, "cancelled", None))

        return record

    def _ended(
        self, run: ResponseRun, finish: FinishReason | None, error: ErrorInfo | None
    ) -> ResponseObject:
        ended_at = int(self._clock())
        if error is not None or finish is None or finish == "error":
            info = error or ErrorInfo(code="server_error", message="The answer ended abruptly.")
            return run.snapshot("failed", error=info, ended_at=ended_at)
        status, incomplete = _OUTCOME[finish]
        return run.snapshot(status, incomplete=incomplete, ended_at=ended_at)

    async def _record(
        self, run: ResponseRun, response: ResponseObject, quiet: bool = False
    ) -> None:
        if not run.store:
            return
        if run.saving is not None:  # the in-progress record lands first
            await asyncio.gather(run.saving, return_exceptions=True)
        try:
            await self._store.save(run.stored(response))
        except ChatbusError as exc:
            if not quiet:
                raise
            log.warning("response_not_stored", response_id=run.id, error=str(exc))

    # --- resumed streams -----------------------------------------------------------------------
    async def resume(
        self, user_id: str, rid: str, *, starting_after: int = -1, encode: Encode = sse
    ) -> AsyncGenerator[str, None]:
        """The stream of the user's response ``rid`` again: every event after sequence number
        ``starting_after``, then the live ones, on any gateway. Its chunks are read again from
        the bus; when the bus no longer has them (past the resume TTL), an ended response is
        rebuilt from the store (its text as one delta)."""
        stored = await self._find_soon(user_id, rid)
        origin = await self._origin_of(user_id, stored)
        if origin is None:
            stored = await self._find(user_id, rid)
            if stored.response.status not in _TERMINAL:
                raise APIError(
                    409,
                    f"Response '{rid}' is {stored.response.status} but its stream cannot be "
                    "found on the bus; retrieve it later with GET /v1/responses/{id}.",
                    code="stream_not_resumable",
                )
            return _stored_events(stored.response, encode, starting_after)
        answer = await self._chat.replay(origin)
        response = stored.response
        run = ResponseRun(
            response.model_copy(update={"status": "in_progress"}),
            answer,
            user_id,
            stored.conversation_id,
            stored.input_items,
            store=response.status not in _TERMINAL,  # whoever follows it to the end records it
        )
        return self.stream(run, encode, starting_after=starting_after)

    async def _find_soon(self, user_id: str, rid: str) -> StoredResponse:
        """The stored response; one whose stream is known but whose first record is still being
        written (a client resuming right after it began) is waited for, briefly."""
        request_id = request_id_of(rid)
        origin = None
        if request_id is not None:
            origin = await self._chat.find_origin(user_id, request_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while True:
            try:
                return await self._find(user_id, rid)
            except APIError:
                if origin is None or loop.time() > deadline:
                    raise
            await asyncio.sleep(0.05)  # polling the store, with the deadline above

    async def _origin_of(self, user_id: str, stored: StoredResponse) -> StreamOrigin | None:
        """Where the response's chunks begin; while it is queued (no first chunk yet), waits
        for one, up to the request timeout. None: not on the bus (refused, or forgotten)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._chat.request_timeout_s
        while True:
            origin = await self._chat.find_origin(user_id, stored.request_id)
            if origin is not None or stored.response.status != "queued":
                return origin
            if loop.time() > deadline:
                return None
            await asyncio.sleep(0.1)  # polling the store and Redis, with the deadline above
            stored = await self._find(user_id, stored.response.id)

    # --- stored responses ----------------------------------------------------------------------
    async def _find(self, user_id: str, rid: str, param: str | None = None) -> StoredResponse:
        stored = None
        if request_id_of(rid) is not None:
            stored = await self._store.get(user_id, rid)
        if stored is None:
            raise not_found(rid, param)
        return stored

    async def retrieve(self, user_id: str, rid: str) -> ResponseObject:
        """The stored response. One still running whose gateway is gone and that no other
        gateway follows (a background response's gateway died, say) is adopted here: followed to
        its end from the bus and stored, so polling it never hangs on a gateway that is gone. A
        stream its client left on a live gateway is that gateway's to end (its grace period)."""
        stored = await self._find(user_id, rid)
        if stored.response.status in ("queued", "in_progress"):
            await self._adopt_if_orphaned(user_id, stored)
        return stored.response

    async def _adopt_if_orphaned(self, user_id: str, stored: StoredResponse) -> None:
        rid = stored.response.id
        age_s = self._clock() - stored.response.created_at
        if rid in self._adopted or age_s < self._chat.resume_grace_s + 1:
            return
        if not await self._chat.orphaned(user_id, stored.request_id):
            return
        self._adopted.add(rid)
        log.info("orphaned_response_adopted", response_id=rid)

        async def follow_to_end() -> None:
            try:
                async with aclosing(await self.resume(user_id, rid)) as events:
                    async for _ in events:
                        pass
            finally:
                self._adopted.discard(rid)

        self._chat.spawn(follow_to_end(), f"adopt-{rid}")

    async def delete(self, user_id: str, rid: str) -> ResponseDeleted:
        if request_id_of(rid) is None or not await self._store.delete(user_id, rid):
            raise not_found(rid)
        return ResponseDeleted(id=rid)

    async def cancel(self, user_id: str, rid: str) -> ResponseObject:
        """Stop an unfinished response on whichever worker holds it (``chat.control``)."""
        stored = await self._find(user_id, rid)
        response = stored.response
        if response.status == "cancelled":
            return response
        if response.status in _TERMINAL:
            raise invalid(
                f"Response '{rid}' has already ended ({response.status}); only one in "
                "progress can be cancelled.",
                "response_id",
                "response_not_cancellable",
            )
        await self._chat.cancel(stored.request_id)
        cancelled = response.model_copy(update={"status": "cancelled"})
        await self._store.save(
            StoredResponse(
                cancelled,
                stored.input_items,
                stored.user_id,
                stored.request_id,
                stored.conversation_id,
            )
        )
        return cancelled

    async def input_items(
        self,
        user_id: str,
        rid: str,
        *,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> InputItemList:
        items = list((await self._find(user_id, rid)).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item.id for item in items]
            items = items[ids.index(after) + 1 :] if after in ids else []
        page = items[: max(1, min(limit, 100))]
        return InputItemList(
            data=page,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
            has_more=len(items) > len(page),
        )
