"""W3C Trace Context ``traceparent``: ``00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>``.

https://www.w3.org/TR/trace-context/#traceparent-header. Parsing follows the spec's rules:
lower-case hex only, fixed field lengths, version ``ff`` is invalid, and an all-zero trace-id or
parent-id is invalid. A header that does not parse is not an error of the request: the receiver
starts a new trace (as the spec asks), so callers catch :class:`InvalidTraceparent` and do that.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from chatbus.errors import ChatbusError

TRACEPARENT_HEADER = "traceparent"
SAMPLED = 0x01

_VERSION_00 = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
# A later version may append fields after the flags ("-..."); its first four fields keep the
# version-00 layout, which is what we read.
_FUTURE = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


class InvalidTraceparent(ChatbusError):
    """A ``traceparent`` value is malformed; the receiver starts a new trace instead."""

    def __init__(self, value: str, reason: str) -> None:
        super().__init__(f"invalid traceparent {value[:80]!r}: {reason}")
        self.reason = reason


def new_trace_id() -> str:
    while True:
        trace_id = secrets.token_hex(16)
        if trace_id != _ZERO_TRACE:
            return trace_id


def new_span_id() -> str:
    while True:
        span_id = secrets.token_hex(8)
        if span_id != _ZERO_SPAN:
            return span_id


@dataclass(frozen=True, slots=True)
class TraceParent:
    """One hop's position in a trace: the trace, this hop's span, and the trace flags."""

    trace_id: str
    span_id: str
    flags: int = SAMPLED

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", self.trace_id) or self.trace_id == _ZERO_TRACE:
            raise InvalidTraceparent(
                self.trace_id, "trace-id must be 32 lower-case hex digits, not all zero"
            )
        if not re.fullmatch(r"[0-9a-f]{16}", self.span_id) or self.span_id == _ZERO_SPAN:
            raise InvalidTraceparent(
                self.span_id, "parent-id must be 16 lower-case hex digits, not all zero"
            )
        if not 0 <= self.flags <= 0xFF:
            raise InvalidTraceparent(str(self.flags), "flags must fit in one byte")

    @classmethod
    def new(cls, *, sampled: bool = True) -> TraceParent:
        """The root of a new trace."""
        return cls(new_trace_id(), new_span_id(), SAMPLED if sampled else 0)

    @classmethod
    def parse(cls, value: str | bytes) -> TraceParent:
        """Parse a header value; raises :class:`InvalidTraceparent` saying what is wrong."""
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        text = text.strip()
        match = _VERSION_00.match(text)
        if match is None:
            future = _FUTURE.match(text)
            if future is None:
                raise InvalidTraceparent(text, "expected 00-<32 hex>-<16 hex>-<2 hex>")
            version = future.group(1)
            if version == "00":  # version 00 allows nothing after the flags
                raise InvalidTraceparent(text, "version 00 has exactly four fields")
            if version == "ff":
                raise InvalidTraceparent(text, "version ff is forbidden")
            trace_id, span_id, flags = future.group(2), future.group(3), future.group(4)
        else:
            trace_id, span_id, flags = match.groups()
        if trace_id == _ZERO_TRACE:
            raise InvalidTraceparent(text, "the trace-id is all zeros")
        if span_id == _ZERO_SPAN:
            raise InvalidTraceparent(text, "the parent-id is all zeros")
        return cls(trace_id, span_id, int(flags, 16))

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def child(self) -> TraceParent:
        """The next hop: same trace and flags, a new span id."""
        return TraceParent(self.trace_id, new_span_id(), self.flags)

    def format(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def __str__(self) -> str:
        return self.format()
