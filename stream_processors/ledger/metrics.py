"""Prometheus series of the usage ledger."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ROWS = Counter("chatbus_ledger_rows_total", "Completions written to the usage ledger (new rows)")
REPEATS = Counter(
    "chatbus_ledger_repeats_total",
    "Completions read again whose request the ledger already holds (a replay or a failover)",
)
SKIPPED = Counter(
    "chatbus_ledger_skipped_total",
    "Records of chat.completions that are not completions (the history agent dead-letters them)",
)
WRITE_SECONDS = Histogram(
    "chatbus_ledger_write_seconds",
    "Time of one ledger transaction (rows, months and offsets)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LAG = Gauge(
    "chatbus_ledger_lag_records",
    "Completions on the broker not in the ledger yet (end offset - next offset to write)",
    ["partition"],
)
