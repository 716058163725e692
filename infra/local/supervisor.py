"""The local supervisor behind ``make run``: keeps the pipeline's processes at their desired count.

It runs in the background (``chatbus supervise``, started by ``chatbus pipeline up``) and, every
quarter second, reconciles what runs with what is wanted:

* **wanted** comes from ``run_dir/supervisor.desired.json`` (:class:`Desired`), which
  ``chatbus ops scale``, ``chatbus ops drain`` and ``chatbus models promote`` rewrite: replicas
  per component, the replicas to retire first when scaling down (a drain), and the model folder
  a worker component's replicas start on when it is not their model's own (a promotion);
* a replica that is wanted and not running is started; one that **crashed** is restarted after a
  backoff that doubles from 1 s per crash in a row (up to ``local_restart_backoff_max_s``) and
  resets once it has run for a minute; a crashed worker with peers of its model running waits
  at least :data:`REPLACE_AFTER_TAKEOVER_S`, so they take its streams over on all the cores;
* a replica no longer wanted gets SIGTERM (the worker then stops taking work, finishes its streams
  and leaves its group) and SIGKILL only after its component's stop timeout;
* the worker replicas running share the machine's cores: each decodes on ``cores // workers``
  threads (at least one; :func:`engine_threads_share`), given when it starts and changed through
  its ``POST /engine/threads`` when the number running changes (a scale, a drain, a crash: the
  survivor takes the dead one's cores while it restarts) — a second worker beside one that kept
  a thread per core would make both wait at every layer. ``CHATBUS_ENGINE_THREADS`` set: every
  worker gets that, untouched;
* what it sees goes to ``run_dir/supervisor.status.json`` for ``chatbus ops status``.

On SIGTERM it stops everything, gateway first (nothing new comes in), processors last, and exits.
Each replica is a process of :mod:`infra.local.process` (PID file, log in ``log_dir/<name>.log``),
so a restarted supervisor adopts the replicas that are still running.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from chatbus.kafka.backoff import Backoff
from chatbus.logging import get_logger
from chatbus.settings import Settings
from infra.local import process

log = get_logger(__name__)

#: The inference group's session timeout on the local broker (see KafkaService's properties).
LOCAL_WORKER_SESSION_TIMEOUT_MS = 1000

#: A crashed worker beside others of its model is replaced this long after the crash at the
#: soonest: its peers first take its streams over (the group's session timeout, then a resume
#: and a prefill) with its cores too; a replacement booting meanwhile would take one of them
#: (measured in docs/reliability.md, "The worker kill within 3 s").
REPLACE_AFTER_TAKEOVER_S = 3.0
TICK_S = 0.25
THREADS_RETRY_S = 2.0
HEALTHY_RESET_S = 60.0


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    scalable: bool  # replicas are named <name>-1, <name>-2, ...; else the one is <name>
    stop_timeout_s: float
    port_offset: int | None  # of /metrics, /livez, /readyz; None: the gateway serves its own


COMPONENTS: dict[str, Component] = {
    c.name: c
    for c in (
        Component("processors", scalable=False, stop_timeout_s=30.0, port_offset=0),
        Component("archiver", scalable=True, stop_timeout_s=30.0, port_offset=10),
        Component("ledger", scalable=True, stop_timeout_s=20.0, port_offset=30),
        Component("worker", scalable=True, stop_timeout_s=75.0, port_offset=20),  # drains ≤ 30 s
        Component("gateway", scalable=False, stop_timeout_s=20.0, port_offset=None),
    )
}
START_ORDER = ("processors", "archiver", "ledger", "worker", "gateway")
# The workers of a further local model are the component ``worker@<model>`` (one consumer group
# per model); their ports follow the first model's, ten per model.
MODEL_WORKER_PREFIX = "worker@"
MODEL_WORKER_PORT_OFFSET = 40


def model_worker(model: str) -> str:
    """The component that serves ``model`` beside the default one."""
    return f"{MODEL_WORKER_PREFIX}{model}"


def start_order(settings: Settings) -> tuple[str, ...]:
    """Every component of this settings' pipeline, in start order (extra models' workers after
    the first model's)."""
    extra = tuple(model_worker(m) for m in settings.local_model_names[1:])
    return ("processors", "archiver", "ledger", "worker", *extra, "gateway")


def is_component(name: str) -> bool:
    return name in COMPONENTS or (
        name.startswith(MODEL_WORKER_PREFIX) and len(name) > len(MODEL_WORKER_PREFIX)
    )


def spec_of(component: str) -> Component:
    """The :class:`Component` of ``component`` (``worker@<model>`` is a worker)."""
    if component.startswith(MODEL_WORKER_PREFIX):
        return COMPONENTS["worker"]
    return COMPONENTS[component]


def model_of(settings: Settings, component: str) -> str | None:
    """The model a worker component serves (None for the other components)."""
    if component == "worker":
        return settings.model.name
    if component.startswith(MODEL_WORKER_PREFIX):
        return component[len(MODEL_WORKER_PREFIX) :]
    return None


class Desired(BaseModel):
    """What should run: replicas per component, which replicas to retire first, and the model
    folder a worker component's new replicas load (absent: its model's own folder)."""

    replicas: dict[str, int] = Field(default_factory=dict)
    retire: list[str] = Field(default_factory=list)
    model_paths: dict[str, str] = Field(default_factory=dict)

    def count(self, component: str) -> int:
        return self.replicas.get(component, 0)

    def scaled(self, component: str, replicas: int) -> Desired:
        """``component`` at ``replicas`` replicas (``chatbus ops scale``)."""
        return self.model_copy(update={"replicas": dict(self.replicas) | {component: replicas}})

    def retiring(self, replica: str) -> Desired:
        """One replica fewer of ``replica``'s component, ``replica`` the one to go (a drain)."""
        component = component_of(replica)
        return self.scaled(component, max(0, self.count(component) - 1)).model_copy(
            update={"retire": [*self.retire, replica]}
        )

    def with_model_path(self, component: str, path: str | None) -> Desired:
        """New replicas of ``component`` load ``path`` (None: their model's own folder)."""
        paths = {c: p for c, p in self.model_paths.items() if c != component}
        if path is not None:
            paths[component] = path
        return self.model_copy(update={"model_paths": paths})


def model_path_of(settings: Settings, desired: Desired, component: str) -> Path | None:
    """The folder new replicas of a worker component load: the promoted one, else the model's
    own (None for the other components)."""
    model = model_of(settings, component)
    if model is None:
        return None
    promoted = desired.model_paths.get(component)
    return Path(promoted) if promoted else settings.model_folder(model)


def engine_threads_share(settings: Settings, workers: int, cores: int) -> int | None:
    """The CPU threads each of ``workers`` worker replicas on this machine decodes on: ``cores``
    shared out, at least one each (None: ``CHATBUS_ENGINE_THREADS`` decides; pure logic)."""
    if settings.model.engine_threads:
        return None
    return max(1, cores // max(1, workers))


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_desired(settings: Settings, components: tuple[str, ...] | None = None) -> Desired:
    names = start_order(settings) if components is None else components
    return Desired(
        replicas={
            c: (settings.local.worker_replicas if model_of(settings, c) else 1) for c in names
        }
    )


def desired_path(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.desired.json"


def status_path(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.status.json"


def read_desired(settings: Settings) -> Desired:
    try:
        return Desired.model_validate_json(desired_path(settings).read_text())
    except FileNotFoundError:
        return Desired()


def write_desired(settings: Settings, desired: Desired) -> None:
    _write_atomic(desired_path(settings), desired.model_dump_json(indent=2))


def update_desired(settings: Settings, change: Callable[[Desired], Desired]) -> Desired:
    """Read, change and write the desired state under a lock, so a ``chatbus ops scale`` and the
    supervisor's own bookkeeping never overwrite each other."""
    path = desired_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            desired = change(read_desired(settings))
            write_desired(settings, desired)
            return desired
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_status(settings: Settings) -> dict[str, dict[str, object]]:
    try:
        return json.loads(status_path(settings).read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _environment_of(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty when it cannot be read): what an adopted
    replica runs on."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def _on_cpu_threads(settings: Settings) -> bool:
    """Whether a worker may decode on CPU threads: its device is not a GPU by name (with
    ``auto`` on a GPU machine it answers 409 and keeps its threads)."""
    return not settings.model.device.startswith("cuda")


def _post_threads(port: int, threads: int) -> tuple[int | None, str]:
    """``POST /engine/threads`` to the worker replica on ``port``: the HTTP status (None: no
    answer) and what it said."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/engine/threads",
        data=json.dumps({"threads": threads}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        # the worker answers once the step under way has ended (threads_route.APPLY_WAIT_S)
        with urllib.request.urlopen(request, timeout=2.0) as answer:  # noqa: S310 - loopback http
            return answer.status, answer.read()[:200].decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:200].decode(errors="replace")
    except OSError as exc:
        return None, str(exc)


def _applied(answer: str) -> bool:
    """Whether a worker's ``POST /engine/threads`` answer says its new threads decode now."""
    try:
        return bool(json.loads(answer).get("applied", True))
    except (ValueError, AttributeError):
        return False


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def component_of(replica: str) -> str:
    """``worker-2`` → ``worker``; ``worker@chatbus-tiny-1`` → ``worker@chatbus-tiny``;
    ``gateway`` → ``gateway``."""
    base, _, index = replica.rpartition("-")
    return base if index.isdigit() and is_component(base) else replica


def index_of(replica: str) -> int:
    _, _, index = replica.rpartition("-")
    return int(index) if index.isdigit() else 1


def replica_port(settings: Settings, replica: str) -> int:
    """The port ``replica`` serves /metrics, /livez and /readyz on."""
    name = component_of(replica)
    component = spec_of(name)
    if component.port_offset is None:
        return settings.gateway.port
    offset = component.port_offset
    if name.startswith(MODEL_WORKER_PREFIX):
        extra = [model_worker(m) for m in settings.local_model_names[1:]]
        offset = MODEL_WORKER_PORT_OFFSET + 10 * (extra.index(name) if name in extra else 0)
    return (
        settings.local.metrics_base_port + offset + (index_of(replica) if component.scalable else 0)
    )


def wanted_replicas(desired: Desired, running: set[str]) -> list[str]:
    """The replica names that should run, in start order. Scaling down retires the names in
    ``desired.retire`` first, then the highest-numbered; scaling up fills the lowest free index
    (pure logic)."""
    out: list[str] = []
    extra = sorted(c for c in desired.replicas if c.startswith(MODEL_WORKER_PREFIX))
    for name in ("processors", "archiver", "ledger", "worker", *extra, "gateway"):
        spec, count = spec_of(name), desired.count(name)
        if not spec.scalable:
            out += [name] if count > 0 else []
            continue
        current = sorted((r for r in running if component_of(r) == name), key=index_of)
        keep = [r for r in current if r not in desired.retire][:count]
        index = 1
        while len(keep) < count:
            candidate = f"{name}-{index}"
            if candidate not in keep and candidate not in desired.retire:
                keep.append(candidate)
            index += 1
        out += sorted(keep, key=index_of)
    return out


@dataclass
class Replica:
    name: str
    pid: int | None = None
    started_at: float = 0.0  # wall clock
    restarts: int = 0
    crashes_in_a_row: int = 0
    next_start_at: float = 0.0  # monotonic
    last_exit: int | None = None
    stopping_since: float | None = None  # monotonic
    port: int = 0
    worker_id: str | None = None
    model_path: str | None = None  # the folder a worker replica was started on
    threads: int | None = None  # the CPU threads a worker replica decodes on (None: unknown)
    _threads_retry_at: float = field(default=0.0, repr=False)  # monotonic
    _started_mono: float = field(default=0.0, repr=False)


class Supervisor:
    """Reconciles the running replicas with :class:`Desired` until told to stop."""

    def __init__(
        self, settings: Settings, *, python: str = sys.executable, cores: int | None = None
    ) -> None:
        self.settings = settings
        self.python = python
        self.cores = cores or machine_cores()  # what the worker replicas share
        self.replicas: dict[str, Replica] = {}
        self.stopped: dict[str, int | None] = {}  # retired replicas → how they exited
        self._desired = Desired()  # the last desired state that could be read
        self._stop = False

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self._adopt()
        log.info("supervisor_started", desired=read_desired(self.settings).model_dump())
        while not self._stop:
            try:
                self.reconcile()
                self._write_status()
            except Exception as exc:  # noqa: BLE001 - one bad tick must not orphan the replicas
                log.error("supervisor_tick_failed", error=f"{type(exc).__name__}: {exc}")
            time.sleep(TICK_S)  # the reconcile period, not a wait for an event
        self.shutdown()

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop = True

    def _adopt(self) -> None:
        """Replicas a previous supervisor started and that still run are ours again."""
        for path in self.settings.run_dir.glob("*.pid"):
            name = path.stem
            if is_component(component_of(name)):
                pid = process.running_pid(self.settings, name)
                if pid:
                    self.replicas[name] = Replica(
                        name,
                        pid=pid,
                        started_at=time.time(),
                        port=replica_port(self.settings, name),
                        model_path=self._model_path_of_running(name, pid),
                        threads=self._threads_of_running(name, pid),
                        _started_mono=time.monotonic(),
                    )

    def _model_path_of_running(self, name: str, pid: int) -> str | None:
        """The folder a running worker replica loaded: its CHATBUS_MODEL_PATH, else its model's
        own folder (None for the other components)."""
        model = model_of(self.settings, component_of(name))
        if model is None:
            return None
        started_with = _environment_of(pid).get("CHATBUS_MODEL_PATH")
        return started_with or str(self.settings.model_folder(model))

    def _threads_of_running(self, name: str, pid: int) -> int | None:
        """The threads a running worker replica was started on: its CHATBUS_ENGINE_THREADS,
        else one per core (None for the other components)."""
        if model_of(self.settings, component_of(name)) is None or not _on_cpu_threads(
            self.settings
        ):
            return None
        started_with = _environment_of(pid).get("CHATBUS_ENGINE_THREADS", "")
        return int(started_with) if started_with.isdigit() and int(started_with) else self.cores

    def reconcile(self) -> None:
        now = time.monotonic()
        try:
            desired = self._desired = read_desired(self.settings)
        except ValueError as exc:  # a hand-edited file that does not validate
            log.error(
                "desired_state_unreadable",
                path=str(desired_path(self.settings)),
                error=str(exc)[:300],
                hint="keeping the last valid desired state",
            )
            desired = self._desired
        live = {
            name
            for name, r in self.replicas.items()
            if r.pid is not None and r.stopping_since is None
        }
        wanted = wanted_replicas(desired, live)
        for name, replica in list(self.replicas.items()):
            if name not in wanted and replica.pid is not None and replica.stopping_since is None:
                self._terminate(replica, now)
            if replica.stopping_since is not None:
                self._progress_stop(replica, now)
        for name in wanted:
            replica = self.replicas.setdefault(
                name, Replica(name, port=replica_port(self.settings, name))
            )
            if replica.stopping_since is not None:
                continue  # retired a moment ago and not gone yet; started again once gone
            if replica.pid is not None:
                if process.running_pid(self.settings, name) == replica.pid:
                    if now - replica._started_mono > HEALTHY_RESET_S:
                        replica.crashes_in_a_row = 0
                    continue
                self._crashed(replica, now)
            if now >= replica.next_start_at:
                self._start(replica, now)
        self._share_cores(now)
        # forget replicas that are gone and no longer wanted
        for name in [
            n
            for n, r in self.replicas.items()
            if n not in wanted and r.pid is None and r.stopping_since is None
        ]:
            self.stopped[name] = self.replicas.pop(name).last_exit
        for name in wanted:
            self.stopped.pop(name, None)
        if any(n not in self.replicas for n in desired.retire):
            update_desired(
                self.settings,
                lambda d: d.model_copy(
                    update={"retire": [n for n in d.retire if n in self.replicas]}
                ),
            )

    @property
    def _local_broker(self) -> bool:
        return all(h.startswith("127.0.0.1:") for h in self.settings.kafka.bootstrap.split(","))

    def _start(self, replica: Replica, now: float) -> None:
        name = replica.name
        env = {"CHATBUS_METRICS_PORT": str(replica.port)}
        component = component_of(name)
        model = model_of(self.settings, component)
        if model is not None:
            replica.worker_id = f"{name}.{socket.gethostname()}.{secrets.token_hex(2)}"
            env["CHATBUS_WORKER_ID"] = replica.worker_id
            if self.settings.worker.session_timeout_ms is None and self._local_broker:
                # the local broker allows it (group.min.session.timeout.ms): a dead worker's
                # streams stall ~2 s, not the 6 s a managed cluster's default minimum imposes
                env["CHATBUS_WORKER_SESSION_TIMEOUT_MS"] = str(LOCAL_WORKER_SESSION_TIMEOUT_MS)
            if component != "worker":  # a further model: its own name
                env["CHATBUS_MODEL_NAME"] = model
            # its model's folder, or the one promoted onto this component (chatbus models promote)
            path = model_path_of(self.settings, self._desired, component)
            replica.model_path = env["CHATBUS_MODEL_PATH"] = str(path)
            share = engine_threads_share(self.settings, self._running_workers() + 1, self.cores)
            if share is not None and _on_cpu_threads(self.settings):
                env["CHATBUS_ENGINE_THREADS"] = str(share)
                replica.threads = share
                self._share_cores(now, joining=1)  # make room before it boots beside them
        argv = [self.python, "-m", "chatbus.cli", spec_of(component).name]
        try:
            replica.pid = process.spawn(self.settings, name, argv, env=env)
        except Exception as exc:  # noqa: BLE001 - a start that fails is a crash: back off
            log.error("replica_start_failed", replica=name, error=str(exc))
            replica.crashes_in_a_row += 1
            replica.next_start_at = now + self.restart_delay(replica)
            return
        replica.started_at, replica._started_mono = time.time(), now
        log.info(
            "replica_started",
            replica=name,
            pid=replica.pid,
            port=replica.port,
            restarts=replica.restarts,
            model_path=replica.model_path,
        )

    def _running_workers(self) -> int:
        """Worker replicas running and not being stopped (what shares the cores now)."""
        return sum(
            1
            for r in self.replicas.values()
            if r.pid is not None
            and r.stopping_since is None
            and model_of(self.settings, component_of(r.name)) is not None
        )

    def _share_cores(self, now: float, *, joining: int = 0) -> None:
        """Resize the running worker replicas whose threads are not their share any more (the
        number running changed, or ``joining`` more are about to start); one that cannot answer
        yet is asked again 2 s later."""
        share = engine_threads_share(self.settings, self._running_workers() + joining, self.cores)
        if share is None:
            return
        for replica in self.replicas.values():
            if (
                replica.threads is None
                or replica.threads == share
                or replica.pid is None
                or replica.stopping_since is not None
                or now < replica._threads_retry_at
            ):
                continue
            status, detail = _post_threads(replica.port, share)
            if status == 200:
                log.info(
                    "worker_threads_resized",
                    replica=replica.name,
                    threads=share,
                    was=replica.threads,
                    applied=_applied(detail),  # false: a long step, still under way
                )
                replica.threads = share
            elif status == 409:  # its engine's threads are fixed: nothing to share
                log.info("worker_threads_fixed", replica=replica.name, detail=detail)
                replica.threads = None
            else:  # not serving its ops port yet, or busy: ask again
                replica._threads_retry_at = now + THREADS_RETRY_S
                log.debug("worker_threads_not_resized", replica=replica.name, detail=detail)

    def _crashed(self, replica: Replica, now: float) -> None:
        assert replica.pid is not None
        replica.last_exit = process.exit_code(replica.pid)
        process.forget(self.settings, replica.name)
        replica.pid = None
        replica.restarts += 1
        replica.crashes_in_a_row += 1
        delay = self.restart_delay(replica)
        if self._peers_running(replica):
            delay = max(delay, REPLACE_AFTER_TAKEOVER_S)
        replica.next_start_at = now + delay
        log.warning(
            "replica_crashed",
            replica=replica.name,
            exit_code=replica.last_exit,
            restart_in_s=delay,
            restarts=replica.restarts,
            log=str(process.log_file(self.settings, replica.name)),
        )

    def _peers_running(self, replica: Replica) -> bool:
        """Whether ``replica`` is a worker with other workers of its model running (who take its
        streams over)."""
        component = component_of(replica.name)
        return model_of(self.settings, component) is not None and any(
            r is not replica
            and r.pid is not None
            and r.stopping_since is None  # a draining peer takes nothing over
            and component_of(r.name) == component
            for r in self.replicas.values()
        )

    def restart_delay(self, replica: Replica) -> float:
        """Seconds before restarting ``replica``: 1 s after its first crash in a row, doubling
        per crash up to ``local_restart_backoff_max_s`` (the shared backoff policy)."""
        policy = Backoff(initial_s=1.0, max_s=self.settings.local.restart_backoff_max_s)
        return policy.delay(replica.crashes_in_a_row - 1)

    def _terminate(self, replica: Replica, now: float) -> None:
        log.info("replica_stopping", replica=replica.name, pid=replica.pid)
        process.send_signal(self.settings, replica.name, signal.SIGTERM)
        replica.stopping_since = now

    def _progress_stop(self, replica: Replica, now: float) -> None:
        assert replica.stopping_since is not None
        if replica.pid is None or process.running_pid(self.settings, replica.name) is None:
            if replica.pid is not None:
                replica.last_exit = process.exit_code(replica.pid)
            process.forget(self.settings, replica.name)
            log.info("replica_stopped", replica=replica.name, exit_code=replica.last_exit)
            replica.pid, replica.stopping_since = None, None
            return
        timeout = COMPONENTS[component_of(replica.name)].stop_timeout_s
        if now - replica.stopping_since > timeout:
            log.warning("replica_killed", replica=replica.name, after_s=timeout)
            process.send_signal(self.settings, replica.name, signal.SIGKILL)

    def shutdown(self) -> None:
        """Stop every replica, one component at a time: gateway, workers, archiver, processors."""
        for component in reversed(START_ORDER):
            group = [
                r
                for r in self.replicas.values()
                if component_of(r.name) == component and r.pid is not None
            ]
            for replica in group:
                if replica.stopping_since is None:
                    self._terminate(replica, time.monotonic())
            while any(r.pid is not None for r in group):
                for replica in group:
                    self._progress_stop(replica, time.monotonic())
                self._write_status()
                time.sleep(TICK_S)  # the stop-progress period
        self._write_status()
        log.info("supervisor_stopped")

    def _write_status(self) -> None:
        status = {}
        for name, r in sorted(self.replicas.items()):
            row = {k: v for k, v in asdict(r).items() if not k.startswith("_")}
            row["component"] = component_of(name)
            row["state"] = (
                "stopping"
                if r.stopping_since is not None
                else "running"
                if r.pid is not None
                else "backoff"
            )
            row.pop("next_start_at")
            row.pop("stopping_since")
            status[name] = row
        for name, code in self.stopped.items():
            status.setdefault(
                name,
                {
                    "name": name,
                    "component": component_of(name),
                    "state": "stopped",
                    "last_exit": code,
                    "pid": None,
                    "port": replica_port(self.settings, name),
                },
            )
        _write_atomic(status_path(self.settings), json.dumps(status, indent=2))
