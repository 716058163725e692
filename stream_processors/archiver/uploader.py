"""The archiver's writes and reads in the object store: one flush, and a partition's pending range.

A flush writes, in this order, the pending range, the object, and its manifest entry (the caller
commits the offsets afterwards). Every call is one attempt: a store that cannot be reached raises
:class:`~chatbus.errors.ServiceUnavailable` and the caller decides when to try again.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import ValidationError

from chatbus.logging import get_logger
from chatbus.object_store import ObjectStore
from schemas.archive import ManifestEntry, PendingRange, manifest_key, object_key, pending_key
from stream_processors.archiver.batch import PartitionBatch, compress

log = get_logger(__name__)


def upload_batch(
    store: ObjectStore, prefix: str, batch: PartitionBatch, *, redacted: bool
) -> ManifestEntry:
    pending = PendingRange(
        topic=batch.topic,
        partition=batch.partition,
        first_offset=batch.first_offset,
        last_offset=batch.last_offset,
    )
    store.put(
        pending_key(prefix, batch.topic, batch.partition),
        pending.model_dump_json().encode(),
        "application/json",
    )
    body, sha = compress(batch.lines)
    key = object_key(
        prefix,
        batch.topic,
        batch.partition,
        batch.first_offset,
        batch.last_offset,
        batch.first_timestamp_ms,
    )
    store.put(key, body, "application/x-ndjson")
    entry = ManifestEntry(
        topic=batch.topic,
        partition=batch.partition,
        first_offset=batch.first_offset,
        last_offset=batch.last_offset,
        records=len(batch),
        object_key=key,
        compressed_bytes=len(body),
        sha256=sha,
        redacted=redacted,
        archived_at=datetime.now(UTC),
    )
    store.put(
        manifest_key(prefix, batch.topic, batch.partition, batch.first_offset, batch.last_offset),
        entry.model_dump_json().encode(),
        "application/json",
    )
    return entry


def read_pending(
    store: ObjectStore, prefix: str, topic: str, partition: int
) -> tuple[PendingRange | None, bool]:
    """The partition's pending range (None when there is none or it cannot be read as one) and
    whether the manifest lists it."""
    raw = store.get(pending_key(prefix, topic, partition))
    if raw is None:
        return None, False
    try:
        pending = PendingRange.model_validate_json(raw)
    except ValidationError as exc:
        log.warning(
            "archive_pending_unreadable", topic=topic, partition=partition, error=str(exc)[:300]
        )
        return None, False
    listed = (
        store.get(manifest_key(prefix, topic, partition, pending.first_offset, pending.last_offset))
        is not None
    )
    return pending, listed
