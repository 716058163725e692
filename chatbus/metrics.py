"""Prometheus series shared by several kinds of process."""

from __future__ import annotations

from prometheus_client import Gauge

CONSUMER_LAG = Gauge("chatbus_consumer_lag_records",
                     "Records produced and not yet committed by a consumer group (from the broker)",
                     ["group", "topic", "partition"])
