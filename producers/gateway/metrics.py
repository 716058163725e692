"""Prometheus metrics of the gateway (served on ``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter("chatbus_gateway_requests_total", "HTTP requests answered, by route and status",
                   ["method", "route", "status"])
LATENCY = Histogram("chatbus_gateway_request_seconds",
                    "Time from request to the last byte of the answer (streams included)",
                    ["method", "route"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
STREAMS = Gauge("chatbus_gateway_open_streams", "Answers being streamed right now")
DISCONNECTS = Counter("chatbus_gateway_client_disconnects_total",
                      "Streams the client left before the end (cancelled on chat.control)")
RATE_LIMITED = Counter("chatbus_gateway_rate_limited_total", "Requests refused with 429",
                       ["kind"])
