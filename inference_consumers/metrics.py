"""Prometheus metrics of an inference worker."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "chatbus_inference_requests_total",
    "Requests finished, by finish reason",
    ["model", "finish_reason"],
)
TOKENS = Counter("chatbus_inference_tokens_total", "Completion tokens generated", ["model"])
CHUNKS = Counter("chatbus_inference_chunks_total", "Token chunks published", ["model"])
INFLIGHT = Gauge("chatbus_inference_inflight", "Requests held by this worker", ["model"])
OCCUPANCY = Gauge(
    "chatbus_inference_batch_occupancy",
    "Share of this worker's batch slots in use (0..1)",
    ["model"],
)
QUEUE_WAIT = Histogram(
    "chatbus_inference_queue_wait_seconds",
    "Time from request publish to worker pickup",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
TTFT = Histogram(
    "chatbus_inference_time_to_first_token_seconds",
    "Time from pickup to the first token published",
    ["model"],
    buckets=_LATENCY_BUCKETS,
)
ITL = Histogram(
    "chatbus_inference_inter_token_seconds",
    "Time between tokens",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
CANCELLATIONS = Counter("chatbus_inference_cancellations_total", "Requests cancelled", ["model"])
FAILOVERS = Counter(
    "chatbus_inference_failovers_total",
    "Requests resumed after another member died or handed them over",
    ["model"],
)
HELD_STREAMS = Counter(
    "chatbus_inference_held_streams_total",
    "Streams held by a rebalance, by how it settled: kept (partition came back), moved "
    "(finished here under its lease) or handed_off",
    ["model", "outcome"],
)
