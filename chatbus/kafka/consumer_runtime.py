"""The one Kafka consumer runtime that chatbus's long-lived consumers are built on.

A subclass says what to do with what it fetched (:meth:`ConsumerRuntime.on_batch`); the runtime
owns what every consumer needs and would otherwise write again:

* **lifecycle**: ``start()``/``stop()`` are safe to call twice and work as ``async with``; what
  :meth:`~ConsumerRuntime.on_start` opens (:meth:`~ConsumerRuntime.closing`) is closed in reverse
  order, the consumer first; the loops are cancelled *and* awaited; ``stop()`` runs its cleanup
  in ``try/finally``. A stopped runtime refuses to start again (make a new one).
* **the poll loop**: ``getmany`` up to :meth:`~ConsumerRuntime.capacity` records; at capacity 0
  the partitions pause (back-pressure: the backlog waits on the broker, as consumer lag) until
  :meth:`~ConsumerRuntime.capacity_freed`. A subclass pauses for its own reasons through
  :attr:`~ConsumerRuntime.gate` (:mod:`chatbus.kafka.pausing`).
* **commits**: :meth:`~ConsumerRuntime.commit`, called by the subclass once the effect is
  durable, commits the partitions still assigned; a failed commit is a warning (the partition's
  next owner redoes the records since the last commit: at-least-once).
* **rebalance hooks**: :meth:`~ConsumerRuntime.on_assigned` and
  :meth:`~ConsumerRuntime.on_revoked` (called before the partitions move, so the subclass can
  finish or hand over and commit).
* **heartbeats**: every loop beats its :class:`~chatbus.health.Health` on each turn, so ``/livez``
  fails when a loop wedges or dies; a loop that raises one of
  :attr:`~ConsumerRuntime.restart_on` is restarted after the shared backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Self

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition

from chatbus.errors import ChatbusError, require_started
from chatbus.health import Health
from chatbus.kafka.backoff import Backoff, Sleep
from chatbus.kafka.factories import make_consumer
from chatbus.kafka.pausing import PauseGate
from chatbus.kafka.startup import start_client
from chatbus.logging import get_logger
from chatbus.settings import Settings

log = get_logger(__name__)

__all__ = ["ConsumerRuntime", "Fetched", "State"]

Fetched = Mapping[TopicPartition, Sequence[ConsumerRecord[bytes, bytes]]]

FULL = "no capacity"
STOPPING = "stopping"


class State(enum.Enum):
    NEW = "new"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runtime: ConsumerRuntime) -> None:
        self._runtime = runtime

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._runtime._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._runtime._assigned(set(assigned))


class ConsumerRuntime:
    """A member of consumer group ``group`` reading ``topics``; subclasses handle the records."""

    component: ClassVar[str] = "consumer"  # logs, health and DLQ say who
    restart_on: ClassVar[tuple[type[BaseException], ...]] = ()  # else a failing loop ends
    loop_backoff: ClassVar[Backoff] = Backoff(initial_s=0.1, max_s=5.0)
    poll_timeout_ms: ClassVar[int] = 200
    max_records: ClassVar[int] = 500
    beat_interval_s: ClassVar[float] = 1.0  # a loop waiting for capacity still beats this often
    stop_grace_s: ClassVar[float] = 30.0  # loops finish their turn within this, else cancelled

    def __init__(
        self,
        settings: Settings,
        *,
        group: str,
        topics: Sequence[str],
        client_id: str,
        health: Health | None = None,
        sleep: Sleep = asyncio.sleep,
        **consumer_options: Any,
    ) -> None:
        self.settings = settings
        self.group = group
        self.health = health or Health(self.component)
        self._topics = list(topics)
        self._client_id = client_id
        self._consumer_options = consumer_options
        self._sleep = sleep
        self._state = State.NEW
        self._stopping = asyncio.Event()
        self._capacity_freed = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._gate: PauseGate | None = None
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._resources = contextlib.AsyncExitStack()

    # --- for subclasses -------------------------------------------------------------------
    async def on_start(self) -> None:
        """Open what the records need (before the consumer joins its group); register each
        closer with :meth:`closing`."""

    async def on_batch(self, fetched: Fetched) -> None:
        """Handle one poll's records (called after every poll, also with none)."""
        raise NotImplementedError

    def capacity(self) -> int:
        """How many records to take now; 0 pauses the partitions until :meth:`capacity_freed`."""
        return self.max_records

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Partitions joined this member (no I/O here: heartbeats wait for it)."""

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Partitions are about to leave this member: finish or hand over, then commit."""

    async def on_stop(self) -> None:
        """Stopping, partitions paused, loops still running: finish what is in flight."""

    async def on_loops_ended(self) -> None:
        """Stopping, loops ended, consumer still in the group: the last flush and commit."""

    def closing(self, close: Callable[[], Awaitable[object] | object]) -> None:
        """Call ``close`` on stop, in reverse order of registration."""

        async def close_it() -> None:
            result = close()
            if inspect.isawaitable(result):
                await result

        self._resources.push_async_callback(close_it)

    def spawn_loop(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run ``loop`` in the background until stop (restarted on :attr:`restart_on`)."""
        self._loops[name] = asyncio.create_task(
            self._supervised(name, loop), name=f"{self.component}-{name}"
        )

    def capacity_freed(self) -> None:
        """Wake the poll loop that waits for capacity."""
        self._capacity_freed.set()

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Commit ``offsets`` (next offset to read) of the partitions still assigned, once their
        records' effect is durable. Returns what was committed ({} when nothing or it failed)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        assigned = consumer.assignment()
        wanted = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not wanted:
            return {}
        try:
            await consumer.commit(wanted)
        except KafkaError as exc:  # the partition moved: its next owner redoes the records
            log.warning(
                "commit_failed",
                component=self.component,
                error=repr(exc),
                offsets={f"{tp.topic}:{tp.partition}": o for tp, o in wanted.items()},
            )
            return {}
        return wanted

    # --- state ----------------------------------------------------------------------------
    @property
    def consumer(self) -> AIOKafkaConsumer:
        return require_started(self._consumer, self.component)

    @property
    def gate(self) -> PauseGate:
        return require_started(self._gate, self.component)

    @property
    def topics(self) -> list[str]:
        """The topics this member's group subscribes to."""
        return list(self._topics)

    @property
    def state(self) -> State:
        return self._state

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def running(self) -> bool:
        """Started, not stopping, and every loop alive."""
        return (
            self._state is State.RUNNING
            and bool(self._loops)
            and not any(task.done() for task in self._loops.values())
        )

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer is not None else set()

    @property
    def back_pressure_pauses(self) -> int:
        """Times the partitions were paused (for want of capacity or another reason)."""
        return self._gate.pauses if self._gate is not None else 0

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._state is State.STOPPED:
            raise ChatbusError(f"this {self.component} was stopped; make a new one")
        if self._state is not State.NEW:
            return
        self._state = State.STARTING
        try:
            await self.on_start()
            await self._join()
            self.spawn_loop("consume", self._consume)
        except BaseException:
            try:
                await self._shutdown()
            finally:
                self._state = State.STOPPED
            raise
        self._state = State.RUNNING
        log.info(f"{self.component}_started", group=self.group)

    async def stop(self) -> None:
        """Stop taking records, let :meth:`on_stop` finish what is in flight, end the loops,
        flush and commit (:meth:`on_loops_ended`), then close everything in reverse order."""
        if self._state is not State.RUNNING:
            return
        self._state = State.STOPPING
        self._stopping.set()
        self._capacity_freed.set()
        try:
            self.gate.pause_all(STOPPING)
            await self.on_stop()
            await self._end_loops(self.stop_grace_s)
            await self.on_loops_ended()
        finally:
            try:
                await self._shutdown()
            finally:
                self._state = State.STOPPED
                self.health.set_ready(False, "stopped")
                log.info(f"{self.component}_stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def failed(self) -> BaseException:
        """Wait until a loop ends on its own (it failed); what it raised."""
        if not self._loops:
            raise ChatbusError(f"the {self.component} is not started")
        done, _ = await asyncio.wait(self._loops.values(), return_when=asyncio.FIRST_COMPLETED)
        task = done.pop()
        error = None if task.cancelled() else task.exception()
        return error or ChatbusError(f"the {self.component}'s {task.get_name()} loop ended")

    async def _join(self) -> None:
        consumer = make_consumer(
            self.settings,
            group_id=self.group,
            client_id=self._client_id,
            **{
                "session_timeout_ms": self.settings.kafka.session_timeout_ms,
                "heartbeat_interval_ms": self.settings.kafka.heartbeat_interval_ms,
                **self._consumer_options,  # a runtime may detect its members' death faster
            },
        )
        consumer.subscribe(topics=self._topics, listener=_Listener(self))
        # the first assignment may arrive while start() runs
        self._consumer, self._gate = consumer, PauseGate(consumer)
        try:
            await start_client(self.settings, consumer)  # a broker out of reach: our error
        except BaseException:
            self._consumer = None
            raise
        self.closing(consumer.stop)

    async def _shutdown(self) -> None:
        try:
            await self._end_loops(0)
        finally:
            for name in self._loops:
                self.health.forget(name)
            await self._resources.aclose()

    async def _end_loops(self, grace_s: float) -> None:
        """Let the loops end their turn (up to ``grace_s``), cancel the rest, await them all."""
        tasks = [t for t in self._loops.values() if not t.done()]
        if tasks and grace_s > 0:
            await asyncio.wait(tasks, timeout=grace_s)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*self._loops.values(), return_exceptions=True)
        for name, result in zip(self._loops, results, strict=True):
            if isinstance(result, Exception):
                log.error(
                    "loop_failed",
                    component=self.component,
                    loop=name,
                    error=f"{type(result).__name__}: {result}",
                )

    # --- loops ----------------------------------------------------------------------------
    async def _supervised(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        attempt = 0
        while not self.stopping:
            try:
                await loop()
                return
            except self.restart_on as exc:
                delay = self.loop_backoff.delay(attempt)
                attempt += 1
                log.warning(
                    "loop_restarting",
                    component=self.component,
                    loop=name,
                    error=repr(exc),
                    retry_in_s=delay,
                )
                await self._sleep(delay)

    async def _consume(self) -> None:
        consumer, gate = self.consumer, self.gate
        while not self.stopping:
            self.health.beat("consume")
            wanted = self.capacity()
            if wanted <= 0:
                gate.pause_all(FULL)
                self._capacity_freed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.beat_interval_s):
                        await self._capacity_freed.wait()
                continue
            gate.resume_all(FULL)
            fetched = await consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=wanted)
            await self.on_batch(fetched)

    def beat(self, loop: str) -> None:
        """A loop of the subclass's own is alive (call it on each turn)."""
        self.health.beat(loop)

    # --- rebalancing ----------------------------------------------------------------------
    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        log.info(
            "partitions_assigned",
            component=self.component,
            partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
        )
        await self.on_assigned(assigned)
        if self._gate is not None:
            self._gate.apply()

    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        await self.on_revoked(revoked)
        if self._gate is not None:
            self._gate.forget(revoked)
