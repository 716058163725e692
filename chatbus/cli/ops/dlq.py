"""The dead-letter queue for an SRE: what is in it and why, and republishing what can be fixed.

``chatbus ops dlq list`` reads ``chat.dlq`` without a consumer group and summarises it by
consumer, original topic and reason. ``chatbus ops dlq replay`` republishes the original bytes of
matching dead letters to their original topic with their original key (and a
``chatbus-dlq-replay: <dlq partition>:<offset>`` header), skipping — and naming — those that still
are not valid events. It keeps its position in a consumer group of its filter
(``chatbus.ops.dlq-replay.<hash of the filter>``) and commits only after the broker acknowledged
every republished message, so a second run of the same replay starts after the first while a
replay with another filter still sees everything; ``--dry-run`` only says what it would send and
commits nothing.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from chatbus.kafka.factories import (
    kafka_unreachable,
    make_consumer,
    make_producer,
    partitions_of,
)
from chatbus.settings import Settings
from schemas.events import DeadLetter, parse_event
from schemas.topics import TopicName

REPLAY_GROUP = "chatbus.ops.dlq-replay"
REPLAY_HEADER = "chatbus-dlq-replay"


@dataclass(frozen=True, slots=True)
class Letter:
    partition: int
    offset: int
    letter: DeadLetter | None  # None: the DLQ record itself is not a dead letter
    problem: str = ""

    @property
    def where(self) -> str:
        if self.letter is None:
            return f"dlq@{self.partition}:{self.offset}"
        return (
            f"dlq@{self.partition}:{self.offset} <- {self.letter.original_topic}"
            f"[{self.letter.original_partition}]@{self.letter.original_offset}"
        )


@dataclass
class ReplayReport:
    sent: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "where: why"
    filtered: int = 0


def _decode(partition: int, offset: int, raw: bytes | None) -> Letter:
    try:
        return Letter(partition, offset, DeadLetter.model_validate_json(raw or b""))
    except ValidationError as exc:
        return Letter(partition, offset, None, f"not a dead letter: {str(exc)[:200]}")


async def _read(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]
) -> list[Letter]:
    letters: list[Letter] = []

    async def behind() -> bool:
        return any([await consumer.position(tp) < ends[tp] for tp in tps])

    while await behind():
        for records in (await consumer.getmany(*tps, timeout_ms=1000)).values():
            for record in records:
                if record.offset < ends[TopicPartition(record.topic, record.partition)]:
                    letters.append(_decode(record.partition, record.offset, record.value))
    return letters


async def read_letters(settings: Settings) -> list[Letter]:
    """Every record on ``chat.dlq`` now (no consumer group, nothing committed)."""
    consumer = make_consumer(settings, group_id=None, auto_offset_reset="earliest")
    try:
        await consumer.start()
        tps = await partitions_of(consumer, settings.topic(TopicName.DLQ))
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return await _read(consumer, tps, await consumer.end_offsets(tps))
    except KafkaError as exc:
        raise await kafka_unreachable(settings, exc) from exc
    finally:
        await consumer.stop()


def summarise(letters: list[Letter]) -> list[tuple[str, str, str, int]]:
    """(consumer, original topic, reason, count), most frequent first."""
    counts: Counter[tuple[str, str, str]] = Counter()
    for item in letters:
        if item.letter is None:
            counts[("?", "?", item.problem[:120])] += 1
        else:
            counts[
                (
                    item.letter.consumer,
                    item.letter.original_topic,
                    item.letter.error.split(":", 1)[0][:120],
                )
            ] += 1
    return [(*k, n) for k, n in counts.most_common()]


def matches(
    letter: DeadLetter,
    settings: Settings,
    *,
    consumer: str | None,
    topic: str | None,
    error_contains: str | None,
) -> bool:
    return not (
        (consumer and letter.consumer != consumer)
        or (topic and letter.original_topic != settings.topic(topic))
        or (error_contains and error_contains not in letter.error)
    )


async def replay(
    settings: Settings,
    *,
    consumer: str | None = None,
    topic: str | None = None,
    error_contains: str | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Republish the matching dead letters that are valid events now (see the module doc)."""
    wanted = f"{consumer or '*'}|{topic or '*'}|{error_contains or '*'}"
    group = settings.topic(f"{REPLAY_GROUP}.{hashlib.sha256(wanted.encode()).hexdigest()[:10]}")
    reader = make_consumer(settings, group_id=group, auto_offset_reset="earliest")
    producer = make_producer(settings)
    report = ReplayReport()
    try:
        await reader.start()
        await producer.start()
        tps = await partitions_of(reader, settings.topic(TopicName.DLQ))
        if not tps:
            return report
        reader.assign(tps)
        for tp in tps:
            committed = await reader.committed(tp)
            if committed is None:
                await reader.seek_to_beginning(tp)
            else:
                reader.seek(tp, committed)
        ends = await reader.end_offsets(tps)
        for item in await _read(reader, tps, ends):
            if item.letter is None:
                report.skipped.append(f"{item.where}: {item.problem}")
                continue
            letter = item.letter
            if not matches(
                letter, settings, consumer=consumer, topic=topic, error_contains=error_contains
            ):
                report.filtered += 1
                continue
            value = base64.b64decode(letter.original_value_b64)
            try:
                parse_event(value)
            except ValueError as exc:  # pydantic's ValidationError is a ValueError
                report.skipped.append(f"{item.where}: still invalid: {str(exc)[:200]}")
                continue
            if not dry_run:
                key = base64.b64decode(letter.original_key_b64) if letter.original_key_b64 else None
                await producer.send_and_wait(
                    letter.original_topic,
                    value,
                    key=key,
                    headers=[(REPLAY_HEADER, f"{item.partition}:{item.offset}".encode())],
                )
            report.sent.append(item.where)
        if not dry_run:  # every send above was acknowledged: move past what was read
            await reader.commit({tp: end for tp, end in ends.items()})
        return report
    except KafkaError as exc:
        raise await kafka_unreachable(settings, exc) from exc
    finally:
        await producer.stop()
        await reader.stop()
