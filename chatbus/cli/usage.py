"""``chatbus usage report|verify``: what the PostgreSQL usage ledger counted, for operators."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


def _window(start: str | None, end: str) -> tuple[datetime, datetime]:
    from chatbus.accounts.usage import parse_moment

    try:
        until = parse_moment(end, end_of_day=True)
        since = (
            parse_moment(start)
            if start
            else until.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=29)
        )
    except ValueError as exc:
        common.fail(exc)
    if since >= until:
        common.fail(f"--from {since:%Y-%m-%d %H:%M} is not before --to {until:%Y-%m-%d %H:%M}")
    return since, until


@click.group()
def usage() -> None:
    """The usage ledger: tokens per user, key, model and day (UTC), counted exactly once."""


_FROM = click.option(
    "--from",
    "start",
    default=None,
    help="Start: 2026-11-01 or an ISO time (default: 30 days before --to).",
)
_TO = click.option(
    "--to",
    "end",
    default="now",
    show_default=True,
    help="End (exclusive): a day (counted whole), an ISO time, or now.",
)


@usage.command("report")
@_FROM
@_TO
@click.option(
    "--by",
    default="user,model,day",
    show_default=True,
    help="Group by any of user, key, model, day (comma-separated; empty: totals).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def usage_report(start: str | None, end: str, by: str, as_json: bool) -> None:
    """Requests and tokens in a window, grouped as asked."""
    from chatbus.accounts.usage import report

    since, until = _window(start, end)
    groups = tuple(g.strip() for g in by.split(",") if g.strip())
    try:
        rows = report(common.settings(), since, until, groups)
    except (ChatbusError, ValueError) as exc:
        common.fail(exc)
    for row in rows:  # a request sent on the bus directly (chatbus chat, the SDK) has no key
        row.group.update({g: "(none)" for g in groups if not row.group[g]})
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        **row.group,
                        "requests": row.requests,
                        "prompt_tokens": row.prompt_tokens,
                        "completion_tokens": row.completion_tokens,
                        "total_tokens": row.total_tokens,
                    }
                )
            )
        return
    click.secho(f"usage {since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M} UTC", bold=True)
    widths = [max([len(g), *(len(r.group[g]) for r in rows)]) for g in groups]
    header = "  ".join(g.ljust(w) for g, w in zip(groups, widths, strict=True))
    click.echo(f"{header}  {'requests':>9} {'prompt':>10} {'completion':>11} {'total':>11}")
    for r in rows:
        cells = "  ".join(r.group[g].ljust(w) for g, w in zip(groups, widths, strict=True))
        click.echo(
            f"{cells}  {r.requests:>9} {r.prompt_tokens:>10} {r.completion_tokens:>11} "
            f"{r.total_tokens:>11}"
        )
    if not rows:
        click.echo("(no usage in this window)")


@usage.command("verify")
@_FROM
@_TO
@click.option(
    "--input",
    "input_root",
    default=None,
    metavar="ROOT",
    help="Archive root (default: s3a://CHATBUS_S3_BUCKET/CHATBUS_ARCHIVE_PREFIX).",
)
def usage_verify(start: str | None, end: str, input_root: str | None) -> None:
    """Compare the ledger with the archive (the Spark usage job's usage_by_request) over one
    window, request by request; exit 1 on any difference. Give a window that ended at least
    CHATBUS_ARCHIVE_FLUSH_S ago: the archive writes in batches."""
    from analytics.jobs.usage import by_request
    from analytics.spark_session import needs_s3a
    from chatbus.accounts.usage import RequestUsage, reconcile, requests_between
    from chatbus.cli.analytics import _default_input, _with_spark

    settings = common.settings()
    since, until = _window(start, end)
    source = input_root or _default_input(settings)
    try:
        ledger = requests_between(settings, since, until)
    except ChatbusError as exc:
        common.fail(exc)

    def archived(spark: object) -> list[RequestUsage]:
        from analytics.archive_reader import assert_archive
        from schemas.topics import TopicName

        assert_archive(spark, source, TopicName.COMPLETIONS)  # type: ignore[arg-type]
        frame = by_request(spark, source)  # type: ignore[arg-type]
        window = frame.where((frame.completed_at >= since) & (frame.completed_at < until))
        return [
            RequestUsage(
                r.request_id,
                r.completed_at.replace(tzinfo=UTC),
                r.model,
                r.user_id,
                r.key_id,
                int(r.prompt_tokens or 0),
                int(r.completion_tokens or 0),
            )
            for r in window.collect()
        ]

    archive = _with_spark("chatbus-usage-verify", source, needs_s3a(source), archived)
    result = reconcile(ledger, archive)
    click.echo(f"window {since:%Y-%m-%d %H:%M:%S} → {until:%Y-%m-%d %H:%M:%S} UTC")
    click.echo(f"ledger : {result.ledger} requests, {result.ledger_tokens} tokens")
    click.echo(f"archive: {result.archive} requests, {result.archive_tokens} tokens")
    for label, ids in (
        ("only in the ledger", result.only_in_ledger),
        ("only in the archive", result.only_in_archive),
        ("counted differently", result.different),
    ):
        if ids:
            click.secho(
                f"{label}: {len(ids)} ({', '.join(ids[:5])}{' …' if len(ids) > 5 else ''})",
                fg="red",
            )
    if not result.matches:
        raise SystemExit(1)
    click.secho("ledger and archive match", fg="green")
