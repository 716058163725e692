"""``chatbus pipeline up|down`` and ``supervise``: the components under the local supervisor."""

from __future__ import annotations

import sys

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError
from chatbus.settings import Settings


def stop_pipeline(settings: Settings) -> None:
    """Stop the supervisor, which stops every replica (gateway first, each draining)."""
    from infra.local import process, supervisor

    process.stop(settings, "supervisor", timeout=200.0)
    # replicas left by a supervisor that was killed: stop them too, in the same order
    names = [
        p.stem
        for p in settings.run_dir.glob("*.pid")
        if supervisor.is_component(supervisor.component_of(p.stem))
    ]
    order = {c: i for i, c in enumerate(reversed(supervisor.START_ORDER))}
    for name in sorted(
        names, key=lambda n: order[supervisor.spec_of(supervisor.component_of(n)).name]
    ):
        process.stop(
            settings, name, timeout=supervisor.spec_of(supervisor.component_of(name)).stop_timeout_s
        )


@click.group()
def pipeline() -> None:
    """The chatbus components (processors, archiver, ledger, workers, gateway) under a local
    supervisor."""


@pipeline.command("up")
@click.option(
    "--only",
    "only",
    multiple=True,
    type=click.Choice(["processors", "archiver", "ledger", "worker", "gateway"]),
    help="Run only this component (repeatable).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait until every component answers /readyz.",
)
@click.option("--timeout", type=float, default=300.0, show_default=True)
def pipeline_up(only: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Start the supervisor in the background; it starts each component and restarts a crashed
    one with backoff (idempotent)."""
    from chatbus.cli.ops.probes import probe
    from chatbus.polling import poll_until
    from infra.local import process, supervisor

    settings = common.settings()
    pid = process.running_pid(settings, "supervisor")
    if pid:
        click.echo(f"supervisor already running (pid {pid})")
    else:
        from chatbus.ports import ensure_free

        components = only or supervisor.start_order(settings)
        try:
            if "gateway" in components:
                ensure_free(settings.gateway.port, "CHATBUS_GATEWAY_PORT", settings.gateway.host)
        except ChatbusError as exc:
            common.fail(exc)
        supervisor.write_desired(settings, supervisor.default_desired(settings, tuple(components)))
        pid = process.spawn(
            settings, "supervisor", [sys.executable, "-m", "chatbus.cli", "supervise"]
        )
        click.echo(f"supervisor started (pid {pid}); logs: {settings.log_dir}/")
    if not wait:
        return
    desired = supervisor.read_desired(settings)
    expected = sum(desired.replicas.values())
    shown: set[str] = set()
    waiting: list[str] = []

    def all_ready() -> bool:
        status = supervisor.read_status(settings)
        for name, row in sorted(status.items()):
            if (
                name not in shown
                and row.get("state") == "running"
                and probe("127.0.0.1", int(row["port"]), "/readyz").ok  # type: ignore[call-overload]
            ):
                shown.add(name)
                click.echo(f"  {name} ready (pid {row.get('pid')}, port {row.get('port')})")
        if len(shown) >= expected:
            return True
        if process.running_pid(settings, "supervisor") is None:
            common.fail(f"the supervisor exited; see {settings.log_dir / 'supervisor.log'}")
        waiting[:] = sorted(set(status) - shown)
        return False

    try:
        poll_until(all_ready, timeout_s=timeout, interval=0.5, what="every component ready")
    except TimeoutError:
        common.fail(
            f"not ready after {timeout:.0f} s: {', '.join(waiting) or 'nothing started'};"
            f" see {settings.log_dir}/<name>.log and `chatbus ops status`"
        )


@pipeline.command("down")
def pipeline_down() -> None:
    """Stop the pipeline: the supervisor stops each component (SIGTERM: they drain first)."""
    stop_pipeline(common.settings())


@click.command(hidden=True)
def supervise() -> None:
    """Run the local supervisor in the foreground (`chatbus pipeline up` starts it)."""
    from chatbus.logging import configure_logging
    from infra.local.supervisor import Supervisor

    settings = common.settings()
    configure_logging(settings, component="supervisor")
    Supervisor(settings).run()
