"""The archiver: consume every registry topic, upload batches to the object store, then commit.

Nothing lost: offsets are committed only after the object and its manifest entry are stored.
Nothing twice: an object's key is a function of its offsets (:mod:`schemas.archive`), a *pending*
range is written before each upload, and a newly assigned partition stays paused until
:mod:`.resume` has decided where it starts — re-archiving exactly an unfinished range under the
same key, or skipping a finished one whose commit was lost. Records fetched for a partition
before that decision are dropped (the decision seeks explicitly).

A partition's batch is flushed when it reaches ``archive_flush_bytes`` or has waited
``archive_flush_s`` (whichever first) and when the archiver stops (SIGTERM); a revoked
partition's batch is dropped (the next owner re-reads it from the committed offset). The
rebalance callbacks do no I/O: they only wait for an upload in flight (one bounded attempt) so a
revoked partition is never written after it moved.

An object store that cannot be reached pauses every partition (the records wait on the broker,
uncommitted), marks the process unready and is retried with backoff.

The archiver is a batching sink on :class:`chatbus.kafka.consumer_runtime.ConsumerRuntime`
(lifecycle, poll loop, pause/resume, commits, rebalance hooks, heartbeats): :meth:`Archiver.add`
puts a record in its partition's batch, :meth:`Archiver.flush` uploads and commits one, and the
store's outages are the back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from chatbus.errors import ServiceUnavailable
from chatbus.health import Health
from chatbus.kafka.backoff import Backoff
from chatbus.kafka.consumer_runtime import ConsumerRuntime, Fetched
from chatbus.logging import get_logger
from chatbus.object_store import ObjectStore
from chatbus.settings import Settings
from schemas.topics import TopicName
from stream_processors.archiver import metrics
from stream_processors.archiver.batch import PartitionBatch
from stream_processors.archiver.records import archive_line, raw_line
from stream_processors.archiver.resume import resume_point
from stream_processors.archiver.stream_redaction import CONTEXT_RECORDS, TokenStreamRedactor
from stream_processors.archiver.uploader import read_pending, upload_batch

log = get_logger(__name__)

STORE_DOWN = "object store unavailable"


class Archiver(ConsumerRuntime):
    """One member of the archiver group. ``start()``/``stop()`` are idempotent."""

    component = "archiver"
    max_records = 5000
    store_backoff = Backoff(initial_s=0.5, max_s=10.0)

    def __init__(
        self, settings: Settings, *, health: Health | None = None, store: ObjectStore | None = None
    ) -> None:
        registry = {settings.topic(t.value): t.value for t in TopicName}
        super().__init__(
            settings,
            group=settings.topic(settings.archive.group),
            topics=sorted(registry),
            client_id="chatbus-archiver",
            health=health,
            max_poll_records=self.max_records,
            fetch_max_wait_ms=200,
        )
        self.store = store or ObjectStore(settings, timeout_s=10.0, attempts=2)
        self._registry = registry
        self._batches: dict[TopicPartition, PartitionBatch] = {}
        self._streams: dict[TopicPartition, TokenStreamRedactor] = {}  # chat.tokens partitions
        self._close_at: dict[TopicPartition, int] = {}  # re-archive exactly up to this offset
        self._next: dict[TopicPartition, int] = {}  # first offset not yet archived
        self._unresolved: set[TopicPartition] = set()  # assigned; where to start not decided
        self._lock = asyncio.Lock()  # batches and uploads vs. the rebalance callbacks
        self._store_down_until = 0.0  # monotonic
        self._store_failures = 0
        self.archived_records = 0

    # --- lifecycle ------------------------------------------------------------------------
    async def on_start(self) -> None:
        log.info(
            "archive_target",
            topics=sorted(self._registry.values()),
            bucket=self.store.bucket,
            prefix=self.settings.archive.prefix,
            redact=self.settings.archive.redact,
        )

    async def on_loops_ended(self) -> None:
        """Flush every batch (upload, then commit) before leaving the group."""
        async with self._lock:
            for tp in list(self._batches):
                if tp in self._close_at or tp in self._unresolved:
                    self._batches.pop(tp)  # an unfinished re-archive: the next run redoes it
                    continue
                try:
                    await self.flush(tp)
                except ServiceUnavailable as exc:
                    log.error(
                        "archive_final_flush_failed",
                        error=str(exc),
                        hint="the records stay uncommitted; a restart re-reads them",
                    )
                    break
        log.info("archive_flushed", archived_records=self.archived_records)

    # --- each poll ------------------------------------------------------------------------
    async def on_batch(self, fetched: Fetched) -> None:
        """Add what was fetched, flush what is due; then, the store back, resume; decide where
        newly assigned partitions start; report lag."""
        consumer = self.consumer
        async with self._lock:
            for tp, records in fetched.items():
                for record in records:
                    await self.add(tp, record)
            if not self._store_down():
                now, limits = time.monotonic(), self._limits
                for tp, batch in list(self._batches.items()):
                    if tp not in self._close_at and batch.due(**limits, now=now):
                        await self._flush_or_back_off(tp)
        if self._store_failures and not self._store_down() and not self._batches:
            self._store_recovered()  # nothing to retry with: the next read or flush tells
        if self._unresolved and not self._store_down():
            await self._resolve(consumer)
        self._report_lag(consumer)

    def _context_records(self, tp: TopicPartition) -> int:
        """How many records before its start a partition is read from again, as context only:
        the token stream redactor's view of answers that began before it (0 elsewhere)."""
        streamed = self.settings.archive.redact and self._registry[tp.topic] == TopicName.TOKENS
        return CONTEXT_RECORDS if streamed else 0

    async def add(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        """Put ``record`` in its partition's batch; flush the batch when it is full."""
        start = self._next.get(tp)
        if start is None or tp in self._unresolved:
            return  # fetched before this partition's start was decided
        if record.offset < start:  # archived already; it may be context for what follows
            if start - record.offset <= self._context_records(tp):
                line = archive_line(self._registry[tp.topic], record, redact=False)
                self._streams.setdefault(tp, TokenStreamRedactor()).context(line)
            return
        close_at = self._close_at.get(tp)
        batch = self._batches.get(tp)
        if close_at is not None and batch and record.offset > close_at:
            # the pending range ended in a gap of the log: close it before this record
            if not await self._flush_or_back_off(tp):
                self.consumer.seek(tp, record.offset)  # fetch it again once the store is back
                return
            batch = None
        if batch is None:
            batch = self._batches[tp] = PartitionBatch(self._registry[tp.topic], tp.partition)
        redact = self.settings.archive.redact
        streamed = redact and batch.topic == TopicName.TOKENS
        line = archive_line(batch.topic, record, redact=redact, chunks=not streamed)
        try:
            index = batch.add(record.offset, record.timestamp, line)
        except orjson.JSONEncodeError as exc:  # parsed, but nested deeper than dumps goes
            line = raw_line(batch.topic, record, exc, redact=redact)
            index = batch.add(record.offset, record.timestamp, line)
        if streamed:
            redactor = self._streams.setdefault(tp, TokenStreamRedactor())
            if found := redactor.add(batch, index, line):
                metrics.REDACTED.labels(batch.topic).inc(found)
        if self._store_down():
            return
        if close_at is not None:  # re-archiving a pending range: only its own end closes it
            if record.offset >= close_at:
                await self._flush_or_back_off(tp)
        elif batch.size >= self.settings.archive.flush_bytes:
            await self._flush_or_back_off(tp)

    # --- flushing -------------------------------------------------------------------------
    async def _flush_or_back_off(self, tp: TopicPartition) -> bool:
        """Flush ``tp``; on a store that cannot be reached, pause everything and back off."""
        try:
            await self.flush(tp)
        except ServiceUnavailable as exc:
            self._store_failed(exc)
            return False
        if self._store_failures:
            self._store_recovered()
        return True

    def _store_recovered(self) -> None:
        self._store_failures = 0
        self.gate.resume_all(STORE_DOWN)  # those whose start is not decided stay held
        if not self._unresolved:
            self.health.set_ready(True, "object store reachable again")
        log.info("archive_store_back")

    def _store_failed(self, exc: ServiceUnavailable) -> None:
        delay = self.store_backoff.delay(self._store_failures)
        self._store_failures += 1
        self._store_down_until = time.monotonic() + delay
        self.gate.pause_all(STORE_DOWN)
        self.health.set_ready(False, f"object store unavailable: {exc}")
        log.warning(
            "archive_store_unavailable",
            error=str(exc),
            retry_in_s=delay,
            failures=self._store_failures,
        )

    def _store_down(self) -> bool:
        return time.monotonic() < self._store_down_until

    async def flush(self, tp: TopicPartition) -> None:
        """Upload ``tp``'s batch (pending range, object, manifest entry), then commit it; on
        failure the batch stays for the next attempt."""
        batch = self._batches.get(tp)
        if not batch:
            return
        started = time.perf_counter()
        entry = await asyncio.to_thread(
            upload_batch,
            self.store,
            self.settings.archive.prefix,
            batch,
            redacted=self.settings.archive.redact,
        )
        metrics.UPLOAD_SECONDS.observe(time.perf_counter() - started)
        self._batches.pop(tp, None)
        if self._close_at.get(tp) is not None and batch.last_offset >= self._close_at[tp]:
            del self._close_at[tp]
        self._next[tp] = batch.last_offset + 1
        await self._commit(tp, batch.last_offset + 1)
        self.archived_records += len(batch)
        metrics.RECORDS.labels(batch.topic).inc(len(batch))
        metrics.OBJECTS.labels(batch.topic).inc()
        metrics.BYTES.labels(batch.topic).inc(entry.compressed_bytes)
        log.info(
            "archived",
            topic=batch.topic,
            partition=batch.partition,
            first=batch.first_offset,
            last=batch.last_offset,
            records=len(batch),
            bytes=entry.compressed_bytes,
            key=entry.object_key,
        )

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        # a failed commit (the partition moved) is logged: its next owner finds the range in
        # the manifest and skips it
        await self.commit({tp: offset})

    # --- rebalancing ----------------------------------------------------------------------
    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # waits for an upload in flight (one attempt) to finish
            for tp in revoked:
                dropped = self._batches.pop(tp, None)
                self._streams.pop(tp, None)
                self._close_at.pop(tp, None)
                self._next.pop(tp, None)
                self._unresolved.discard(tp)
                with contextlib.suppress(KeyError):
                    metrics.LAG.remove(*_labels(self._registry, tp))
                if dropped:
                    log.info(
                        "archive_batch_dropped_on_revoke",
                        topic=dropped.topic,
                        partition=tp.partition,
                        records=len(dropped),
                    )

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """No I/O here (heartbeats wait for this callback): hold the partitions; the loop
        decides where each starts (:meth:`_resolve`) and releases it."""
        for tp in assigned:
            self._batches.pop(tp, None)
            self._streams.pop(tp, None)
            self._close_at.pop(tp, None)
            self._next.pop(tp, None)
        self._unresolved |= set(assigned)
        if assigned:
            self.gate.hold(assigned)
        else:
            self.health.set_ready(True, "joined; no partition assigned")

    async def _resolve(self, consumer: AIOKafkaConsumer) -> None:
        tps = sorted(self._unresolved)
        prefix = self.settings.archive.prefix
        try:
            starts = await consumer.beginning_offsets(tps)
            committed = {tp: await consumer.committed(tp) for tp in tps}
            pendings = await asyncio.gather(
                *(
                    asyncio.to_thread(
                        read_pending, self.store, prefix, self._registry[tp.topic], tp.partition
                    )
                    for tp in tps
                )
            )
        except ServiceUnavailable as exc:
            self._store_failed(exc)
            return
        except KafkaError as exc:
            log.warning("archive_resume_failed", error=str(exc))
            return  # the next turn of the loop tries again
        async with self._lock:
            for tp, (pending, listed) in zip(tps, pendings, strict=True):
                if tp not in self._unresolved:
                    continue  # revoked meanwhile
                done = committed[tp]
                if done is not None and done < starts[tp]:
                    done = starts[tp]  # retention removed what was never archived
                point = resume_point(done, starts[tp], pending, listed)
                start = (
                    point.seek_to
                    if point.seek_to is not None
                    else (done if done is not None else starts[tp])
                )
                consumer.seek(tp, max(starts[tp], start - self._context_records(tp)))
                self._next[tp] = start
                if point.seek_to is not None:
                    await self._commit(tp, start)
                if point.close_at is not None:
                    self._close_at[tp] = point.close_at
                if point.reason != "clean":
                    log.info(
                        "archive_resume",
                        topic=self._registry[tp.topic],
                        partition=tp.partition,
                        committed=committed[tp],
                        start=start,
                        reason=point.reason,
                    )
                self._unresolved.discard(tp)
                self.gate.release([tp])
        if not self._unresolved:
            self.health.set_ready(True, f"{len(self._next)} partition(s) assigned")

    # --- reporting ------------------------------------------------------------------------
    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp, next_offset in list(self._next.items()):
            end = consumer.highwater(tp)
            if end is not None:
                metrics.LAG.labels(*_labels(self._registry, tp)).set(max(0, end - next_offset))

    @property
    def _limits(self) -> dict[str, Any]:
        return {
            "max_bytes": self.settings.archive.flush_bytes,
            "max_age_s": self.settings.archive.flush_s,
        }


def _labels(registry: dict[str, str], tp: TopicPartition) -> tuple[str, str]:
    return registry[tp.topic], str(tp.partition)
