"""Prometheus series shared by several kinds of process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONSUMER_LAG = Gauge(
    "chatbus_consumer_lag_records",
    "Records produced and not yet committed by a consumer group (from the broker)",
    ["group", "topic", "partition"],
)
DEAD_LETTERS = Counter(
    "chatbus_dead_letters_total",
    "Messages a consumer sent to the DLQ (chat.dlq), by consumer and topic",
    ["consumer", "topic"],
)
