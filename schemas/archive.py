"""The archive's contract: where each Kafka record lands in the object store, and in what shape.

Layout (one bucket, everything under ``<prefix>/``, default ``archive/``)::

    <prefix>/topic=<topic>/dt=<YYYY-MM-DD>/hour=<HH>/part-<partition:04>-<first:020>-<last:020>.jsonl.gz
    <prefix>/_manifest/topic=<topic>/partition=<partition:04>/<first:020>-<last:020>.json
    <prefix>/_pending/topic=<topic>/partition=<partition:04>.json

* ``topic`` is the registry name (``chat.completions``), without any deployment ``topic_prefix``.
* ``dt``/``hour`` are the UTC hour of the object's **first** record's Kafka timestamp, so Spark and
  pandas see ``topic``, ``dt`` and ``hour`` as partition columns (``spark.read.json(root)``).
* An object holds the records ``first..last`` (inclusive) of one partition, one JSON object per
  line, gzip-compressed. Its key is a function of (topic, partition, first, last, first record's
  hour) alone: re-archiving the same offsets writes the same key.
* A manifest entry (:class:`ManifestEntry`) is written after its object, before the archiver
  commits the offsets: the manifest lists what is archived, and ``chatbus archive verify`` checks
  it has no gap and no overlap.

Each line is an :class:`ArchivedRecord`: the event's own fields at the top level (so
``timings.time_to_first_token_ms`` is a column of ``topic=chat.completions``), plus the Kafka
coordinates in ``kafka_*`` fields (``kafka_headers``: the record's headers as text, when any).
A message that is not a valid event keeps its raw bytes in ``raw_b64`` and the reason in
``invalid``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

ARCHIVE_FORMAT_VERSION = 1
OBJECT_SUFFIX = ".jsonl.gz"

_OBJECT_RE = re.compile(
    r"topic=(?P<topic>[^/]+)/dt=(?P<dt>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/"
    r"part-(?P<partition>\d{4,})-(?P<first>\d{20})-(?P<last>\d{20})\.jsonl\.gz$"
)


def hour_of(timestamp_ms: int) -> datetime:
    """The UTC hour a Kafka timestamp (ms) falls in."""
    moment = datetime.fromtimestamp(timestamp_ms / 1000, tz=UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def object_key(
    prefix: str, topic: str, partition: int, first: int, last: int, first_timestamp_ms: int
) -> str:
    """Key of the object holding offsets ``first..last`` of ``topic``/``partition``."""
    if first < 0 or last < first:
        raise ValueError(f"bad offset range {first}..{last}")
    hour = hour_of(first_timestamp_ms)
    return (
        f"{_clean(prefix)}topic={topic}/dt={hour:%Y-%m-%d}/hour={hour:%H}/"
        f"part-{partition:04d}-{first:020d}-{last:020d}{OBJECT_SUFFIX}"
    )


def parse_object_key(key: str) -> dict[str, Any] | None:
    """(topic, dt, hour, partition, first, last) of an archive object key, None if not one."""
    match = _OBJECT_RE.search(key)
    if not match:
        return None
    parts: dict[str, Any] = match.groupdict()
    for name in ("partition", "first", "last"):
        parts[name] = int(parts[name])
    return parts


def manifest_prefix(prefix: str, topic: str | None = None, partition: int | None = None) -> str:
    """Prefix of the manifest entries (all, one topic's, or one partition's)."""
    out = f"{_clean(prefix)}_manifest/"
    if topic is not None:
        out += f"topic={topic}/"
        if partition is not None:
            out += f"partition={partition:04d}/"
    return out


def manifest_key(prefix: str, topic: str, partition: int, first: int, last: int) -> str:
    return f"{manifest_prefix(prefix, topic, partition)}{first:020d}-{last:020d}.json"


def pending_key(prefix: str, topic: str, partition: int) -> str:
    """The one object saying which range of a partition is being archived right now."""
    return f"{_clean(prefix)}_pending/topic={topic}/partition={partition:04d}.json"


def _clean(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


class ManifestEntry(BaseModel):
    """One archived object: which offsets it holds, how many records, how many bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = ARCHIVE_FORMAT_VERSION
    topic: str
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)
    records: int = Field(ge=1)
    object_key: str
    compressed_bytes: int = Field(ge=0)
    sha256: str
    redacted: bool
    archived_at: datetime


class PendingRange(BaseModel):
    """Written before an object is uploaded: a restart re-archives exactly this range."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str
    partition: int = Field(ge=0)
    first_offset: int = Field(ge=0)
    last_offset: int = Field(ge=0)


KAFKA_FIELDS = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp_ms",
    "kafka_key",
    "kafka_headers",
)


def archived_record(
    event: dict[str, Any] | None,
    *,
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int,
    key: str | None,
    raw_b64: str | None = None,
    invalid: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One line of an archive object: the event's fields plus the Kafka coordinates (and the
    record's headers, e.g. ``traceparent`` and ``chatbus-stamps``, when it had any)."""
    record: dict[str, Any] = dict(event or {})
    record.update(
        kafka_topic=topic,
        kafka_partition=partition,
        kafka_offset=offset,
        kafka_timestamp_ms=timestamp_ms,
        kafka_key=key,
    )
    if headers:
        record["kafka_headers"] = headers
    if invalid is not None:
        record.update(raw_b64=raw_b64, invalid=invalid)
    return record


def archived_event_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The event's own fields of an archived record (the Kafka coordinates and the invalid
    record's ``raw_b64``/``invalid`` left out): ready for the event model to validate."""
    added = {*KAFKA_FIELDS, "raw_b64", "invalid"}
    return {k: v for k, v in record.items() if k not in added}
