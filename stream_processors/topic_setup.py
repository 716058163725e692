"""Create the app's topics before its worker joins the group.

Faust declares internal (repartition) and changelog topics itself, but concurrently with the
first rebalance; a topic that appears after the assignment is ignored until the next rebalance,
so its agent would sit idle. Creating them (and the registry's topics) first avoids that race.
"""

from __future__ import annotations

import asyncio
from typing import Any

from chatbus.kafka.topic_setup import admin_client, create_missing, ensure_topics
from chatbus.settings import Settings


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
        found[table.changelog_topic_name] = (
            table.partitions or default,
            {"cleanup.policy": "compact"},
        )
    return found


async def ensure_app_topics(settings: Settings, app: Any) -> list[str]:
    """Create the registry's and the app's own topics that are missing; returns those created."""
    await ensure_topics(settings)
    async with admin_client(settings) as admin:
        return await create_missing(admin, settings, app_topics(app))


def ensure_app_topics_sync(settings: Settings, app: Any) -> list[str]:
    """:func:`ensure_app_topics` on a private loop (before the Faust worker takes over)."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(ensure_app_topics(settings, app))
    finally:
        loop.close()
