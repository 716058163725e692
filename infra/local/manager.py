"""Bring the local services up, down, and report on them.

``up`` installs what is missing, starts what is not running, and waits until each service answers
its health probe; services already running and healthy are left alone (same PID). ``down`` stops
only the processes we started (by verified PID file). Services run concurrently in threads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import structlog

from chatbus import ports
from chatbus.console import say
from chatbus.errors import ChatbusError, ConfigurationError, ServiceUnavailable
from chatbus.settings import Settings
from infra.local import process
from infra.local.ferretdb import FerretDB
from infra.local.kafka import Kafka
from infra.local.postgres import Postgres
from infra.local.redis import Redis
from infra.local.s3 import S3
from infra.local.service import Service, ServiceStatus

log = structlog.get_logger(__name__)

SERVICES: dict[str, Service] = {s.name: s for s in (Kafka(), Redis(), FerretDB(), Postgres(), S3())}
ALIASES = {"mongo": "ferretdb", "mongodb": "ferretdb", "moto": "s3", "postgresql": "postgres"}
MAX_KAFKA_NODES = 5


def services_of(settings: Settings) -> dict[str, Service]:
    """Every local service of ``settings``: each Kafka node (CHATBUS_LOCAL_KAFKA_BROKERS), then
    the stores."""
    count = settings.local.kafka_brokers
    # nodes of a bigger cluster still running (the setting went down): still ours to stop
    while count < MAX_KAFKA_NODES and process.running_pid(settings, f"kafka-{count + 1}"):
        count += 1
    nodes = [Kafka(n) for n in range(1, count + 1)]
    return {s.name: s for s in (*nodes, Redis(), FerretDB(), Postgres(), S3())}


T = TypeVar("T")


def select(settings: Settings, services: Iterable[str] | None) -> list[Service]:
    """The services named (all when None), in the canonical order; ``kafka`` names every node
    of a local cluster, ``kafka-2`` one of them."""
    known = services_of(settings)
    if services is None:
        return list(known.values())
    wanted = {ALIASES.get(n.lower(), n.lower()) for n in services}
    if "kafka" in wanted:
        wanted |= {name for name in known if name.startswith("kafka-")}
    unknown = wanted - known.keys()
    if unknown:
        raise ConfigurationError(
            f"unknown service(s) {sorted(unknown)}; choose from {sorted(known)}"
        )
    return [s for name, s in known.items() if name in wanted]


def _in_parallel(fn: Callable[[Service], T], chosen: Sequence[Service]) -> list[T]:
    """fn(service) for each service in threads; re-raise after all finished, when any failed."""
    if not chosen:
        return []
    with ThreadPoolExecutor(max_workers=len(chosen), thread_name_prefix="infra") as pool:
        futures = [pool.submit(fn, s) for s in chosen]
        results: list[T] = []
        errors: list[BaseException] = []
        for future in futures:
            try:
                results.append(future.result())
            except BaseException as exc:  # noqa: BLE001 - collected, re-raised below
                errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        first = next((e for e in errors if isinstance(e, ChatbusError)), errors[0])
        message = "\n".join(f"- {e}" for e in errors)
        raise type(first)(f"{len(errors)} services failed:\n{message}") from first
    return results


def _status(settings: Settings, svc: Service, pid: int | None, detail: str) -> ServiceStatus:
    return ServiceStatus(
        name=svc.name,
        running=pid is not None,
        healthy=True,
        pid=pid,
        address=svc.address(settings),
        detail=detail,
    )


def _up_one(settings: Settings, svc: Service) -> ServiceStatus:
    started = time.monotonic()
    pid = process.running_pid(settings, svc.name)
    if pid is not None:
        try:
            detail = svc.wait_healthy(settings, pid, timeout=svc.start_timeout)
        except ServiceUnavailable as exc:
            raise ServiceUnavailable(
                f"{exc}\n{svc.name} is running (pid {pid}) but not healthy; "
                f"restart it with: python -m infra.local down {svc.name} && "
                f"python -m infra.local up {svc.name}"
            ) from exc
        svc.after_start(settings)
        detail = svc.check(settings, timeout=5.0)
        say(f"{svc.name} already running on {svc.address(settings)} (pid {pid})")
        return _status(settings, svc, pid, detail)

    for port, setting in svc.ports(settings):
        ports.ensure_free(port, setting)
    svc.install(settings)
    svc.prepare(settings)
    cmd = svc.command(settings)
    for attempt in range(1, START_ATTEMPTS + 1):
        pid = process.spawn(
            settings, svc.name, cmd.argv, env=dict(cmd.env), cwd=cmd.cwd, user=cmd.user
        )
        try:
            svc.wait_healthy(settings, pid, timeout=svc.start_timeout)
            svc.after_start(settings)
            detail = svc.check(settings, timeout=5.0)
            break
        except ServiceUnavailable:
            exited = not process.is_alive(pid)
            process.stop(settings, svc.name, timeout=svc.stop_timeout)
            if attempt == START_ATTEMPTS or not exited:
                raise
            log.warning("exited while starting, starting again", service=svc.name, attempt=attempt)
            _wait_ports_free(svc.ports(settings), deadline=time.monotonic() + 10.0)
        except BaseException:
            process.stop(settings, svc.name, timeout=svc.stop_timeout)
            raise
    took = time.monotonic() - started
    say(f"{svc.name} up on {svc.address(settings)} (pid {pid}, {took:.1f} s)")
    log.info("service up", service=svc.name, pid=pid, seconds=round(took, 2), detail=detail)
    return _status(settings, svc, pid, detail)


# A service that exits while starting is started again (up to this many times in all): its port
# was free when checked and taken when it bound, seconds later. The ports sit in Linux's
# ephemeral range (32768-60999), so a client retrying 127.0.0.1:<port> while the service restarts
# can be given that very port as its own source port (a TCP self-connect; seen once, in the fault
# suite's broker restart: Kafka "failed to bind ... Address already in use"). The holder goes away
# within moments. A service that cannot start for another reason fails the same way each time.
START_ATTEMPTS = 3


def _wait_ports_free(wanted: list[tuple[int, str]], deadline: float) -> None:
    while not all(ports.is_free(port) for port, _ in wanted) and time.monotonic() < deadline:
        time.sleep(0.2)  # poll interval of the deadline loop


def up(settings: Settings, services: Iterable[str] | None = None) -> list[ServiceStatus]:
    """Install, start and health-check the services (all by default); idempotent.

    Raises ConfigurationError (a port is taken, a tool is missing: the message says what to do)
    or ServiceUnavailable (a service did not become healthy: the message points at its log).
    """
    chosen = select(settings, services)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    result = _in_parallel(lambda svc: _up_one(settings, svc), chosen)
    log.info(
        "services up",
        services=[s.name for s in chosen],
        seconds=round(time.monotonic() - started, 2),
    )
    return result


def _down_one(settings: Settings, svc: Service) -> bool:
    started = time.monotonic()
    pid = process.running_pid(settings, svc.name)
    stopped = process.stop(settings, svc.name, timeout=svc.stop_timeout)
    if stopped:
        say(f"{svc.name} stopped (pid {pid}, {time.monotonic() - started:.1f} s)")
    return stopped


def down(settings: Settings, services: Iterable[str] | None = None) -> list[str]:
    """Stop the services we started (all by default); return the names of those stopped."""
    chosen = select(settings, services)
    stopped = _in_parallel(lambda svc: _down_one(settings, svc), chosen)
    return [svc.name for svc, was in zip(chosen, stopped, strict=True) if was]


def _status_one(settings: Settings, svc: Service) -> ServiceStatus:
    pid = process.running_pid(settings, svc.name)
    address = svc.address(settings)
    if pid is None:
        detail = "stopped"
        for port, setting in svc.ports(settings):
            if not ports.is_free(port):
                who = ports.holder(port)
                by = f" by pid {who[0]} '{who[1]}'" if who else ""
                detail = f"stopped; port {port} ({setting}) is taken{by}"
                break
        return ServiceStatus(svc.name, False, False, None, address, detail)
    try:
        detail = svc.check(settings, timeout=2.0)
        healthy = True
    except Exception as exc:  # noqa: BLE001 - a failed probe is a status, not an error
        detail = f"unhealthy: {type(exc).__name__}: {exc}"
        healthy = False
    return ServiceStatus(svc.name, True, healthy, pid, address, detail)


def status(settings: Settings, services: Iterable[str] | None = None) -> list[ServiceStatus]:
    """Each service's state: running (our PID file is live), healthy (one probe passed)."""
    return _in_parallel(lambda svc: _status_one(settings, svc), select(settings, services))
