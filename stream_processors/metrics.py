"""Prometheus metrics of the stream processors."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

VERDICTS = Counter(
    "chatbus_moderation_verdicts_total", "Input moderation verdicts", ["stage", "action"]
)
FLAGGED = Counter(
    "chatbus_moderation_flagged_total",
    "Requests flagged, by category (a request can count in several)",
    ["stage", "category"],
)
PII = Counter("chatbus_moderation_pii_spans_total", "Personal data spans found", ["kind"])
CLASSIFY_SECONDS = Histogram(
    "chatbus_moderation_classify_seconds",
    "Time to classify one request (in the executor)",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
OUTPUT_OVERRUN = Histogram(
    "chatbus_moderation_output_overrun_tokens",
    "Tokens that reached the client after the offending output window",
    buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128, 256),
)
