"""Read back what a request has already streamed, so another worker can continue it."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.structs import TopicPartition

from chatbus.errors import InvalidEvent
from chatbus.kafka import decode_event, make_consumer
from chatbus.settings import Settings
from schemas.events import FinishReason, TokenChunk
from schemas.topics import TopicName

# Chunks are stamped by the worker's clock, the request by the client's: allow for skew.
_CLOCK_SKEW_MS = 60_000


@dataclass(slots=True)
class Published:
    """The contiguous run of chunks a request has on its reply partition."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    next_seq: int = 0
    finish_reason: FinishReason | None = None


async def published_so_far(
    settings: Settings, partition: int, request_id: str, since_ms: int
) -> Published:
    """Scan the reply partition from ``since_ms`` to its current end for ``request_id``."""
    consumer = make_consumer(
        settings, group_id=None, client_id="resume-scan", enable_auto_commit=False
    )
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(TopicName.TOKENS), partition)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found = (await consumer.offsets_for_times({tp: max(0, since_ms - _CLOCK_SKEW_MS)}))[tp]
        start = found.offset if found is not None else end
        chunks: dict[int, TokenChunk] = {}
        wanted_key = request_id.encode()
        consumer.seek(tp, start)
        position = start
        while position < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                position = record.offset + 1
                if record.offset >= end:
                    break
                if record.key is not None and record.key != wanted_key:
                    continue  # another request's chunk (keyed by request id): not decoded
                try:
                    event = decode_event(record.topic, record.value, ("chat.token",))
                except InvalidEvent:
                    continue
                if isinstance(event, TokenChunk) and event.request_id == request_id:
                    chunks.setdefault(event.seq, event)
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
    finally:
        await consumer.stop()
