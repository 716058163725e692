"""The trace of one request as it crosses hops: its ``traceparent`` and its stamps, to and from
Kafka headers.

Each hop that handles the request continues the trace with :meth:`RequestTrace.next_hop` (a new
span of the same trace, the stamps so far), stamps what it does, and publishes with
:func:`with_trace` (the message's other headers kept, the trace headers replaced).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from chatbus.tracing.breakdown import Breakdown, IncompleteTrace, breakdown
from chatbus.tracing.stamps import (
    STAMPS_HEADER,
    Hop,
    decode_stamps,
    encode_stamps,
    merge,
    now_ms,
    ordered,
)
from chatbus.tracing.traceparent import TRACEPARENT_HEADER, InvalidTraceparent, TraceParent

Headers = Iterable[tuple[str, bytes]] | Mapping[str, bytes] | None
TRACE_HEADERS = frozenset({TRACEPARENT_HEADER, STAMPS_HEADER})


def header_value(headers: Headers, name: str) -> bytes | None:
    """The last value of header ``name`` (Kafka headers are a list; names may repeat)."""
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    found = None
    for key, value in items:
        if key == name:
            found = value
    return found


@dataclass
class RequestTrace:
    """This hop's span of a request's trace, and every stamp taken so far (epoch ms)."""

    parent: TraceParent
    stamps: dict[str, float] = field(default_factory=dict)
    upstream: TraceParent | None = None  # the span of the hop we continued from, if any
    replied_by: TraceParent | None = None  # client side: the span of the first chunk's sender

    @property
    def trace_id(self) -> str:
        return self.parent.trace_id

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def begin(
        cls, incoming: str | bytes | None = None, *, received_ms: float | None = None
    ) -> RequestTrace:
        """The first hop: continue a caller's ``traceparent`` if it is valid, else a new trace;
        stamps ``received`` (now, or ``received_ms``)."""
        upstream = _parse(incoming)
        parent = upstream.child() if upstream is not None else TraceParent.new()
        trace = cls(parent, upstream=upstream)
        trace.stamp(Hop.RECEIVED, received_ms)
        return trace

    @classmethod
    def from_headers(cls, headers: Headers) -> RequestTrace | None:
        """The trace as a message carries it (same span), or None when it carries none."""
        upstream = _parse(header_value(headers, TRACEPARENT_HEADER))
        stamps = decode_stamps(header_value(headers, STAMPS_HEADER))
        if upstream is None and not stamps:
            return None
        return cls(upstream or TraceParent.new(), stamps)

    @classmethod
    def next_hop(cls, headers: Headers) -> RequestTrace:
        """A hop that consumed a message: a child span of the message's trace, its stamps kept
        (a message without a trace starts one)."""
        carried = cls.from_headers(headers)
        if carried is None:
            return cls(TraceParent.new())
        return cls(carried.parent.child(), dict(carried.stamps), upstream=carried.parent)

    # --- stamping ------------------------------------------------------------------------------
    def stamp(self, hop: Hop, at_ms: float | None = None) -> float:
        """Record ``hop`` now (or at ``at_ms``), replacing an earlier stamp of it."""
        value = now_ms() if at_ms is None else round(at_ms, 3)
        self.stamps[hop.value] = value
        return value

    def absorb(self, headers: Headers) -> TraceParent | None:
        """Take the stamps a message carries that we lack; returns its span (if valid)."""
        merge(self.stamps, decode_stamps(header_value(headers, STAMPS_HEADER)).items())
        return _parse(header_value(headers, TRACEPARENT_HEADER))

    # --- reading -------------------------------------------------------------------------------
    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (TRACEPARENT_HEADER, self.parent.format().encode()),
            (STAMPS_HEADER, encode_stamps(self.stamps)),
        ]

    def ordered(self) -> list[tuple[Hop, float]]:
        return ordered(self.stamps)

    def breakdown(self) -> Breakdown | None:
        """The stages, when every stamp they need is there."""
        try:
            return breakdown(self.stamps)
        except IncompleteTrace:
            return None


def header_list(headers: Headers) -> list[tuple[str, bytes]]:
    """Kafka headers as a list of pairs, whichever form a client library gives them in."""
    return list(headers.items()) if isinstance(headers, Mapping) else list(headers or ())


def with_trace(headers: Headers, trace: RequestTrace) -> list[tuple[str, bytes]]:
    """``headers`` with their trace headers replaced by ``trace``'s (the others kept, in order)."""
    return [(k, v) for k, v in header_list(headers) if k not in TRACE_HEADERS] + trace.headers()


def _parse(value: str | bytes | None) -> TraceParent | None:
    if not value:
        return None
    try:
        return TraceParent.parse(value)
    except InvalidTraceparent:
        return None
