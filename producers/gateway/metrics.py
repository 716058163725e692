"""Prometheus metrics of the gateway (served on ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "chatbus_gateway_requests_total",
    "HTTP requests answered, by route and status",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "chatbus_gateway_request_seconds",
    "Time from request to the last byte of the answer (streams included)",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
STREAMS = Gauge("chatbus_gateway_open_streams", "Answers being streamed right now")
DISCONNECTS = Counter(
    "chatbus_gateway_client_disconnects_total",
    "Streams the client left before the end (cancelled on chat.control)",
)
RATE_LIMITED = Counter("chatbus_gateway_rate_limited_total", "Requests refused with 429", ["kind"])
STAGE_LATENCY = Histogram(
    "chatbus_stage_latency_seconds",
    "Time to first token of a chat request by stage (gateway, bus, moderation, queue, prefill, "
    "delivery), from the per-hop stamps of its trace; a stage made negative by clock skew "
    "between hosts counts as 0",
    ["stage"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
for _stage in ("gateway", "bus", "moderation", "queue", "prefill", "delivery"):
    STAGE_LATENCY.labels(_stage)  # every stage's series exists from the start
FALLBACKS = Counter(
    "chatbus_gateway_store_fallbacks_total",
    "Requests served on a fallback because a store was out of reach (rate limits in memory "
    "while Redis is down)",
    ["store", "what"],
)
