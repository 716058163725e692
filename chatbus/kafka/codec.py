"""Events to Kafka records and back."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from chatbus.errors import InvalidEvent
from schemas.events import Event, parse_event

CONTENT_TYPE = b"application/json"


def encode_event(event: BaseModel) -> bytes:
    return event.model_dump_json().encode()


def event_headers(event: BaseModel) -> list[tuple[str, bytes]]:
    return [
        ("content-type", CONTENT_TYPE),
        ("event-type", str(getattr(event, "type", "")).encode()),
        ("schema-version", str(getattr(event, "schema_version", "")).encode()),
    ]


def describe_validation_error(exc: ValidationError) -> str:
    """A short, readable list of what is wrong, naming each field."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def decode_event(topic: str, value: bytes | None, expected: tuple[str, ...] = ()) -> Event:
    """Validate ``value`` as an event of ``topic``; raises :class:`InvalidEvent` with the reason."""
    if value is None:
        raise InvalidEvent(topic, "empty message (tombstone)")
    try:
        event = parse_event(value)
    except ValidationError as exc:
        raise InvalidEvent(topic, describe_validation_error(exc)) from exc
    if expected and event.type not in expected:
        raise InvalidEvent(
            topic,
            f"event type {event.type!r} does not belong on this topic "
            f"(expected {', '.join(expected)})",
        )
    return event
