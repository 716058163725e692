"""Read back what a request has already streamed, so another worker can continue it.

A worker that takes over a dead peer's streams resumes many of them at once. :class:`ReplyReader`
keeps one consumer for the worker's life (a consumer started per request cost a bootstrap and a
metadata round trip each, on a machine already saturated by the takeover) and reads the reply
partitions once for every request that asked while the previous read ran.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiokafka.errors import KafkaTimeoutError
from aiokafka.structs import TopicPartition

from chatbus.errors import InvalidEvent
from chatbus.kafka import decode_event, make_consumer
from chatbus.kafka.startup import start_client
from chatbus.settings import Settings
from schemas.events import FinishReason, TokenChunk
from schemas.topics import TopicName

# Chunks are stamped by the worker's clock, the request by the client's: allow for skew.
_CLOCK_SKEW_MS = 60_000
READ_DEADLINE_S = 30.0  # a read that has not reached the partitions' ends by then fails


@dataclass(slots=True)
class Published:
    """The contiguous run of chunks a request has on its reply partition."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    next_seq: int = 0
    finish_reason: FinishReason | None = None


def contiguous(chunks: dict[int, TokenChunk]) -> Published:
    """The chunks from seq 0 on, up to the first missing one or the last chunk."""
    published = Published()
    while published.next_seq in chunks:
        chunk = chunks[published.next_seq]
        published.token_ids.extend(chunk.token_ids)
        published.text += chunk.text
        published.next_seq += 1
        if chunk.finish_reason is not None:
            published.finish_reason = chunk.finish_reason
            break
    return published


@dataclass(eq=False, slots=True)
class _Ask:
    partition: int
    request_id: str
    since_ms: int
    answer: asyncio.Future[Published]


class ReplyReader:
    """What requests have streamed, read from their reply partitions: ``start``, then
    :meth:`published_so_far` from any number of tasks at once, then ``stop``."""

    def __init__(self, settings: Settings, *, client_id: str = "resume-scan") -> None:
        self._settings = settings
        self._consumer = make_consumer(
            settings, group_id=None, client_id=client_id, enable_auto_commit=False
        )
        self._asks: list[_Ask] = []
        self._one_read = asyncio.Lock()
        self.reads = 0  # reads of the reply partitions, each for every request waiting

    async def start(self) -> None:
        await start_client(self._settings, self._consumer)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def published_so_far(self, partition: int, request_id: str, since_ms: int) -> Published:
        """The chunks of ``request_id`` on reply partition ``partition`` since ``since_ms``."""
        ask = _Ask(partition, request_id, since_ms, asyncio.get_running_loop().create_future())
        self._asks.append(ask)
        async with self._one_read:  # whoever reads, reads for every request waiting
            if not ask.answer.done():
                await asyncio.sleep(0)  # lets the callers of this same moment add their requests
                asks, self._asks = self._asks, []
                try:
                    found = await self._read(asks)
                except BaseException:
                    # the others are read again by the next of them to hold the lock: a failed
                    # read (a broker's hiccup, a cancel) fails only the request that ran it
                    self._asks[:0] = [a for a in asks if a is not ask]
                    raise
                for other in asks:
                    if not other.answer.done():
                        other.answer.set_result(found[other.request_id])
        return await ask.answer

    async def _read(self, asks: list[_Ask]) -> dict[str, Published]:
        topic = self._settings.topic(TopicName.TOKENS)
        wanted: dict[TopicPartition, dict[bytes, dict[int, TokenChunk]]] = {}
        since: dict[TopicPartition, int] = {}
        for ask in asks:
            tp = TopicPartition(topic, ask.partition)
            wanted.setdefault(tp, {})[ask.request_id.encode()] = {}
            since[tp] = min(since.get(tp, ask.since_ms), ask.since_ms)
        consumer = self._consumer
        consumer.assign(list(wanted))
        deadline = time.monotonic() + READ_DEADLINE_S
        try:
            ends = await consumer.end_offsets(list(wanted))
            found = await consumer.offsets_for_times(
                {tp: max(0, ms - _CLOCK_SKEW_MS) for tp, ms in since.items()}
            )
            reading = set()
            for tp in wanted:
                start = found[tp].offset if found[tp] is not None else ends[tp]
                consumer.seek(tp, start)
                if start < ends[tp]:
                    reading.add(tp)
            self.reads += 1
            while reading:
                if time.monotonic() > deadline:
                    raise KafkaTimeoutError(
                        f"reading {topic} back took over {READ_DEADLINE_S:.0f} s: is the broker up?"
                    )
                batch = await consumer.getmany(*reading, timeout_ms=1000)
                for tp, records in batch.items():
                    chunks_of = wanted[tp]
                    for record in records:
                        if record.offset >= ends[tp]:
                            break
                        if record.key is not None and record.key not in chunks_of:
                            continue  # another request's chunk (keyed by request id)
                        try:
                            event = decode_event(record.topic, record.value, ("chat.token",))
                        except InvalidEvent:
                            continue
                        if isinstance(event, TokenChunk):
                            chunks = chunks_of.get(event.request_id.encode())
                            if chunks is not None:
                                chunks.setdefault(event.seq, event)
                for tp in list(reading):
                    if await consumer.position(tp) >= ends[tp]:
                        reading.discard(tp)
        finally:
            consumer.pause(*consumer.assignment())  # nothing fetched between two reads
        return {
            ask.request_id: contiguous(wanted[TopicPartition(topic, ask.partition)][key])
            for ask in asks
            for key in [ask.request_id.encode()]
        }
