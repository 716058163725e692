"""The archiver: consume every registry topic, upload batches to the object store, then commit.

Nothing lost: offsets are committed only after the object and its manifest entry are stored.
Nothing twice: an object's key is a function of its offsets (:mod:`schemas.archive`), a *pending*
range is written before each upload, and a restarted or newly assigned member resumes as
:mod:`.resume` decides — re-archiving exactly an unfinished range under the same key, or skipping a
finished one whose commit was lost.

A partition's batch is flushed when it reaches ``archive_flush_bytes`` or has waited
``archive_flush_s`` (whichever first), when its partition is revoked (dropped instead: the next
owner re-reads it from the committed offset), and when the archiver stops (SIGTERM flushes all).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from chatbus.errors import ServiceUnavailable
from chatbus.health import Health
from chatbus.kafka.factories import make_consumer
from chatbus.logging import get_logger
from chatbus.object_store import ObjectStore
from chatbus.settings import Settings
from schemas.archive import (
    ManifestEntry,
    PendingRange,
    archived_record,
    manifest_key,
    object_key,
    pending_key,
)
from schemas.events import ALL_EVENTS
from schemas.topics import TopicName
from stream_processors.archiver import metrics
from stream_processors.archiver.batch import PartitionBatch, compress
from stream_processors.archiver.redaction import redact_event, redact_text
from stream_processors.archiver.resume import resume_point

log = get_logger(__name__)

EVENT_TYPES = frozenset(e.model_fields["type"].default for e in ALL_EVENTS)
_RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, archiver: Archiver) -> None:
        self.archiver = archiver

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.archiver._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.archiver._on_assigned(assigned)


class Archiver:
    """One member of the archiver group. ``start()``/``stop()`` are idempotent."""

    def __init__(self, settings: Settings, *, health: Health | None = None,
                 store: ObjectStore | None = None) -> None:
        self.settings = settings
        self.health = health or Health("archiver")
        self.store = store or ObjectStore(settings)
        self.group = settings.topic(settings.archive_group)
        self._registry = {settings.topic(t.value): t.value for t in TopicName}
        self._batches: dict[TopicPartition, PartitionBatch] = {}
        self._close_at: dict[TopicPartition, int] = {}
        self._next: dict[TopicPartition, int] = {}  # first offset not yet archived
        self._lock = asyncio.Lock()  # batches and uploads vs. the rebalance callbacks
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.archived_records = 0

    # --- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._consumer is not None:
            return
        consumer = make_consumer(self.settings, group_id=self.group,
                                 client_id="chatbus-archiver", max_poll_records=5000,
                                 fetch_max_wait_ms=200,
                                 session_timeout_ms=self.settings.session_timeout_ms,
                                 heartbeat_interval_ms=self.settings.heartbeat_interval_ms)
        consumer.subscribe(topics=sorted(self._registry), listener=_Rebalance(self))
        self._consumer = consumer  # the first assignment may arrive while start() runs
        try:
            await consumer.start()
        except KafkaError as exc:
            self._consumer = None
            await consumer.stop()
            raise ServiceUnavailable(
                f"archiver cannot reach Kafka at {self.settings.kafka_bootstrap} ({exc}); "
                "start the local services with `make up`, or set CHATBUS_KAFKA_BOOTSTRAP"
            ) from exc
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="archiver")
        log.info("archiver_started", group=self.group, topics=sorted(self._registry.values()),
                 bucket=self.store.bucket, prefix=self.settings.archive_prefix,
                 redact=self.settings.archive_redact)

    async def stop(self) -> None:
        """Flush every batch (upload, then commit) and leave the group."""
        if self._consumer is None:
            return
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            async with self._lock:
                for tp in list(self._batches):
                    if tp in self._close_at:  # an unfinished re-archive: the next run redoes it
                        self._batches.pop(tp)
                    else:
                        await self._flush(tp)
        except ServiceUnavailable as exc:
            log.error("archive_final_flush_failed", error=str(exc),
                      hint="the unarchived records stay uncommitted; a restart re-reads them")
        finally:
            consumer, self._consumer, self._task = self._consumer, None, None
            await consumer.stop()
            self.health.forget("consume")
            self.health.set_ready(False, "stopped")
            log.info("archiver_stopped", archived_records=self.archived_records)

    async def __aenter__(self) -> Archiver:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while not self._stopping.is_set():
            self.health.beat("consume")
            fetched = await consumer.getmany(timeout_ms=200, max_records=5000)
            async with self._lock:
                for tp, records in fetched.items():
                    for record in records:
                        await self._add(tp, record)
                now, limits = time.monotonic(), self._limits
                for tp, batch in list(self._batches.items()):
                    if tp not in self._close_at and batch.due(**limits, now=now):
                        await self._flush(tp)
            self._report_lag(consumer)

    async def _add(self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes]) -> None:
        close_at = self._close_at.get(tp)
        batch = self._batches.get(tp)
        if close_at is not None and batch and record.offset > close_at:
            await self._flush(tp)  # the pending range ended in a gap of the log
            batch = None
        if batch is None:
            batch = self._batches[tp] = PartitionBatch(self._registry[tp.topic], tp.partition)
        batch.add(record.offset, record.timestamp, self._archived(batch.topic, record))
        if close_at is not None:  # re-archiving a pending range: only its own end closes it
            if record.offset >= close_at:
                await self._flush(tp)
        elif batch.size >= self.settings.archive_flush_bytes:
            await self._flush(tp)

    def _archived(self, topic: str, record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
        key = record.key.decode(errors="replace") if record.key is not None else None
        headers = {name: value.decode(errors="replace") for name, value in record.headers or ()}
        where = {"topic": topic, "partition": record.partition, "offset": record.offset,
                 "timestamp_ms": record.timestamp, "key": key, "headers": headers}
        value = record.value or b""
        try:
            event = json.loads(value)
            if not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
                raise ValueError("not a chatbus event (no known 'type')")
        except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            metrics.INVALID.labels(topic).inc()
            return archived_record(None, **where, raw_b64=self._raw_b64(topic, value),
                                   invalid=str(exc)[:500])
        if self.settings.archive_redact:
            found = redact_event(event)
            if found:
                metrics.REDACTED.labels(topic).inc(found)
        return archived_record(event, **where)

    def _raw_b64(self, topic: str, value: bytes) -> str:
        if self.settings.archive_redact:
            try:
                text, found = redact_text(value.decode())
            except UnicodeDecodeError:
                pass
            else:
                if found:
                    metrics.REDACTED.labels(topic).inc(found)
                    value = text.encode()
        return base64.b64encode(value).decode()

    # --- flushing -------------------------------------------------------------------------
    async def _flush(self, tp: TopicPartition) -> None:
        """Upload ``tp``'s batch (pending range, object, manifest entry), then commit it."""
        batch = self._batches.pop(tp, None)
        if not batch:
            return
        started = time.perf_counter()
        entry = await self._upload_with_retry(batch)
        metrics.UPLOAD_SECONDS.observe(time.perf_counter() - started)
        if self._close_at.get(tp) is not None and batch.last_offset >= self._close_at[tp]:
            del self._close_at[tp]
        self._next[tp] = batch.last_offset + 1
        await self._commit(tp, batch.last_offset + 1)
        self.archived_records += len(batch)
        metrics.RECORDS.labels(batch.topic).inc(len(batch))
        metrics.OBJECTS.labels(batch.topic).inc()
        metrics.BYTES.labels(batch.topic).inc(entry.compressed_bytes)
        log.info("archived", topic=batch.topic, partition=batch.partition,
                 first=batch.first_offset, last=batch.last_offset, records=len(batch),
                 bytes=entry.compressed_bytes, key=entry.object_key)

    async def _upload_with_retry(self, batch: PartitionBatch) -> ManifestEntry:
        attempt = 0
        while True:
            try:
                entry = await asyncio.to_thread(self._upload, batch)
            except ServiceUnavailable as exc:
                attempt += 1
                if self._stopping.is_set() and attempt > 3:
                    raise  # stopping: the batch stays uncommitted, a restart re-reads it
                delay = _RETRY_S[min(attempt - 1, len(_RETRY_S) - 1)]
                self.health.set_ready(False, f"object store unavailable: {exc}")
                log.warning("archive_upload_failed", error=str(exc), retry_in_s=delay,
                            topic=batch.topic, partition=batch.partition)
                self.health.beat("consume")
                await asyncio.sleep(delay)
                continue
            self.health.set_ready(True)
            return entry

    def _upload(self, batch: PartitionBatch) -> ManifestEntry:
        prefix = self.settings.archive_prefix
        pending = PendingRange(topic=batch.topic, partition=batch.partition,
                               first_offset=batch.first_offset, last_offset=batch.last_offset)
        self.store.put(pending_key(prefix, batch.topic, batch.partition),
                       pending.model_dump_json().encode(), "application/json")
        body, sha = compress(batch.lines)
        key = object_key(prefix, batch.topic, batch.partition, batch.first_offset,
                         batch.last_offset, batch.first_timestamp_ms)
        self.store.put(key, body, "application/x-ndjson")
        entry = ManifestEntry(topic=batch.topic, partition=batch.partition,
                              first_offset=batch.first_offset, last_offset=batch.last_offset,
                              records=len(batch), object_key=key, compressed_bytes=len(body),
                              sha256=sha, redacted=self.settings.archive_redact,
                              archived_at=datetime.now(UTC))
        self.store.put(manifest_key(prefix, batch.topic, batch.partition, batch.first_offset,
                                    batch.last_offset),
                       entry.model_dump_json().encode(), "application/json")
        return entry

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        if self._consumer is None:
            return
        try:
            await self._consumer.commit({tp: offset})
        except KafkaError as exc:
            # the partition moved: its next owner finds the range in the manifest and skips it
            log.warning("archive_commit_failed", topic=tp.topic, partition=tp.partition,
                        offset=offset, error=str(exc))

    # --- rebalancing ----------------------------------------------------------------------
    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._lock:  # waits for an upload in flight to finish
            for tp in revoked:
                dropped = self._batches.pop(tp, None)
                self._close_at.pop(tp, None)
                self._next.pop(tp, None)
                with contextlib.suppress(KeyError):
                    metrics.LAG.remove(*_labels(self._registry, tp))
                if dropped:
                    log.info("archive_batch_dropped_on_revoke", topic=dropped.topic,
                             partition=tp.partition, records=len(dropped))

    async def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Resume each partition where :func:`resume_point` says; an object store that cannot
        be read is waited for (consuming before knowing the pending ranges could overlap)."""
        attempt = 0
        while True:
            try:
                await self._resume(assigned)
                return
            except ServiceUnavailable as exc:
                delay = _RETRY_S[min(attempt, len(_RETRY_S) - 1)]
                attempt += 1
                self.health.set_ready(False, f"object store unavailable: {exc}")
                log.warning("archive_resume_failed", error=str(exc), retry_in_s=delay)
                self.health.beat("consume")
                await asyncio.sleep(delay)

    async def _resume(self, assigned: set[TopicPartition]) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        if assigned:
            starts = await consumer.beginning_offsets(list(assigned))
        for tp in sorted(assigned):
            committed = await consumer.committed(tp)
            topic = self._registry[tp.topic]
            raw = await asyncio.to_thread(
                self.store.get, pending_key(self.settings.archive_prefix, topic, tp.partition))
            pending = PendingRange.model_validate_json(raw) if raw else None
            listed = pending is not None and await asyncio.to_thread(
                self.store.get, manifest_key(self.settings.archive_prefix, topic, tp.partition,
                                             pending.first_offset, pending.last_offset)
            ) is not None
            point = resume_point(committed, starts[tp], pending, listed)
            self._next[tp] = committed if committed is not None else starts[tp]
            if point.seek_to is not None:
                consumer.seek(tp, point.seek_to)
                self._next[tp] = point.seek_to
                await self._commit(tp, point.seek_to)
            if point.close_at is not None:
                self._close_at[tp] = point.close_at
            if point.reason != "clean":
                log.info("archive_resume", topic=topic, partition=tp.partition,
                         committed=committed, reason=point.reason)
        self.health.set_ready(True, f"{len(assigned)} partition(s) assigned")

    def _report_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp, next_offset in list(self._next.items()):
            end = consumer.highwater(tp)
            if end is not None:
                metrics.LAG.labels(*_labels(self._registry, tp)).set(max(0, end - next_offset))

    @property
    def _limits(self) -> dict[str, Any]:
        return {"max_bytes": self.settings.archive_flush_bytes,
                "max_age_s": self.settings.archive_flush_s}

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._consumer.assignment()) if self._consumer else set()


def _labels(registry: dict[str, str], tp: TopicPartition) -> tuple[str, str]:
    return registry[tp.topic], str(tp.partition)

