"""Workers on one machine share its cores: each decodes on its share of them, and a running
worker is resized through ``POST /engine/threads`` when the number of workers changes."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import pytest

from chatbus.health import Health, HealthServer
from chatbus.settings import Settings
from inference_consumers import threads_route
from inference_consumers.engine import InferenceEngine
from infra.local import supervisor as supervisor_module
from infra.local.supervisor import Replica, Supervisor, engine_threads_share


class RecordingEngine:
    """What the route needs of an engine: ``set_threads`` (False: fixed threads)."""

    def __init__(self, resizable: bool = True) -> None:
        self.resizable = resizable
        self.calls: list[int] = []

    def set_threads(self, threads: int) -> bool:
        self.calls.append(threads)
        return self.resizable

    def wait_for_threads(self, timeout: float) -> bool:
        return True


@contextmanager
def ops_port(engine: RecordingEngine | None) -> Iterator[HealthServer]:
    """A worker's ops port serving the threads route of ``engine`` (None: not serving it yet,
    the model still loading)."""
    handler = threads_route.threads_handler(cast(InferenceEngine, engine)) if engine else None
    routes = {threads_route.PATH: handler} if handler else {}
    server = HealthServer(Health("worker"), 0, routes=routes)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def worker_ops() -> Iterator[tuple[HealthServer, RecordingEngine]]:
    engine = RecordingEngine()
    with ops_port(engine) as server:
        yield server, engine


def test_the_cores_are_shared_out_among_the_workers_running() -> None:
    settings = Settings()
    assert engine_threads_share(settings, workers=1, cores=2) == 2
    assert engine_threads_share(settings, workers=2, cores=2) == 1
    assert engine_threads_share(settings, workers=3, cores=2) == 1  # never 0
    assert engine_threads_share(settings, workers=2, cores=8) == 4
    assert engine_threads_share(settings, workers=0, cores=2) == 2


def test_a_thread_count_set_by_hand_is_left_alone() -> None:
    assert engine_threads_share(Settings(engine_threads=3), workers=2, cores=2) is None


def test_the_route_resizes_the_engine_and_refuses_a_bad_body(
    worker_ops: tuple[HealthServer, RecordingEngine],
) -> None:
    server, engine = worker_ops
    handle = server.routes[threads_route.PATH]
    assert handle(b'{"threads": 1}') == (200, b'{"threads": 1, "applied": true}')
    for bad in (b'{"threads": 0}', b"{}", b'{"threads": "two"}', b"not json", b'{"n": 2}'):
        status, body = handle(bad)
        assert status == 400 and b'expected {\\"threads\\": N}' in body, bad
    assert engine.calls == [1]
    fixed = threads_route.threads_handler(cast(InferenceEngine, RecordingEngine(resizable=False)))
    status, body = fixed(b'{"threads": 1}')
    assert status == 409 and b"CHATBUS_ENGINE_THREADS" in body


def _running_worker(port: int, threads: int | None, name: str = "worker-1") -> Replica:
    return Replica(name, pid=os.getpid(), port=port, threads=threads)


def test_the_running_workers_are_resized_as_their_number_changes(
    tmp_path: Path, worker_ops: tuple[HealthServer, RecordingEngine]
) -> None:
    server, engine = worker_ops
    supervisor = Supervisor(Settings(state_dir=tmp_path), cores=2)
    supervisor.replicas["worker-1"] = replica = _running_worker(server.port, threads=2)
    supervisor._share_cores(now=0.0)
    assert engine.calls == [] and replica.threads == 2  # alone: its share is every core
    supervisor.replicas["worker-2"] = second = Replica("worker-2", pid=os.getpid(), threads=1)
    supervisor._share_cores(now=0.0)
    assert engine.calls == [1] and replica.threads == 1  # a second one runs: half each
    supervisor._share_cores(now=1.0)
    assert engine.calls == [1]  # resized once, not on every tick
    second.pid = None  # it crashed: the survivor takes its cores until it is back
    supervisor._share_cores(now=2.0)
    assert engine.calls == [1, 2] and replica.threads == 2
    second.pid = os.getpid()  # restarted
    supervisor._share_cores(now=3.0)
    assert engine.calls == [1, 2, 1] and replica.threads == 1
    second.stopping_since = 3.0  # scaled back down: being drained no longer counts
    supervisor._share_cores(now=4.0)
    assert engine.calls == [1, 2, 1, 2]


def test_a_worker_still_loading_its_model_is_asked_again_later(tmp_path: Path) -> None:
    with ops_port(None) as loading:
        supervisor = Supervisor(Settings(state_dir=tmp_path), cores=2)
        supervisor.replicas["worker-1"] = replica = _running_worker(loading.port, threads=2)
        supervisor.replicas["worker-2"] = _running_worker(0, threads=1, name="worker-2")
        supervisor._share_cores(now=10.0)
    assert replica.threads == 2 and replica._threads_retry_at > 10.0


def test_a_worker_with_fixed_threads_is_not_asked_again(tmp_path: Path) -> None:
    engine = RecordingEngine(resizable=False)
    with ops_port(engine) as server:
        supervisor = Supervisor(Settings(state_dir=tmp_path), cores=2)
        supervisor.replicas["worker-1"] = replica = _running_worker(server.port, threads=2)
        supervisor.replicas["worker-2"] = _running_worker(0, threads=None, name="worker-2")
        supervisor._share_cores(now=0.0)
        supervisor._share_cores(now=5.0)
    assert engine.calls == [1] and replica.threads is None


def test_the_route_answers_over_http(worker_ops: tuple[HealthServer, RecordingEngine]) -> None:
    server, engine = worker_ops
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{threads_route.PATH}",
        data=json.dumps({"threads": 3}).encode(),
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200
        assert json.loads(answer.read()) == {"threads": 3, "applied": True}
    assert engine.calls == [3]


def test_a_worker_about_to_start_makes_room_before_it_boots(
    tmp_path: Path,
    worker_ops: tuple[HealthServer, RecordingEngine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A replacement booting beside a worker still decoding on every core would stall that
    worker's step at every layer: the running ones are shrunk first, then it is spawned."""
    server, engine = worker_ops
    supervisor = Supervisor(Settings(state_dir=tmp_path), cores=2)
    supervisor.replicas["worker-1"] = running = _running_worker(server.port, threads=2)
    spawned: list[tuple[str, list[int], str | None]] = []

    def spawn(settings: Settings, name: str, argv: list[str], env: dict[str, str]) -> int:
        spawned.append((name, list(engine.calls), env.get("CHATBUS_ENGINE_THREADS")))
        return os.getpid()

    monkeypatch.setattr(supervisor_module.process, "spawn", spawn)
    supervisor.replicas["worker-2"] = joining = Replica("worker-2", port=0)
    supervisor._start(joining, now=0.0)
    assert spawned == [("worker-2", [1], "1")]  # resized to its share before the spawn
    assert running.threads == 1 and joining.threads == 1
