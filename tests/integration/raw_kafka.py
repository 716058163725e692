"""Kafka as tests see it: a topic read from its first record (no consumer group, every
partition), its first events decoded, and raw bytes written to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from chatbus.kafka import decode_event, make_consumer
from chatbus.settings import Settings
from schemas.topics import topic as topic_entry


@asynccontextmanager
async def reading_from_start(settings: Settings, topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer without a group assigned every partition of ``topic``, from the beginning."""
    consumer = make_consumer(settings, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        name = settings.topic(topic)
        partitions = topic_entry(topic).partitions(settings.kafka.topic_partitions)
        consumer.assign([TopicPartition(name, p) for p in range(partitions)])
        yield consumer
    finally:
        await consumer.stop()


async def read_events(
    settings: Settings, topic: str, count: int, timeout: float = 60.0
) -> list[object]:
    """The first ``count`` events of ``topic`` (from the beginning), within ``timeout``."""
    async with reading_from_start(settings, topic) as consumer:
        events: list[object] = []

        async def collect() -> None:
            async for record in consumer:
                events.append(decode_event(record.topic, record.value))
                if len(events) >= count:
                    return

        await asyncio.wait_for(collect(), timeout)
        return events


async def send_raw(settings: Settings, topic: str, value: bytes, key: bytes) -> None:
    """Put ``value`` on ``topic`` as it is (no event, no check): what a broken producer sends."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka.bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topic), value, key=key)
    finally:
        await producer.stop()
