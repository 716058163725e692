"""Producer and consumer factories with chatbus's delivery guarantees."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from chatbus.errors import ServiceUnavailable
from chatbus.settings import Settings


def make_producer(settings: Settings, *, client_id: str | None = None,
                  **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all): retries never duplicate or reorder a partition."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id or settings.kafka_client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 0,
        "request_timeout_ms": 30_000,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(settings: Settings, *topics: str, group_id: str | None,
                  client_id: str | None = None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (after the effect is durable)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "client_id": client_id or settings.kafka_client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_wait_ms": 50,
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def kafka_unavailable(settings: Settings, exc: BaseException) -> ServiceUnavailable:
    """Our error for a broker that cannot be reached, saying what to do."""
    return ServiceUnavailable(
        f"cannot reach Kafka at {settings.kafka_bootstrap} ({exc.__class__.__name__}: {exc}); "
        "start the local services with `make up`, or set CHATBUS_KAFKA_BOOTSTRAP"
    )



async def partitions_of(consumer: AIOKafkaConsumer, *topics: str) -> list[TopicPartition]:
    """Every partition of ``topics`` as the broker has them now (a started consumer that has not
    subscribed knows no metadata yet; missing topics have none)."""
    await consumer._client.force_metadata_update()
    return [TopicPartition(topic, p) for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())]
