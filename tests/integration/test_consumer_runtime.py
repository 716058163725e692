"""The consumer runtime on the real broker: lifecycle, commits after the effect, back-pressure,
failing loops, and the one DLQ route with its one counter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiokafka.structs import TopicPartition
from prometheus_client import REGISTRY

from chatbus.errors import ChatbusError
from chatbus.kafka.consumer_runtime import ConsumerRuntime, Fetched, State
from chatbus.kafka.dlq import send_to_dlq
from chatbus.kafka.factories import make_consumer, partitions_of
from chatbus.kafka.lag import group_offsets
from chatbus.kafka.publisher import EventPublisher
from chatbus.polling import eventually
from chatbus.settings import Settings
from schemas.events import DeadLetter, parse_event
from schemas.topics import TopicName

pytestmark = pytest.mark.integration


class Recorder(ConsumerRuntime):
    """Takes up to ``limit`` records, keeps their values, commits each batch after keeping it."""

    component = "recorder"
    stop_grace_s = 1.0

    def __init__(
        self,
        settings: Settings,
        *,
        limit: int = 100,
        extra_loop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        super().__init__(
            settings,
            group=f"{settings.kafka.topic_prefix}recorder",
            topics=[settings.topic(TopicName.COMPLETIONS)],
            client_id="recorder",
        )
        self.limit = limit
        self.seen: list[bytes] = []
        self.events: list[str] = []
        self.idle_loop: asyncio.Task[None] | None = None
        self._extra_loop = extra_loop

    async def on_start(self) -> None:
        self.events.append("open store")
        self.closing(lambda: self.events.append("close store"))
        self.events.append("open publisher")
        self.closing(self._close_publisher)
        self.spawn_loop("idle", self._idle)
        if self._extra_loop is not None:
            self.spawn_loop("extra", self._extra_loop)

    async def _close_publisher(self) -> None:
        self.events.append("close publisher")

    async def _idle(self) -> None:
        """A loop that never ends by itself: stop must cancel it and wait for it."""
        self.idle_loop = asyncio.current_task()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.events.append("idle loop cancelled")
            raise

    def capacity(self) -> int:
        return self.limit - len(self.seen)

    async def on_batch(self, fetched: Fetched) -> None:
        for tp, records in fetched.items():
            self.seen += [r.value or b"" for r in records]
            if records:
                await self.commit({tp: records[-1].offset + 1})


async def _produce(settings: Settings, count: int) -> None:
    async with EventPublisher(settings) as publisher:
        for i in range(count):
            await publisher.producer.send_and_wait(
                settings.topic(TopicName.COMPLETIONS), f"record {i}".encode(), key=f"k{i}".encode()
            )


async def test_start_and_stop_are_safe_twice_and_close_in_reverse_order(bus: Settings) -> None:
    runtime = Recorder(bus)
    async with runtime:
        await runtime.start()
        assert runtime.state is State.RUNNING and runtime.running
        assert runtime.health.liveness()[0]
    await runtime.stop()
    assert runtime.state is State.STOPPED and not runtime.running
    assert runtime.events == [
        "open store",
        "open publisher",
        "idle loop cancelled",
        "close publisher",
        "close store",
    ]
    assert runtime.idle_loop is not None and runtime.idle_loop.done()
    assert not runtime.health.readiness()[0]
    with pytest.raises(ChatbusError, match="make a new one"):
        await runtime.start()


async def test_records_are_committed_once_handled(bus: Settings) -> None:
    await _produce(bus, 6)
    async with Recorder(bus) as runtime:
        await eventually(lambda: _at_least(runtime, 6), timeout_s=60, what="6 records handled")

        async def committed() -> bool:
            offsets = await group_offsets(bus, runtime.group)
            return sum(offsets.values()) == 6

        await eventually(committed, timeout_s=30, what="6 offsets committed")
    assert sorted(runtime.seen) == sorted(f"record {i}".encode() for i in range(6))


async def test_no_capacity_pauses_the_partitions_until_capacity_is_freed(bus: Settings) -> None:
    await _produce(bus, 5)
    async with Recorder(bus, limit=2) as runtime:
        await eventually(lambda: _at_least(runtime, 2), timeout_s=60, what="2 records handled")

        async def paused() -> set[TopicPartition]:
            assigned = runtime.assignment
            return assigned if assigned and runtime.consumer.paused() == assigned else set()

        await eventually(paused, timeout_s=10, what="every partition paused")
        assert len(runtime.seen) == 2 and runtime.back_pressure_pauses >= 1
        runtime.limit = 10
        runtime.capacity_freed()
        await eventually(lambda: _at_least(runtime, 5), timeout_s=30, what="the other 3")
        assert runtime.consumer.paused() == set()  # room for 5 more: fetching again


async def test_a_loop_that_fails_is_reported_and_stop_still_closes_everything(
    bus: Settings,
) -> None:
    async def broken() -> None:
        raise RuntimeError("the loop's bug")

    runtime = Recorder(bus, extra_loop=broken)
    async with runtime:
        error = await asyncio.wait_for(runtime.failed(), timeout=10)
        assert isinstance(error, RuntimeError) and "bug" in str(error)
        assert not runtime.running
    assert runtime.events[-2:] == ["close publisher", "close store"]


async def test_a_dead_letter_is_published_and_counted_once_by_consumer_and_topic(
    bus: Settings,
) -> None:
    class Record:
        topic, partition, offset = bus.topic(TopicName.REQUESTS), 1, 17
        key, value = b"conv-1", b"{not json"

    labels = {"consumer": "moderation", "topic": Record.topic}
    before = REGISTRY.get_sample_value("chatbus_dead_letters_total", labels) or 0.0
    async with EventPublisher(bus) as publisher:
        await send_to_dlq(
            publisher, Record(), error="Invalid JSON", consumer="moderation", member="p-1"
        )
    assert REGISTRY.get_sample_value("chatbus_dead_letters_total", labels) == before + 1

    letter = await asyncio.wait_for(_first_letter(bus), timeout=30)
    assert letter.consumer == "moderation:p-1" and letter.error == "Invalid JSON"
    assert (letter.original_topic, letter.original_offset) == (Record.topic, 17)


async def _first_letter(settings: Settings) -> DeadLetter:
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        consumer.assign(await partitions_of(consumer, settings.topic(TopicName.DLQ)))
        while True:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    event = parse_event(record.value or b"")
                    assert isinstance(event, DeadLetter)
                    return event
    finally:
        await consumer.stop()


async def _at_least(runtime: Recorder, count: int) -> bool:
    return len(runtime.seen) >= count
