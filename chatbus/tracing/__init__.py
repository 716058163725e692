"""Per-stage latency attribution: a W3C ``traceparent`` and per-hop wall-clock stamps travel in
Kafka headers from the gateway through moderation and the worker back to the client, which splits
the request's time to first token into stages (docs/tracing.md)."""

from chatbus.tracing.breakdown import STAGES, Breakdown, IncompleteTrace, Stage, breakdown
from chatbus.tracing.stamps import (
    HOP_ORDER,
    STAMPS_HEADER,
    Hop,
    decode_stamps,
    encode_stamps,
    now_ms,
    out_of_order,
)
from chatbus.tracing.trace import RequestTrace, header_list, header_value, with_trace
from chatbus.tracing.traceparent import (
    TRACEPARENT_HEADER,
    InvalidTraceparent,
    TraceParent,
)

__all__ = [
    "HOP_ORDER",
    "STAGES",
    "STAMPS_HEADER",
    "TRACEPARENT_HEADER",
    "Breakdown",
    "Hop",
    "IncompleteTrace",
    "InvalidTraceparent",
    "RequestTrace",
    "Stage",
    "TraceParent",
    "breakdown",
    "decode_stamps",
    "encode_stamps",
    "header_list",
    "header_value",
    "now_ms",
    "out_of_order",
    "with_trace",
]
