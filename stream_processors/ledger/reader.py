"""The ledger's reader: one consumer-group member of ``chat.completions`` whose offsets live in
PostgreSQL, beside the rows they produced.

A newly assigned partition is held until its stored offset is read and sought (the earliest
retained record when the ledger never wrote it); records fetched before that are dropped. Each
poll becomes one transaction (:func:`chatbus.accounts.ledger.record`): rows and next offsets
together, so a SIGKILL at any point leaves either both or neither. Kafka's own committed offsets
are written afterwards for the lag a dashboard shows; they are never read back.

PostgreSQL out of reach: the partitions pause (the completions wait on the broker, as lag), the
process reports not ready, and the write is retried with backoff from the batch's first record;
nothing is lost, and the gateways keep answering on what they cached.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from aiokafka.structs import TopicPartition
from pydantic import ValidationError

from chatbus.accounts.database import async_connect, postgres_errors
from chatbus.accounts.ledger import LedgerRow, record, stored_offsets
from chatbus.errors import ServiceUnavailable
from chatbus.health import Health
from chatbus.kafka.backoff import Backoff
from chatbus.kafka.consumer_runtime import ConsumerRuntime, Fetched
from chatbus.logging import get_logger
from chatbus.settings import Settings
from schemas.events import Completion
from schemas.topics import TopicName
from stream_processors.ledger import metrics

log = get_logger(__name__)

DB_DOWN = "postgres unavailable"


class LedgerReader(ConsumerRuntime):
    """One member of the ledger group. ``start()``/``stop()`` are idempotent."""

    component = "ledger"
    db_backoff = Backoff(initial_s=0.5, max_s=10.0)

    def __init__(self, settings: Settings, *, health: Health | None = None) -> None:
        self._batch = settings.postgres.ledger_batch
        super().__init__(
            settings,
            group=settings.topic(settings.postgres.ledger_group),
            topics=[settings.topic(TopicName.COMPLETIONS)],
            client_id="chatbus-ledger",
            health=health,
            max_poll_records=self._batch,
            auto_offset_reset="earliest",
        )
        self._conn: Any = None
        self._unresolved: set[TopicPartition] = set()
        self._next: dict[TopicPartition, int] = {}
        self._down_until = 0.0
        self._failures = 0
        self.rows_written = 0

    def capacity(self) -> int:
        return self._batch

    async def on_start(self) -> None:
        self._conn = await async_connect(self.settings)
        self.closing(self._close_connection)

    async def _close_connection(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    async def _reconnect(self) -> None:
        old, self._conn = self._conn, None
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self._conn = await async_connect(self.settings)

    # --- rebalancing ----------------------------------------------------------------------
    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """No I/O here: hold the partitions until their stored offsets are sought."""
        for tp in assigned:
            self._next.pop(tp, None)
        self._unresolved |= set(assigned)
        if assigned:
            self.gate.hold(assigned)
            self.health.set_ready(False, "reading where the ledger stopped")
        else:
            self.health.set_ready(True, "joined; no partition assigned")

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            self._unresolved.discard(tp)
            self._next.pop(tp, None)

    async def _resolve(self) -> None:
        tps = sorted(self._unresolved)
        try:
            with postgres_errors("read the ledger's offsets"):
                stored = await stored_offsets(
                    self._conn, self.group, [(tp.topic, tp.partition) for tp in tps]
                )
            starts = await self.consumer.beginning_offsets(tps)
        except ServiceUnavailable as exc:
            await self._db_failed(exc)
            return
        for tp in tps:
            if tp not in self._unresolved:
                continue
            start = max(stored.get((tp.topic, tp.partition), starts[tp]), starts[tp])
            self.consumer.seek(tp, start)
            self._next[tp] = start
            self._unresolved.discard(tp)
            self.gate.release([tp])
            log.info(
                "ledger_resume",
                partition=tp.partition,
                offset=start,
                stored=stored.get((tp.topic, tp.partition)),
            )
        if not self._unresolved:
            self.health.set_ready(True, f"{len(self._next)} partition(s) assigned")

    # --- each poll ------------------------------------------------------------------------
    async def on_batch(self, fetched: Fetched) -> None:
        if DB_DOWN in self.gate.reasons:
            if time.monotonic() < self._down_until or not await self._probe():
                return
            self.gate.resume_all(DB_DOWN)  # the next write tells whether it is really back
        if self._unresolved:
            await self._resolve()
        rows: list[LedgerRow] = []
        offsets: dict[tuple[str, int], int] = {}
        first: dict[TopicPartition, int] = {}
        for tp, records in fetched.items():
            start = self._next.get(tp)
            if start is None:
                continue  # fetched before where it starts was decided
            for rec in records:
                if rec.offset < start:
                    continue
                first.setdefault(tp, rec.offset)
                offsets[(tp.topic, tp.partition)] = rec.offset + 1
                row = self._row(tp, rec.offset, rec.value)
                if row is not None:
                    rows.append(row)
        if offsets:
            await self._write(rows, offsets, first)
        self._report_lag()

    def _row(self, tp: TopicPartition, offset: int, value: bytes | None) -> LedgerRow | None:
        try:
            completion = Completion.model_validate_json(value or b"")
        except ValidationError:
            metrics.SKIPPED.inc()
            log.warning("ledger_record_skipped", partition=tp.partition, offset=offset)
            return None
        return LedgerRow.of(completion, TopicName.COMPLETIONS.value, tp.partition, offset)

    async def _write(
        self,
        rows: list[LedgerRow],
        offsets: dict[tuple[str, int], int],
        first: dict[TopicPartition, int],
    ) -> None:
        started = time.perf_counter()
        try:
            with postgres_errors("write the usage ledger"):
                new = await record(self._conn, self.group, rows, offsets)
        except ServiceUnavailable as exc:
            for tp, offset in first.items():
                self.consumer.seek(tp, offset)  # read them again once PostgreSQL is back
            await self._db_failed(exc)
            return
        metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.ROWS.inc(new)
        metrics.REPEATS.inc(len(rows) - new)
        self.rows_written += new
        for (topic, partition), next_offset in offsets.items():
            self._next[TopicPartition(topic, partition)] = next_offset
        if self._failures:
            self._db_recovered()
        await self.commit(
            {TopicPartition(t, p): o for (t, p), o in offsets.items()}
        )  # for dashboards only: the ledger resumes from PostgreSQL

    async def _db_failed(self, exc: ServiceUnavailable) -> None:
        delay = self.db_backoff.delay(self._failures)
        self._failures += 1
        self._down_until = time.monotonic() + delay
        self.gate.pause_all(DB_DOWN)
        self.health.set_ready(False, f"PostgreSQL unavailable: {exc}")
        log.warning("ledger_postgres_unavailable", error=str(exc), retry_in_s=delay)

    async def _probe(self) -> bool:
        """A fresh connection that answers; else back off longer."""
        try:
            await self._reconnect()
            with postgres_errors("check the ledger's database"):
                await self._conn.execute("SELECT 1")
                await self._conn.commit()
        except ServiceUnavailable as exc:
            await self._db_failed(exc)
            return False
        return True

    def _db_recovered(self) -> None:
        self._failures = 0
        self.gate.resume_all(DB_DOWN)
        if not self._unresolved:
            self.health.set_ready(True, "PostgreSQL reachable again")
        log.info("ledger_postgres_back")

    def _report_lag(self) -> None:
        consumer = self.consumer
        for tp, next_offset in self._next.items():
            end = consumer.highwater(tp)
            if end is not None:
                metrics.LAG.labels(str(tp.partition)).set(max(0, end - next_offset))
