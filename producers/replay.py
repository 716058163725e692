"""Read one answer's chunks again from its reply partition: what resuming a stream is made of.

Every chunk of an answer is on ``chat.tokens``, in the partition its request named, from the
offset of its first chunk on. :func:`replay_chunks` reads that partition from there with a
consumer of its own (no group, nothing committed), keeps the chunks of one request, and yields
them in ``seq`` order, each once, up to the last one (an error chunk raises
:class:`ChatError`): the chunks already written and then, while the answer is still being
generated, the live ones. Any process that knows (partition, offset)
can do it: a second gateway, or the same one after a restart.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka.structs import TopicPartition

from chatbus.errors import ChatbusError, InvalidEvent
from chatbus.kafka import decode_event, make_consumer
from chatbus.kafka.startup import start_client
from chatbus.logging import get_logger
from chatbus.settings import Settings
from schemas.events import ErrorInfo, TokenChunk
from schemas.topics import TopicName

log = get_logger(__name__)


class ChatError(ChatbusError):
    """The service ended a request with an error; ``info`` says which and why."""

    def __init__(self, info: ErrorInfo) -> None:
        where = f" (parameter {info.param!r})" if info.param else ""
        super().__init__(f"{info.code}{where}: {info.message}")
        self.info = info


class ChatTimeout(ChatbusError):
    """No chunk arrived in time."""

    retriable = True


@dataclass(frozen=True)
class ReplyPosition:
    """Where an answer's chunks begin: its reply partition, and the offset of its first chunk."""

    partition: int
    offset: int


@dataclass
class SeqOrder:
    """Puts one answer's chunks in ``seq`` order and drops the ones seen (the bus may redeliver,
    and a request re-run by another worker starts again from ``seq`` 0)."""

    next_seq: int = 0
    early: dict[int, TokenChunk] = field(default_factory=dict)

    def add(self, chunk: TokenChunk) -> list[TokenChunk]:
        """The chunks ``chunk`` makes ready, in order (none when it is a duplicate or early)."""
        if chunk.seq < self.next_seq or chunk.seq in self.early:
            return []
        self.early[chunk.seq] = chunk
        ready = []
        while self.next_seq in self.early:
            ready.append(self.early.pop(self.next_seq))
            self.next_seq += 1
        return ready


async def replay_chunks(
    settings: Settings,
    position: ReplyPosition,
    request_id: str,
    *,
    idle_timeout_s: float | None = None,
) -> AsyncIterator[TokenChunk]:
    """The chunks of ``request_id`` from ``position`` on, in order, up to its last chunk.

    Raises :class:`ChatTimeout` when no chunk of it arrives for ``idle_timeout_s`` (default: the
    gateway's request timeout): its worker and every other one gone, or the chunks past the
    topic's retention.
    """
    wait = idle_timeout_s or settings.gateway.request_timeout_s
    consumer = make_consumer(settings, group_id=None, client_id=f"replay-{request_id}")
    await start_client(settings, consumer)
    try:
        tp = TopicPartition(settings.topic(TopicName.TOKENS), position.partition)
        consumer.assign([tp])
        consumer.seek(tp, position.offset)
        order = SeqOrder()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise ChatTimeout(
                    f"no chunk of {request_id} for {wait:.0f} s on partition "
                    f"{position.partition} from offset {position.offset}: its worker is gone, "
                    "or the chunks are past the topic's retention"
                )
            batch = await consumer.getmany(tp, timeout_ms=int(min(left, 1.0) * 1000))
            for record in batch.get(tp, []):
                chunk = _chunk_of(record.value, request_id)
                if chunk is None:
                    continue
                deadline = loop.time() + wait
                for ready in order.add(chunk):
                    if ready.error is not None:
                        raise ChatError(ready.error)
                    yield ready
                    if ready.is_last:
                        return
    finally:
        await consumer.stop()


def _chunk_of(value: bytes | None, request_id: str) -> TokenChunk | None:
    # cheap test first: most records of a partition belong to other requests
    if value is None or request_id.encode() not in value:
        return None
    try:
        event = decode_event(TopicName.TOKENS.value, value, ("chat.token",))
    except InvalidEvent as exc:
        log.warning("invalid_replayed_chunk", request_id=request_id, error=str(exc))
        return None
    if not isinstance(event, TokenChunk) or event.request_id != request_id:
        return None
    return event
