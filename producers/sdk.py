"""``ChatClient``: chat over Kafka from any Python service.

The client owns one partition of ``chat.tokens`` (its reply partition), publishes requests that
name it, and yields each answer's chunks in ``seq`` order, exactly once, even when the bus
redelivers. ``chatbus chat`` is built on it.

Every request carries a trace (``traceparent`` and per-hop stamps in its Kafka headers); the first
chunk brings the stamps of every hop back, and :meth:`ChatClient.trace` gives the request's time
to first token split into stages (docs/tracing.md).
"""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from chatbus.errors import InvalidEvent
from chatbus.kafka import (
    EventPublisher,
    decode_event,
    make_consumer,
)
from chatbus.kafka.startup import start_client
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.tracing import STAMPS_HEADER, Hop, RequestTrace, header_value, now_ms
from producers.replay import ChatError, ChatTimeout, ReplyPosition, SeqOrder
from schemas.events import (
    Appeal,
    CancelRequest,
    ChatMessage,
    ChatRequest,
    Rating,
    RatingCategory,
    ReplyTo,
    SamplingParams,
    TokenChunk,
)
from schemas.topics import TopicName

log = get_logger(__name__)

_KEPT_TRACES = 1024  # traces of finished requests kept for trace()


@dataclass
class _Stream:
    queue: asyncio.Queue[TokenChunk] = field(default_factory=asyncio.Queue)
    order: SeqOrder = field(default_factory=SeqOrder)
    trace: RequestTrace | None = None
    first_offset: int | None = None  # where its chunks begin on the reply partition


PartitionChooser = Callable[[set[int]], Awaitable[int]]


class ChatClient:
    """Publishes chat requests and streams their answers back from a reply partition.

    The reply partition is ``reply_partition`` when given; else ``choose_partition`` picks one of
    the topic's partitions (the gateway leases one in Redis); else a random one.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        reply_partition: int | None = None,
        client_id: str = "chatbus-client",
        choose_partition: PartitionChooser | None = None,
    ) -> None:
        self._settings = settings
        self._reply_partition = reply_partition
        self._choose_partition = choose_partition
        self._client_id = client_id
        self._publisher = EventPublisher(settings, client_id=client_id)
        self._consumer: AIOKafkaConsumer | None = None
        self._streams: dict[str, _Stream] = {}
        self._reader: asyncio.Task[None] | None = None
        self._traces: OrderedDict[str, RequestTrace] = OrderedDict()
        self._started = False

    @property
    def reply_to(self) -> ReplyTo:
        assert self._reply_partition is not None, "start() the client first"
        return ReplyTo(topic=TopicName.TOKENS.value, partition=self._reply_partition)

    async def start(self) -> None:
        if self._started:
            return
        await self._publisher.start()
        topic = self._settings.topic(TopicName.TOKENS)
        consumer = make_consumer(
            self._settings,
            group_id=None,
            client_id=f"{self._client_id}-replies",
            auto_offset_reset="latest",
        )
        await start_client(self._settings, consumer, self._publisher)
        try:
            partitions = await self._publisher.partitions_for(TopicName.TOKENS)
            if self._reply_partition is None and self._choose_partition is not None:
                self._reply_partition = await self._choose_partition(partitions)
        except BaseException:
            await consumer.stop()
            await self._publisher.stop()
            raise
        if self._reply_partition is None:
            self._reply_partition = random.choice(sorted(partitions))  # noqa: S311
        tp = TopicPartition(topic, self._reply_partition)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)  # resolve now: nothing published after start() is missed
        self._consumer = consumer
        self._reader = asyncio.create_task(self._read_replies(), name="chat-replies")
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
        await self._publisher.stop()

    async def __aenter__(self) -> ChatClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def send(
        self,
        messages: Sequence[ChatMessage | dict[str, str]],
        *,
        model: str,
        sampling: SamplingParams | None = None,
        conversation_id: str | None = None,
        user_id: str = "anonymous",
        use_history: bool = False,
        trace: RequestTrace | None = None,
        key_id: str = "",
    ) -> ChatRequest:
        """Publish a request (registering its stream first, so no chunk can be missed).

        ``use_history`` continues ``conversation_id``: the worker prepends its stored context,
        so ``messages`` carry only the new message(s). ``trace`` is the request's trace when the
        caller began it (the gateway does, when the HTTP request arrived); else it begins now.
        """
        if trace is None:
            trace = RequestTrace.begin()
        fields: dict[str, object] = {}
        if conversation_id:
            fields["conversation_id"] = conversation_id
        request = ChatRequest(
            model=model,
            user_id=user_id,
            key_id=key_id,
            reply_to=self.reply_to,
            messages=[
                m if isinstance(m, ChatMessage) else ChatMessage.model_validate(m) for m in messages
            ],
            sampling=sampling or SamplingParams(),
            use_history=use_history,
            **fields,
        )  # type: ignore[arg-type]
        self.watch(request.request_id)
        stream = self._streams[request.request_id]
        stream.trace = trace
        stream.first_offset = await self._reply_position()  # its chunks can only come later
        self._keep_trace(request.request_id, trace)
        trace.stamp(Hop.PUBLISHED)
        await self._publisher.publish(TopicName.REQUESTS, request, headers=trace.headers())
        return request

    def watch(self, request_id: str) -> None:
        """Collect the chunks of a request published by someone else to our reply partition."""
        self._streams.setdefault(request_id, _Stream())

    async def _reply_position(self) -> int | None:
        """Where our reader is on the reply partition: no chunk of a request sent from now on
        can be before it."""
        if self._consumer is None or self._reply_partition is None:
            return None
        tp = TopicPartition(self._settings.topic(TopicName.TOKENS), self._reply_partition)
        return await self._consumer.position(tp)

    def position(self, request_id: str) -> ReplyPosition | None:
        """Where the chunks of ``request_id`` (one of ours being read now) begin on our reply
        partition, at the latest: what :func:`~producers.replay.replay_chunks` needs to read them
        again, from any process."""
        stream = self._streams.get(request_id)
        if stream is None or stream.first_offset is None or self._reply_partition is None:
            return None
        return ReplyPosition(self._reply_partition, stream.first_offset)

    def trace(self, request_id: str) -> RequestTrace | None:
        """The trace of one of our recent requests: its stamps so far, and once its first chunk
        was yielded, ``trace(...).breakdown()`` (time to first token by stage)."""
        return self._traces.get(request_id)

    def _keep_trace(self, request_id: str, trace: RequestTrace) -> None:
        self._traces[request_id] = trace
        self._traces.move_to_end(request_id)
        while len(self._traces) > _KEPT_TRACES:
            self._traces.popitem(last=False)

    async def chunks(
        self, request_id: str, *, timeout_s: float | None = None
    ) -> AsyncIterator[TokenChunk]:
        """The chunks of ``request_id`` in order, each once; raises :class:`ChatError` on error."""
        stream = self._streams[request_id]
        wait = timeout_s or self._settings.gateway.request_timeout_s
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(stream.queue.get(), wait)
                except TimeoutError:
                    raise ChatTimeout(
                        f"no answer to {request_id} for {wait:.0f} s; is an inference worker "
                        "running for this model (`make run` starts one)?"
                    ) from None
                if chunk.error is not None:
                    raise ChatError(chunk.error)
                if stream.trace is not None and Hop.DELIVERED not in stream.trace.stamps:
                    stream.trace.stamp(Hop.DELIVERED)  # a gateway restamps its first byte
                yield chunk
                if chunk.is_last:
                    return
        finally:
            self._streams.pop(request_id, None)

    async def stream(
        self,
        messages: Sequence[ChatMessage | dict[str, str]],
        *,
        model: str,
        sampling: SamplingParams | None = None,
        conversation_id: str | None = None,
    ) -> AsyncIterator[TokenChunk]:
        """Send a request and yield its chunks."""
        request = await self.send(
            messages, model=model, sampling=sampling, conversation_id=conversation_id
        )
        async for chunk in self.chunks(request.request_id):
            yield chunk

    async def cancel(self, request_id: str, reason: str = "client_cancelled") -> None:
        """Ask whichever worker holds ``request_id`` to stop it."""
        await self._publisher.publish(
            TopicName.CONTROL, CancelRequest(request_id=request_id, reason=reason)
        )

    async def feedback(
        self,
        request: ChatRequest,
        rating: Literal["up", "down"],
        *,
        category: RatingCategory | None = None,
        comment: str = "",
    ) -> Rating:
        """Rate the answer to ``request`` (what :meth:`send` returned) up or down, on
        ``chat.feedback``: stored with the turn (a second rating replaces the first), archived,
        reported by model, and up-rated answers feed the fine-tuning set."""
        event = Rating(
            request_id=request.request_id,
            conversation_id=request.conversation_id,
            user_id=request.user_id,
            model=request.model,
            rating=rating,
            category=category,
            comment=comment,
        )
        await self.publish_feedback(event)
        return event

    async def appeal(self, appeal: Appeal) -> None:
        """Tell moderation a refusal was wrong (``chat.feedback``): stored with the turn and
        counted in the analytics report's moderation section."""
        await self.publish_feedback(appeal)

    async def publish_feedback(self, event: Rating | Appeal) -> None:
        """Publish a user's judgement of an answer, keyed by its conversation."""
        await self._publisher.publish(TopicName.FEEDBACK, event)

    async def _read_replies(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        async for record in consumer:
            arrived = now_ms()
            try:
                event = decode_event(record.topic, record.value, ("chat.token",))
            except InvalidEvent as exc:
                log.warning("invalid_reply", error=str(exc), offset=record.offset)
                continue
            assert isinstance(event, TokenChunk)
            stream = self._streams.get(event.request_id)
            if stream is None:
                continue  # not ours
            ready = stream.order.add(event)
            if not ready and event.seq not in stream.order.early:
                continue  # a duplicate
            self._on_traced_chunk(event.request_id, stream, record.headers, arrived)
            if stream.first_offset is None:  # the lowest: its chunks are in order on it
                stream.first_offset = record.offset
            for chunk in ready:
                stream.queue.put_nowait(chunk)

    def _on_traced_chunk(
        self,
        request_id: str,
        stream: _Stream,
        headers: Sequence[tuple[str, bytes]],
        arrived_ms: float,
    ) -> None:
        """The first chunk that carries the worker's stamps completes the request's trace."""
        trace = stream.trace
        if (trace is not None and Hop.CLIENT_IN in trace.stamps) or header_value(
            headers, STAMPS_HEADER
        ) is None:
            return
        if trace is None:  # a watched request: its trace is what the chunk carries
            trace = stream.trace = RequestTrace.from_headers(headers)
            if trace is None:
                return
            trace.replied_by = trace.parent
            self._keep_trace(request_id, trace)
        else:
            trace.replied_by = trace.absorb(headers)
        trace.stamp(Hop.CLIENT_IN, arrived_ms)
