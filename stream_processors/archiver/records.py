"""One Kafka record → one archive line: the event's fields, redacted, plus its coordinates.

Never raises for what a record holds: anything that is not a valid chatbus event (bad JSON, JSON
nested too deep, an unknown type, headers without values) is archived as ``invalid`` with its raw
bytes, so one poison message cannot stop the archiver.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from aiokafka import ConsumerRecord

from schemas.archive import archived_record
from schemas.events import ALL_EVENTS
from stream_processors.archiver import metrics
from stream_processors.archiver.redaction import redact_event, redact_text

EVENT_TYPES = frozenset(e.model_fields["type"].default for e in ALL_EVENTS)


def archive_line(
    topic: str, record: ConsumerRecord[bytes, bytes], *, redact: bool, chunks: bool = True
) -> dict[str, Any]:
    """The archive line of ``record`` (of registry topic ``topic``); ``chunks=False`` leaves a
    token chunk's text to :class:`~stream_processors.archiver.stream_redaction.TokenStreamRedactor`,
    which sees the chunks before it."""
    try:
        event = orjson.loads(record.value or b"")
        if not isinstance(event, dict) or event.get("type") not in EVENT_TYPES:
            raise ValueError("not a chatbus event (no known 'type')")
        found = redact_event(event, chunks=chunks) if redact else 0
    except Exception as exc:  # noqa: BLE001 - bad JSON, too deep, …: archived raw
        return raw_line(topic, record, exc, redact=redact)
    if found:
        metrics.REDACTED.labels(topic).inc(found)
    return archived_record(event, **_where(topic, record))


def raw_line(
    topic: str, record: ConsumerRecord[bytes, bytes], reason: BaseException, *, redact: bool
) -> dict[str, Any]:
    """The archive line of a record that is not a valid event, or cannot be written as one
    (nested deeper than the JSON writer goes): its bytes, redacted as text when they are text."""
    metrics.INVALID.labels(topic).inc()
    return archived_record(
        None,
        **_where(topic, record),
        raw_b64=_raw_b64(topic, record.value or b"", redact),
        invalid=f"{type(reason).__name__}: {reason}"[:500],
    )


def _where(topic: str, record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    key = record.key.decode(errors="replace") if record.key is not None else None
    headers = {
        str(name): (value or b"").decode(errors="replace") for name, value in record.headers or ()
    }
    return {
        "topic": topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp_ms": record.timestamp,
        "key": key,
        "headers": headers,
    }


def _raw_b64(topic: str, value: bytes, redact: bool) -> str:
    if redact:
        try:
            text, found = redact_text(value.decode())
        except UnicodeDecodeError:
            pass
        else:
            if found:
                metrics.REDACTED.labels(topic).inc(found)
                value = text.encode()
    return base64.b64encode(value).decode()
