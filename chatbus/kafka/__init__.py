"""Thin Kafka plumbing shared by every component: factories, codec, publisher, DLQ, topic setup."""

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
