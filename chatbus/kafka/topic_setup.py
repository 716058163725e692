"""Create every topic of the registry with its partitions and retention (idempotent)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError

from chatbus.kafka.factories import kafka_unavailable
from chatbus.logging import get_logger
from chatbus.settings import Settings
from schemas.topics import TOPICS

log = get_logger(__name__)


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create the missing topics; returns topic → partition count as the broker has it."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                client_id=f"{settings.kafka_client_id}-admin")
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise kafka_unavailable(settings, exc) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=settings.topic(t.name),
                num_partitions=t.partitions(settings.topic_partitions),
                replication_factor=settings.topic_replication,
                topic_configs={"retention.ms": str(t.retention_ms)},
            )
            for t in TOPICS.values()
            if settings.topic(t.name) not in existing
        ]
        if missing:
            await admin.create_topics(missing)
            log.info("topics_created", topics=[t.name for t in missing])
        described = await admin.describe_topics([settings.topic(t) for t in TOPICS])
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()
