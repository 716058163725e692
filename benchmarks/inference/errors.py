"""The benchmark's one error type."""

from __future__ import annotations

from chatbus.errors import ChatbusError


class BenchError(ChatbusError):
    """A system under test could not be started or answered wrongly; the message says which."""
