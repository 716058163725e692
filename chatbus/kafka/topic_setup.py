"""Create every topic of the registry with its partitions and retention (idempotent)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from chatbus.kafka.security import client_options
from chatbus.kafka.startup import start_client
from chatbus.logging import get_logger
from chatbus.settings import Settings
from schemas.topics import TOPICS

log = get_logger(__name__)

TopicSpec = tuple[int, dict[str, str]]  # partitions, topic configs


@asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client; a broker that cannot be reached is our ServiceUnavailable."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap,
        client_id=f"{settings.kafka.client_id}-admin",
        **client_options(settings),
    )
    await start_client(settings, admin)
    try:
        yield admin
    finally:
        await admin.close()


async def create_missing(
    admin: AIOKafkaAdminClient, settings: Settings, wanted: Mapping[str, TopicSpec]
) -> list[str]:
    """Create the topics of ``wanted`` that do not exist yet; returns the names created."""
    existing = set(await admin.list_topics())
    missing = [
        NewTopic(
            name=name,
            num_partitions=partitions,
            replication_factor=settings.kafka.topic_replication,
            topic_configs=config,
        )
        for name, (partitions, config) in sorted(wanted.items())
        if name not in existing
    ]
    if missing:
        try:
            await admin.create_topics(missing)
        except TopicAlreadyExistsError:
            pass  # another process created them meanwhile
        log.info("topics_created", topics=[t.name for t in missing])
    return [t.name for t in missing]


async def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create the missing registry topics; returns topic → partition count as the broker has it."""
    wanted = {
        settings.topic(t.name): (
            t.partitions(settings.kafka.topic_partitions),
            {"retention.ms": str(t.retention_ms)},
        )
        for t in TOPICS.values()
    }
    async with admin_client(settings) as admin:
        await create_missing(admin, settings, wanted)
        described = await admin.describe_topics(list(wanted))
        return {d["topic"]: len(d["partitions"]) for d in described}


async def delete_prefixed_topics(settings: Settings) -> list[str]:
    """Delete every topic under the settings' prefix (a benchmark's or a test's private bus);
    refuses an empty prefix, which would name the whole cluster. Returns the names deleted."""
    prefix = settings.kafka.topic_prefix
    if not prefix:
        raise ValueError("no topic prefix: refusing to delete every topic of the cluster")
    async with admin_client(settings) as admin:
        ours = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if ours:
            await admin.delete_topics(ours)
    return ours
