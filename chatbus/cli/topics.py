"""``chatbus topics create``: the bus's topics."""

from __future__ import annotations

import asyncio

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.group()
def topics() -> None:
    """The bus's topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic of the registry (idempotent) and list them."""
    from chatbus.kafka.topic_setup import ensure_topics

    try:
        created = asyncio.run(ensure_topics(common.settings()))
    except ChatbusError as exc:
        common.fail(exc)
        return
    for name, partitions in sorted(created.items()):
        click.echo(f"{name:32} {partitions} partition(s)")
