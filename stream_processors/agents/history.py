"""Conversation history on the bus, as four Faust agents feeding one repository.

``chat.requests``    ──► the user's side of each turn (and the conversation, on its first turn)
``chat.completions`` ──► the answer, usage, timings; then the turn goes into the context cache
``chat.moderation``  ──► the verdicts of each turn
``chat.feedback``    ──► users' ratings of answers and appeals of refusals, on their turn

Invalid events (and events naming another user's conversation) go to ``chat.dlq`` and the agent
continues. MongoDB being down is retriable: the agent retries the same event with backoff (its
offset is not committed meanwhile), so nothing is lost; every write is an idempotent upsert, so
a redelivery after a crash or restart duplicates nothing. Blocking pymongo calls run in a thread
pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import faust
from mode import Service

from chatbus.errors import InvalidEvent, ServiceUnavailable, require_started
from chatbus.history import ContextStore, ConversationOwnedByOther, HistoryRepository
from chatbus.kafka import EventPublisher, decode_event
from chatbus.kafka.backoff import Backoff, retrying
from chatbus.kafka.dlq import send_to_dlq
from chatbus.logging import get_logger
from chatbus.settings import Settings
from schemas.events import Appeal, ChatRequest, Completion, ModerationVerdict, Rating
from schemas.topics import TopicName

log = get_logger(__name__)

CONSUMER_NAME = "history"
T = TypeVar("T")


class HistoryRuntime(Service):  # type: ignore[misc]
    """What the history agents share: repository, context cache, DLQ publisher, thread pool."""

    retry_backoff = Backoff(initial_s=0.2, max_s=5.0)  # while MongoDB is unavailable

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        # ONE writer thread: FerretDB v1 applies an update as read-modify-write of the whole
        # document, so two concurrent updates of one turn (its request, its answer, its verdict
        # arrive on three topics at once) lose one of them. Serialized, none is lost; the
        # turns of one conversation reach one processor instance (Faust co-partitions the
        # three topics, all keyed by conversation_id).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history")
        self._publisher: EventPublisher | None = None
        self._repository: HistoryRepository | None = None
        self._context: ContextStore | None = None
        self.recorded = 0

    @property
    def repository(self) -> HistoryRepository:
        return require_started(self._repository, "history runtime")

    @property
    def context(self) -> ContextStore:
        return require_started(self._context, "history runtime")

    async def on_start(self) -> None:
        self._publisher = EventPublisher(
            self.settings, client_id=f"{self.settings.kafka.client_id}-history"
        )
        await self._publisher.start()
        self._repository = HistoryRepository(self.settings)
        self._context = ContextStore(self.settings, self._repository)
        await self._retrying("create indexes", self._repository.ensure_indexes)

    async def on_stop(self) -> None:
        if self._context is not None:
            await self._context.close()
        if self._publisher is not None:
            await self._publisher.stop()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._repository is not None:
            self._repository.close()
        log.info("history_stopped")

    async def _retrying(self, what: str, call: Callable[..., T], *args: Any) -> T:
        """Run a repository call in the pool; retry the same event (its offset uncommitted)
        while MongoDB is unavailable."""
        loop = asyncio.get_running_loop()
        return await retrying(
            lambda: loop.run_in_executor(self._executor, call, *args),
            retry_on=(ServiceUnavailable,),
            backoff=self.retry_backoff,
            what=what,
        )

    async def _dead_letter(self, message: Any, reason: str) -> None:
        assert self._publisher is not None
        await send_to_dlq(self._publisher, message, error=reason, consumer=CONSUMER_NAME)

    async def _decode(self, message: Any, expected: str | tuple[str, ...]) -> Any | None:
        types = (expected,) if isinstance(expected, str) else expected
        try:
            return decode_event(message.topic, message.value, types)
        except InvalidEvent as exc:
            await self._dead_letter(message, exc.reason)
            return None

    async def on_request(self, message: Any) -> None:
        request = await self._decode(message, "chat.request")
        if request is None:
            return
        assert isinstance(request, ChatRequest)
        try:
            await self._retrying("record a request", self.repository.record_request, request)
        except ConversationOwnedByOther as exc:  # not recorded
            await self._dead_letter(message, str(exc))
            return
        self.recorded += 1
        log.debug(
            "turn_requested", request_id=request.request_id, conversation_id=request.conversation_id
        )

    async def on_completion(self, message: Any) -> None:
        completion = await self._decode(message, "chat.completion")
        if completion is None:
            return
        assert isinstance(completion, Completion)
        turn = await self._retrying(
            "record a completion", self.repository.record_completion, completion
        )
        self.recorded += 1
        if turn.messages:  # the request is recorded: the turn is whole
            await self.context.append(completion.conversation_id, turn)
        log.debug(
            "turn_completed",
            request_id=completion.request_id,
            conversation_id=completion.conversation_id,
            finish_reason=completion.finish_reason,
        )

    async def on_verdict(self, message: Any) -> None:
        verdict = await self._decode(message, "chat.moderation")
        if verdict is None:
            return
        assert isinstance(verdict, ModerationVerdict)
        await self._retrying("record a verdict", self.repository.record_verdict, verdict)
        self.recorded += 1

    async def on_feedback(self, message: Any) -> None:
        """A rating of an answer or an appeal of a refusal, on its turn."""
        event = await self._decode(message, ("chat.rating", "chat.appeal"))
        if isinstance(event, Rating):
            await self._retrying("record a rating", self.repository.record_rating, event)
            log.info("rating_recorded", request_id=event.request_id, rating=event.rating)
        elif isinstance(event, Appeal):
            await self._retrying("record an appeal", self.repository.record_appeal, event)
            log.info("appeal_recorded", request_id=event.request_id, stage=event.stage)
        else:
            return
        self.recorded += 1

    async def handle(self, message: Any, handler: Callable[[Any], Awaitable[None]]) -> None:
        """Run one handler; an unexpected error dead-letters the message instead of stopping
        the agent (what was not retried is on the DLQ, with the reason, to replay)."""
        try:
            await handler(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one bad event must not stop the agent
            log.exception("history_event_failed", topic=message.topic, offset=message.offset)
            await self._dead_letter(message, f"{exc.__class__.__name__}: {exc}")


def register(app: faust.App, settings: Settings, runtime: HistoryRuntime) -> None:
    """Declare the history agents on ``app``."""

    def raw_topic(name: TopicName) -> Any:
        return app.topic(settings.topic(name), key_serializer="raw", value_serializer="raw")

    @app.agent(raw_topic(TopicName.REQUESTS), name="history-requests")
    async def requests(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await runtime.handle(event.message, runtime.on_request)

    @app.agent(raw_topic(TopicName.COMPLETIONS), name="history-completions")
    async def completions(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await runtime.handle(event.message, runtime.on_completion)

    @app.agent(raw_topic(TopicName.MODERATION), name="history-verdicts")
    async def verdicts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await runtime.handle(event.message, runtime.on_verdict)

    @app.agent(raw_topic(TopicName.FEEDBACK), name="history-appeals")
    async def feedback(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            await runtime.handle(event.message, runtime.on_feedback)
