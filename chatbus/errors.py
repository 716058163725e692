"""The one error hierarchy of chatbus.

ChatbusError
 ├── ConfigurationError     a setting is wrong or a port is taken: fix the setting and retry
 ├── ServiceUnavailable     a dependency (Kafka, Redis, MongoDB, S3) is unreachable [retriable]
 ├── InvalidEvent            bytes on a topic are not a valid event: they go to the DLQ
 └── EngineError             (inference_consumers.engine) the model could not run a request

``retriable`` decides retry versus dead-letter: a retriable error is retried with backoff, any other
error is reported (an error event, an HTTP 4xx, or a DLQ record) and processing continues.
"""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class ChatbusError(Exception):
    """Base of every error chatbus raises on purpose."""

    retriable: bool = False


class ConfigurationError(ChatbusError):
    """A setting is wrong; the message names the setting to change."""


class ServiceUnavailable(ChatbusError):
    """A dependency cannot be reached right now; retrying later may succeed."""

    retriable = True


class InvalidEvent(ChatbusError):
    """A message is not a valid event of its topic."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"invalid event on {topic}: {reason}")
        self.topic = topic
        self.reason = reason


def require_started(value: T | None, component: str) -> T:
    """``value``, which ``component`` sets when it starts: using it before is a programming
    error (an ``AssertionError``, not one of the errors above)."""
    assert value is not None, f"the {component} is not started"
    return value
