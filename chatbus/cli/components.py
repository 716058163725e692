"""``chatbus worker|gateway|processors|archiver|ledger``: run one long-lived component until
SIGTERM."""

from __future__ import annotations

import click

from chatbus.cli import common


@click.command()
def worker() -> None:
    """Run an inference worker (one consumer-group member) until SIGTERM."""
    from inference_consumers.serve import run_worker

    common.serve("inference", run_worker)


@click.command()
@click.option("--host", default=None, help="Listen address (default: CHATBUS_GATEWAY_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: CHATBUS_GATEWAY_PORT).")
def gateway(host: str | None, port: int | None) -> None:
    """Run the OpenAI-compatible HTTP gateway until SIGTERM."""
    from producers.gateway import run_gateway

    settings = common.settings()
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["gateway_host"] = host
    if port is not None:
        overrides["gateway_port"] = port
    common.serve("gateway", run_gateway, settings.replace(**overrides))


@click.command()
def processors() -> None:
    """Run the stream processors (Faust app: moderation, history) until SIGTERM."""
    from stream_processors.serve import run_processors

    common.serve("processors", run_processors)


@click.command()
def archiver() -> None:
    """Archive every chat.* event to the object store until SIGTERM (then flush and leave)."""
    from stream_processors.archiver.serve import run_archiver

    common.serve("archiver", run_archiver)


@click.command()
def ledger() -> None:
    """Write every completion's usage to the PostgreSQL ledger, exactly once, until SIGTERM."""
    from stream_processors.ledger.serve import run_ledger

    common.serve("ledger", run_ledger)
