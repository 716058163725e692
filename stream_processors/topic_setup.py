"""Create the app's topics before its worker joins the group.

Faust declares internal (repartition) and changelog topics itself, but concurrently with the
first rebalance; a topic that appears after the assignment is ignored until the next rebalance,
so its agent would sit idle. Creating them (and the registry's topics) first avoids that race.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from chatbus.kafka.factories import kafka_unavailable
from chatbus.kafka.topic_setup import ensure_topics
from chatbus.logging import get_logger
from chatbus.settings import Settings

log = get_logger(__name__)


def app_topics(app: Any) -> dict[str, tuple[int, dict[str, str]]]:
    """Internal agent topics and table changelogs of a Faust app → (partitions, config)."""
    default = int(app.conf.topic_partitions)
    found: dict[str, tuple[int, dict[str, str]]] = {}
    for agent in app.agents.values():
        channel = agent.channel
        if getattr(channel, "internal", False):
            for name in channel.topics:
                found[name] = (channel.partitions or default, {})
    for table in app.tables.values():
        found[table.changelog_topic_name] = (table.partitions or default,
                                             {"cleanup.policy": "compact"})
    return found


async def ensure_app_topics(settings: Settings, app: Any) -> list[str]:
    """Create the registry's and the app's own topics that are missing; returns those created."""
    await ensure_topics(settings)
    wanted = app_topics(app)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap,
                                client_id=f"{settings.kafka_client_id}-admin")
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        await admin.close()
        raise kafka_unavailable(settings, exc) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(name=name, num_partitions=partitions,
                            replication_factor=settings.topic_replication, topic_configs=config)
                   for name, (partitions, config) in sorted(wanted.items())
                   if name not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another member created them meanwhile
            log.info("app_topics_created", topics=[t.name for t in missing])
        return [t.name for t in missing]
    finally:
        await admin.close()


def ensure_app_topics_sync(settings: Settings, app: Any) -> list[str]:
    """:func:`ensure_app_topics` on a private loop (before the Faust worker takes over)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(ensure_app_topics(settings, app))
    finally:
        loop.close()
