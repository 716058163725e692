"""Kafka plumbing shared by every component, each piece written once.

* ``factories``, ``codec``, ``publisher``, ``topic_setup``, ``security``: clients, wire format;
* ``consumer_runtime``: the base of every long-lived consumer (lifecycle, poll loop, commits after
  the effect, rebalance hooks, heartbeats), with ``pausing`` (pause/resume on back-pressure) and
  ``backoff`` (the one retry policy);
* ``dlq``: the one route to ``chat.dlq`` and its one counter;
* ``serve``: a process around a consumer (health endpoint, signals, lag reporter); ``lag``,
  ``groups``: consumer-group lag and names.
"""

from chatbus.kafka.codec import decode_event, encode_event, event_headers
from chatbus.kafka.factories import (
    kafka_unavailable,
    kafka_unreachable,
    make_consumer,
    make_producer,
)
from chatbus.kafka.publisher import EventPublisher

__all__ = [
    "EventPublisher",
    "decode_event",
    "encode_event",
    "event_headers",
    "kafka_unavailable",
    "kafka_unreachable",
    "make_consumer",
    "make_producer",
]
