"""``chatbus infra up|down|status``: the local Kafka, Redis, FerretDB and S3 services."""

from __future__ import annotations

import asyncio
import sys

import click

from chatbus.cli import common
from chatbus.cli.pipeline import stop_pipeline
from chatbus.errors import ChatbusError
from chatbus.settings import Settings


@click.group()
def infra() -> None:
    """The local Kafka, Redis, FerretDB and S3 services."""


def _print_status(settings: Settings) -> bool:
    from infra.local import manager

    healthy = True
    for st in manager.status(settings):
        mark = "up  " if st.healthy else ("sick" if st.running else "down")
        healthy &= bool(st.healthy)
        pid = st.pid if st.pid else "-"
        click.echo(f"{mark}  {st.name:10} pid {pid!s:8} {st.address}  {st.detail or ''}")
    return healthy


@infra.command("up")
@click.option("--service", "services", multiple=True, help="Only this service (repeatable).")
def infra_up(services: tuple[str, ...]) -> None:
    """Install what is missing and start the services (idempotent), then create the topics."""
    from chatbus.kafka.topic_setup import ensure_topics
    from infra.local import manager

    settings = common.settings()
    try:
        manager.up(settings, list(services) or None)
        if not services or "kafka" in services:
            asyncio.run(ensure_topics(settings))
    except ChatbusError as exc:
        common.fail(exc)


@infra.command("down")
def infra_down() -> None:
    """Stop every local service and pipeline process this checkout started (by PID)."""
    from infra.local import manager

    settings = common.settings()
    stop_pipeline(settings)
    manager.down(settings)


@infra.command("status")
def infra_status() -> None:
    """Show which services run and are healthy."""
    if not _print_status(common.settings()):
        sys.exit(3)
