"""Bad input at scale: malformed messages on every topic a component consumes, while the load
flows, and how many of them reached ``chat.dlq``.

Each message is one of: garbage bytes, truncated JSON, valid JSON with wrong types, an unknown
``schema_version``, an oversized body, valid JSON of another event type. Keys start with
``garbage-`` so their dead letters can be told apart.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import Counter

from aiokafka import AIOKafkaProducer
from aiokafka.structs import TopicPartition

from chatbus.kafka import decode_event, make_consumer
from chatbus.kafka.factories import client_options
from chatbus.settings import Settings
from schemas.events import DeadLetter
from schemas.topics import TopicName
from schemas.topics import topic as topic_entry

#: The topics a component consumes in a group (chat.tokens: output moderation; chat.control:
#: the processors' control audit, every worker skipping it).
CONSUMED = (
    TopicName.REQUESTS,
    TopicName.REQUESTS_APPROVED,
    TopicName.COMPLETIONS,
    TopicName.CONTROL,
    TopicName.TOKENS,
)


def malformed(n: int) -> bytes:
    kinds = [
        b"\xff\xfe\x00 garbage",
        b'{"type": "chat.request", "request_id": "req-',
        json.dumps({"type": "chat.request", "schema_version": 1, "messages": 7}).encode(),
        json.dumps({"type": "chat.cancel", "schema_version": 999, "request_id": "x"}).encode(),
        b'{"pad": "' + b"x" * 200_000 + b'"}',
        json.dumps({"type": "chat.dead_letter", "schema_version": 1}).encode(),
    ]
    return kinds[n % len(kinds)]


async def send_garbage(settings: Settings, per_topic: int) -> dict[str, int]:
    """``per_topic`` malformed messages on each consumed topic; returns how many, by topic."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap,
        max_request_size=1_048_576,
        **client_options(settings),
    )
    await producer.start()
    sent: dict[str, int] = {}
    try:
        for name in CONSUMED:
            topic = settings.topic(name)
            for n in range(per_topic):
                await producer.send(topic, malformed(n), key=f"garbage-{n}".encode())
            sent[topic] = per_topic
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def dead_lettered(
    settings: Settings, since_ms: int, expected: dict[str, int], timeout_s: float
) -> Counter[str]:
    """Garbage messages dead-lettered (distinct by original topic, partition and offset: two
    components consuming one topic each dead-letter it), by original topic, read from the DLQ
    after ``since_ms`` until ``expected`` (topic → count) are all there or ``timeout_s`` passed."""
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    seen: set[tuple[str, int, int]] = set()
    found: Counter[str] = Counter()
    try:
        name = settings.topic(TopicName.DLQ)
        count = (
            1
            if not topic_entry(TopicName.DLQ).scales_with_partitions
            else settings.kafka.topic_partitions
        )
        tps = [TopicPartition(name, p) for p in range(count)]
        consumer.assign(tps)
        offsets = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
        for tp in tps:
            at = offsets.get(tp)
            if at is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, at.offset)
        deadline = time.monotonic() + timeout_s

        def complete() -> bool:
            return all(found[topic] >= n for topic, n in expected.items())

        while not complete() and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    letter = decode_event(record.topic, record.value)
                    if not isinstance(letter, DeadLetter) or not letter.original_key_b64:
                        continue
                    place = (
                        letter.original_topic,
                        letter.original_partition,
                        letter.original_offset,
                    )
                    key = base64.b64decode(letter.original_key_b64)
                    if key.startswith(b"garbage-") and place not in seen:
                        seen.add(place)
                        found[letter.original_topic] += 1
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return found
