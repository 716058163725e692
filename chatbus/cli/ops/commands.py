"""``chatbus ops topics|lag|status|scale|drain`` (registered on the main command)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from chatbus.cli.common import fail as _fail
from chatbus.cli.common import run_async as _run
from chatbus.errors import ChatbusError
from chatbus.polling import poll_until
from chatbus.settings import Settings, get_settings


@click.group()
def ops() -> None:
    """What an SRE runs: topics, consumer lag, component status, scaling and draining."""


@ops.command("topics")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ops_topics(as_json: bool) -> None:
    """The bus's topics as the broker has them: partitions, replicas, retention."""
    from chatbus.cli.ops.topics import describe_topics

    topics = _run(describe_topics(get_settings()))
    if as_json:
        click.echo(json.dumps([_topic_dict(t) for t in topics], indent=2))
        return
    click.echo(f"{'topic':32} {'partitions':>10} {'replicas':>8} {'retention':>10}  flow")
    for t in topics:
        if t.partitions is None:
            click.secho(f"{t.name:32} {'MISSING':>10}  create it: chatbus topics create", fg="red")
            continue
        retention = f"{t.retention_ms / 3_600_000:.0f} h" if t.retention_ms else "-"
        click.echo(
            f"{t.name:32} {t.partitions:>10} {t.replication:>8} {retention:>10}  {t.description}"
        )


def _topic_dict(t: object) -> dict[str, object]:
    return {
        name: getattr(t, name)
        for name in ("name", "partitions", "replication", "retention_ms", "description")
    }


@ops.command("lag")
@click.option(
    "--group",
    "groups",
    multiple=True,
    help="Only this consumer group (repeatable); default: every group of the deployment.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON: one object per partition.")
def ops_lag(groups: tuple[str, ...], as_json: bool) -> None:
    """Lag per consumer group and partition, from the broker: end offset minus committed."""
    from chatbus.kafka.lag import group_lag

    rows = _run(group_lag(get_settings(), list(groups) or None))
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no consumer groups with committed offsets or members yet")
        return
    click.echo(f"{'group':44} {'topic':28} {'part':>4} {'end':>9} {'committed':>9} {'lag':>7}")
    for r in rows:
        committed = "-" if r.committed is None else str(r.committed)
        click.echo(
            f"{r.group:44} {r.topic:28} {r.partition:>4} {r.end_offset:>9} "
            f"{committed:>9} {r.lag:>7}"
        )
    for group in sorted({r.group for r in rows}):
        click.echo(f"total lag of {group}: {sum(r.lag for r in rows if r.group == group)}")


@ops.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ops_status(as_json: bool) -> None:
    """Every component, healthy or not: local services, the supervisor, each replica's /readyz.
    Exits 1 when something is unhealthy."""
    from chatbus.cli.ops.status import collect_status

    report = collect_status(get_settings())
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        for row in report["components"]:
            mark = (
                click.style("ok  ", fg="green") if row["healthy"] else click.style("DOWN", fg="red")
            )
            click.echo(f"{mark} {row['name']:14} {row['kind']:9} {row['detail']}")
    if not report["healthy"]:
        sys.exit(1)


@ops.command("scale")
@click.argument("component")
@click.option("--replicas", type=click.IntRange(min=0), required=True)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until the replicas run and are ready.",
)
@click.option("--timeout", type=float, default=300.0, show_default=True)
def ops_scale(component: str, replicas: int, wait: bool, timeout: float) -> None:
    """Run REPLICAS processes of COMPONENT (worker, worker@<model>, archiver, ledger) under the
    local supervisor; the group rebalances."""
    from infra.local import supervisor

    settings = get_settings()
    scalable = [
        "worker",
        *(supervisor.model_worker(m) for m in settings.local_model_names[1:]),
        "archiver",
        "ledger",
    ]
    if component not in scalable:
        _fail(
            f"cannot scale {component!r}: scalable components are {', '.join(scalable)} "
            "(a further model is added with CHATBUS_LOCAL_MODELS)"
        )
    require_supervisor(settings, "kubectl scale / KEDA")
    _warn_over_partitions(settings, component, replicas)
    before = supervisor.read_desired(settings).count(component)
    supervisor.update_desired(settings, lambda d: d.scaled(component, replicas))
    click.echo(f"{component}: {before} → {replicas} replica(s)")
    if wait:
        try:
            ready = wait_ready(settings, component, replicas, timeout)
        except TimeoutError as exc:
            _fail(exc)
        click.echo(
            f"{component}: {replicas} replica(s) running and ready: {', '.join(ready) or '-'}"
        )


@ops.command("drain")
@click.argument("replica")
@click.option("--timeout", type=float, default=120.0, show_default=True)
def ops_drain(replica: str, timeout: float) -> None:
    """Drain REPLICA (e.g. worker-2): it stops taking work, finishes its streams, leaves its group
    and is not replaced (its component runs one replica fewer)."""
    from infra.local import supervisor

    settings = get_settings()
    status = supervisor.read_status(settings)
    row = status.get(replica)
    if row is None or row.get("state") != "running":
        running = ", ".join(n for n, r in status.items() if r.get("state") == "running")
        _fail(f"no running replica {replica!r}; running: {running or 'none'}")
        return
    component = supervisor.component_of(replica)
    if not supervisor.spec_of(component).scalable:
        _fail(f"{replica} is the only {component}; stop the pipeline instead (make down)")
    supervisor.update_desired(settings, lambda d: d.retiring(replica))
    click.echo(f"draining {replica} (pid {row.get('pid')}): no new work, finishing in-flight")
    try:
        code = wait_left(settings, replica, timeout)
    except TimeoutError as exc:
        _fail(exc)
    click.echo(f"{replica} drained and left (exit status {code})")
    if code not in (0, None):
        _fail(f"{replica} did not exit cleanly; see {settings.log_dir / replica}.log")


def require_supervisor(settings: Settings, elsewhere: str) -> None:
    """End the command unless the local supervisor runs (``elsewhere``: what to use instead on
    Kubernetes)."""
    from infra.local import process

    if process.running_pid(settings, "supervisor") is None:
        _fail(
            "the local supervisor is not running: start the pipeline with `make run` or "
            f"`chatbus pipeline up` (on Kubernetes: {elsewhere}, see docs/runbook.md)"
        )


def _warn_over_partitions(settings: Settings, component: str, replicas: int) -> None:
    from chatbus.cli.ops.topics import describe_topics

    if not component.startswith("worker"):
        return
    try:
        topics = {t.name: t for t in asyncio.run(describe_topics(settings))}
    except ChatbusError:
        return
    info = topics.get(settings.topic(settings.worker.input_topic))
    if info and info.partitions is not None and replicas > info.partitions:
        click.secho(
            f"warning: {replicas} workers but {info.name} has {info.partitions} "
            f"partitions: {replicas - info.partitions} worker(s) will sit idle. Add "
            "partitions (CHATBUS_TOPIC_PARTITIONS for new topics) to use them.",
            fg="yellow",
            err=True,
        )


def wait_ready(settings: Settings, component: str, replicas: int, timeout: float) -> list[str]:
    """Wait until exactly ``replicas`` replicas of ``component`` run and answer /readyz; their
    names. Raises TimeoutError saying how far it got."""
    from chatbus.cli.ops.probes import probe
    from infra.local import supervisor

    seen: dict[str, Any] = {"rows": {}, "ready": []}

    def all_ready() -> tuple[list[str]] | None:
        status = supervisor.read_status(settings)
        rows = {
            n: r
            for n, r in status.items()
            if r.get("component") == component and r.get("state") != "stopped"
        }
        running = [n for n, r in rows.items() if r.get("state") == "running"]
        ready = [n for n in running if probe("127.0.0.1", int(rows[n]["port"])).ok]  # type: ignore[call-overload]
        seen.update(rows=rows, ready=ready)
        return (ready,) if len(rows) == replicas and len(ready) == replicas else None

    try:
        (ready,) = poll_until(
            all_ready,
            timeout_s=timeout,
            interval=0.5,
            what=f"{replicas} {component} replica(s) ready",
        )
    except TimeoutError:
        raise TimeoutError(
            f"{component}: {len(seen['ready'])}/{replicas} ready after {timeout:.0f} s "
            f"(replicas: {seen['rows']}); see {settings.log_dir}"
        ) from None
    return sorted(ready)


def wait_left(settings: Settings, replica: str, timeout: float) -> int | None:
    """Wait until ``replica``, retired, has finished its work and exited; its exit status (None
    when unknown). Raises TimeoutError while it still drains."""
    from infra.local import supervisor

    def left() -> tuple[int | None] | None:
        """(exit status,) once the replica has left, None while it drains."""
        row = supervisor.read_status(settings).get(replica)
        if row is None or row.get("state") not in ("running", "stopping"):
            code = None if row is None else row.get("last_exit")
            return (code if isinstance(code, int) else None,)
        return None

    try:
        (code,) = poll_until(left, timeout_s=timeout, interval=0.25, what=f"{replica} to leave")
    except TimeoutError:
        raise TimeoutError(
            f"{replica} still draining after {timeout:.0f} s; see "
            f"{settings.log_dir / (replica + '.log')}"
        ) from None
    return code


@ops.group("dlq")
def ops_dlq() -> None:
    """The dead-letter queue (chat.dlq): what is in it, and republishing what can be fixed."""


@ops_dlq.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print every dead letter as JSON.")
def ops_dlq_list(as_json: bool) -> None:
    """Count the dead letters by consumer, original topic and reason."""
    from chatbus.cli.ops.dlq import read_letters, summarise

    letters = _run(read_letters(get_settings()))
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "dlq_partition": i.partition,
                        "dlq_offset": i.offset,
                        "problem": i.problem or None,
                        **(
                            i.letter.model_dump(mode="json", exclude={"original_value_b64"})
                            if i.letter
                            else {}
                        ),
                    }
                    for i in letters
                ],
                indent=2,
            )
        )
        return
    click.echo(f"{len(letters)} dead letter(s) on chat.dlq")
    for consumer, topic, reason, count in summarise(letters):
        click.echo(f"{count:>7}  {consumer:18} {topic:32} {reason}")


@ops_dlq.command("replay")
@click.option("--consumer", default=None, help="Only letters this consumer gave up on.")
@click.option("--topic", default=None, help="Only letters from this registry topic.")
@click.option("--error-contains", default=None, help="Only letters whose reason contains this.")
@click.option("--dry-run", is_flag=True, help="Say what would be sent; send and commit nothing.")
def ops_dlq_replay(
    consumer: str | None, topic: str | None, error_contains: str | None, dry_run: bool
) -> None:
    """Republish matching dead letters that are valid events now to their original topic."""
    from chatbus.cli.ops.dlq import replay

    report = _run(
        replay(
            get_settings(),
            consumer=consumer,
            topic=topic,
            error_contains=error_contains,
            dry_run=dry_run,
        )
    )
    verb = "would send" if dry_run else "sent"
    for where in report.sent:
        click.echo(f"{verb.upper():10} {where}")
    for line in report.skipped:
        click.secho(f"{'SKIPPED':10} {line}", fg="yellow")
    click.echo(
        f"{verb} {len(report.sent)}, skipped {len(report.skipped)}, not matching {report.filtered}"
    )
