"""The requests production answered in a time window, read back from the archive.

Replay takes ``chat.requests.approved`` — what passed input moderation and reached the workers —
so the candidate answers exactly what production answered. The archive is a local folder or an
object-store prefix (``s3://BUCKET/PREFIX``; none: the configured archive), laid out as
:mod:`schemas.archive` says. An object's ``dt``/``hour`` is the hour of its first record and an
object holds at most a flush interval of records (seconds), so the objects of the hour before
the window are read too and every record is filtered by its own ``created_at``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from chatbus.errors import ChatbusError
from chatbus.object_store import ObjectStore
from chatbus.settings import Settings
from schemas.archive import OBJECT_SUFFIX, archived_event_fields, parse_object_key
from schemas.events import ChatRequest
from schemas.topics import TopicName

TOPIC = TopicName.REQUESTS_APPROVED.value


class NoArchivedRequests(ChatbusError):
    """The window holds no archived request to replay."""


@dataclass(frozen=True)
class ArchiveLocation:
    """A local folder (``folder``) or a bucket and key prefix."""

    folder: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @classmethod
    def parse(cls, source: str | None, settings: Settings) -> ArchiveLocation:
        """``None`` → the configured archive; ``s3://B/P`` or ``s3a://B/P``; else a folder."""
        if source is None:
            return cls(bucket=settings.s3.bucket, prefix=settings.archive.prefix)
        for scheme in ("s3://", "s3a://"):
            if source.startswith(scheme):
                bucket, _, prefix = source.removeprefix(scheme).partition("/")
                return cls(bucket=bucket, prefix=prefix.strip("/"))
        return cls(folder=Path(source))

    def __str__(self) -> str:
        return str(self.folder) if self.folder else f"s3://{self.bucket}/{self.prefix}"


def _objects(location: ArchiveLocation, settings: Settings) -> Iterator[tuple[str, bytes]]:
    """(key, gzip bytes) of every archived object of the topic, in key order."""
    if location.folder is not None:
        top = location.folder / f"topic={TOPIC}"
        for path in sorted(top.glob(f"dt=*/hour=*/*{OBJECT_SUFFIX}")):
            yield str(path.relative_to(location.folder)), path.read_bytes()
        return
    store = ObjectStore(settings, location.bucket)
    prefix = f"{location.prefix}/" if location.prefix else ""
    for key, _ in store.list(f"{prefix}topic={TOPIC}/"):
        if key.endswith(OBJECT_SUFFIX):
            body = store.get(key)
            if body is not None:
                yield key, body


def _hour_of_key(key: str) -> datetime | None:
    parts = parse_object_key(key)
    if parts is None:
        return None
    return datetime.fromisoformat(f"{parts['dt']}T{parts['hour']}:00:00+00:00")


def archived_requests(
    settings: Settings,
    source: str | None,
    start: datetime,
    end: datetime,
    *,
    limit: int | None = None,
) -> list[ChatRequest]:
    """The approved requests created in ``[start, end)``, each once, oldest first (at most
    ``limit``, the oldest); raises :class:`NoArchivedRequests` saying where it looked."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        raise ChatbusError(f"the window is empty: --to ({end:%FT%T}Z) is not after --from")
    location = ArchiveLocation.parse(source, settings)
    found: dict[str, ChatRequest] = {}
    earliest_hour = start.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    for key, body in _objects(location, settings):
        hour = _hour_of_key(key)
        if hour is None or hour < earliest_hour or hour >= end:
            continue
        for line in gzip.decompress(body).splitlines():
            record = json.loads(line)
            if record.get("invalid") or record.get("type") != "chat.request":
                continue
            try:
                request = ChatRequest.model_validate(archived_event_fields(record))
            except ValidationError:
                continue  # the archive keeps what the bus carried; the DLQ has the rest
            if start <= request.created_at < end:
                found.setdefault(request.request_id, request)
    if not found:
        raise NoArchivedRequests(
            f"no archived request created between {start:%FT%T}Z and {end:%FT%T}Z under "
            f"{location} (topic={TOPIC}/): widen the window, or check the archiver runs "
            "(`chatbus ops status`) and has flushed"
        )
    ordered = sorted(found.values(), key=lambda r: (r.created_at, r.request_id))
    return ordered[:limit] if limit else ordered
