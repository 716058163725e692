"""Prometheus series of the archiver."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter(
    "chatbus_archive_records_total", "Records archived (uploaded and committed)", ["topic"]
)
OBJECTS = Counter("chatbus_archive_objects_total", "Objects uploaded to the archive", ["topic"])
BYTES = Counter("chatbus_archive_bytes_total", "Compressed bytes uploaded", ["topic"])
REDACTED = Counter(
    "chatbus_archive_redacted_spans_total", "Personal data spans redacted", ["topic"]
)
INVALID = Counter(
    "chatbus_archive_invalid_records_total",
    "Records that were not valid events (archived raw, base64)",
    ["topic"],
)
UPLOAD_SECONDS = Histogram(
    "chatbus_archive_upload_seconds",
    "Time to compress and upload one object with its manifest entry",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
LAG = Gauge(
    "chatbus_archive_lag_records",
    "Records on the broker not archived yet (end offset - committed)",
    ["topic", "partition"],
)
