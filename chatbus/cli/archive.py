"""``chatbus archive verify``: check the event archive in the object store."""

from __future__ import annotations

import asyncio
import sys

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.group()
def archive() -> None:
    """The event archive in the object store."""


@archive.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--no-broker",
    is_flag=True,
    help="Check the manifest and objects only, not coverage of the Kafka log.",
)
def archive_verify(as_json: bool, no_broker: bool) -> None:
    """Check every archived offset is there exactly once (no gap, no overlap); exit 1 if not."""
    import json

    from stream_processors.archiver.verify import broker_positions, verify_archive

    settings = common.settings()
    try:
        broker = None if no_broker else asyncio.run(broker_positions(settings))
        report = verify_archive(settings, broker=broker)
    except ChatbusError as exc:
        common.fail(exc)
        return
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for p in report.partitions:
            mark = click.style("ok  ", fg="green") if p.ok else click.style("FAIL", fg="red")
            span = f"{p.first_offset}..{p.last_offset}" if p.objects else "-"
            click.echo(
                f"{mark} {p.topic}[{p.partition}] objects={p.objects} "
                f"records={p.records} offsets={span} broker={p.broker or '-'}"
            )
            for first, last in p.gaps:
                click.echo(f"     gap: offsets {first}..{last} not archived")
            for one, other in p.overlaps:
                click.echo(f"     overlap: {one} and {other}")
            for key in p.missing_objects:
                click.echo(f"     missing object: {key}")
            for key in p.orphan_objects:
                click.echo(f"     object not in the manifest: {key}")
        click.echo(
            f"{'ok' if report.ok else 'FAILED'}: {report.records} records in "
            f"{sum(p.objects for p in report.partitions)} objects"
        )
    if not report.ok:
        sys.exit(1)
