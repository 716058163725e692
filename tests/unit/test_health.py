"""Liveness by heartbeats, readiness by a flag — and never by queue length."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from chatbus.health import Health, HealthServer
from tests.unit.manual_clock import Clock


def test_a_process_is_live_while_its_loops_beat_and_not_once_one_stalls() -> None:
    clock = Clock(1000.0)
    health = Health("worker", stall_s=5.0, clock=clock)
    health.beat("consume")
    assert health.liveness()[0]
    clock.now += 6.0  # the loop last beat 6 s ago
    live, detail = health.liveness()
    assert not live and detail["stalled"] == ["consume"]
    health.forget("consume")
    assert health.liveness()[0]


def test_ready_needs_the_flag_and_live_loops() -> None:
    clock = Clock(1000.0)
    health = Health("archiver", stall_s=5.0, clock=clock)
    assert health.readiness() == (False, {"component": "archiver", "reason": "starting"})
    health.set_ready(True, "4 partitions assigned")
    assert health.readiness()[0]
    health.beat("consume")
    clock.now += 10.0
    ready, detail = health.readiness()
    assert not ready and "stalled" in detail["reason"]


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_server_answers_metrics_livez_and_readyz() -> None:
    health = Health("processors")
    server = HealthServer(health, 0)
    server.start()
    try:
        assert _get(server.port, "/readyz")[0] == 503
        health.set_ready(True)
        status, body = _get(server.port, "/readyz")
        assert status == 200 and json.loads(body)["component"] == "processors"
        assert _get(server.port, "/livez")[0] == 200
        status, body = _get(server.port, "/metrics")
        assert status == 200 and b"# TYPE" in body
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.stop()
