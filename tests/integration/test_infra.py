"""infra.local against the real programs, on private ports and a private state dir.

The suite's shared services (default ports, ``.chatbus/``) are never touched: every test here
builds its own Settings with free ports and a state dir under tmp_path.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatbus import ports
from chatbus.errors import ConfigurationError, ServiceUnavailable
from chatbus.polling import poll_until
from chatbus.settings import Settings
from infra.local import manager, process
from infra.local.postgres import Postgres
from infra.local.service import Command, Service
from tests.integration.private_stack import private_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _gone(pid: int) -> bool:
    return not process.is_alive(pid)


def _wait_until_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    try:
        poll_until(lambda: all(_gone(p) for p in pids), timeout_s=timeout, what="exit")
    except TimeoutError:
        pass
    return [p for p in pids if not _gone(p)]


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = private_settings(tmp_path_factory.mktemp("infra") / "state")
    try:
        yield settings
    finally:
        manager.down(settings)
        Postgres().remove_data(settings)


def test_up_twice_is_harmless(private_stack: Settings) -> None:
    first = manager.up(private_stack)
    assert [s.name for s in first] == ["kafka", "redis", "ferretdb", "postgres", "s3"]
    assert all(s.running and s.healthy and s.pid for s in first), first

    second = manager.up(private_stack)
    assert {s.name: s.pid for s in second} == {s.name: s.pid for s in first}
    assert all(s.healthy for s in second), second

    status = manager.status(private_stack)
    assert {s.name: s.pid for s in status} == {s.name: s.pid for s in first}
    assert all(s.healthy for s in status), status
    assert str(private_stack.local.kafka_port) in next(
        s.address for s in status if s.name == "kafka"
    )
    assert "present" in next(s.detail for s in status if s.name == "s3")


def test_down_leaves_no_process_of_ours(private_stack: Settings) -> None:
    manager.up(private_stack)  # already up when the previous test ran: returns at once
    pids = [s.pid for s in manager.status(private_stack) if s.pid]
    assert len(pids) == 5

    stopped = manager.down(private_stack)

    assert sorted(stopped) == ["ferretdb", "kafka", "postgres", "redis", "s3"]
    assert _wait_until_gone(pids) == []
    assert all(process.group_members(pid) == [] for pid in pids)
    assert not any(private_stack.run_dir.glob("*.pid"))
    assert all(not s.running and not s.healthy for s in manager.status(private_stack))
    assert manager.down(private_stack) == []  # a second down is harmless too


def test_taken_port_names_the_port_and_the_setting(tmp_path: Path) -> None:
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        settings = private_settings(tmp_path / "state", kafka_port=port)

        with pytest.raises(ConfigurationError) as info:
            manager.up(settings, ["kafka"])

    message = str(info.value)
    assert f"port {port} is already in use" in message
    assert f"pid {os.getpid()}" in message
    assert "CHATBUS_KAFKA_PORT" in message
    assert process.running_pid(settings, "kafka") is None


def test_spawn_and_stop_a_process_group(tmp_path: Path) -> None:
    settings = private_settings(tmp_path / "state")
    pid = process.spawn(settings, "sleeper", ["sh", "-c", "sleep 60 & sleep 60 & wait"])
    assert process.running_pid(settings, "sleeper") == pid
    with pytest.raises(ConfigurationError):
        process.spawn(settings, "sleeper", ["sleep", "1"])

    def all_three() -> list[int] | None:
        members = process.group_members(pid)
        return members if len(members) >= 3 else None

    members = poll_until(all_three, timeout_s=5, what="both children")
    assert len(members) == 3

    assert process.stop(settings, "sleeper", timeout=5)
    assert _wait_until_gone(members) == []
    assert process.running_pid(settings, "sleeper") is None
    assert not process.pid_file(settings, "sleeper").exists()
    assert "starting" in process.log_file(settings, "sleeper").read_text()


def test_stale_pid_file_of_another_program_is_ignored(tmp_path: Path) -> None:
    settings = private_settings(tmp_path / "state")
    settings.run_dir.mkdir(parents=True)
    # this test's own PID: alive, but not the program the metadata says we started
    process.pid_file(settings, "redis").write_text(f"{os.getpid()}\n")
    process.meta_file(settings, "redis").write_text(json.dumps({"argv": ["redis-server"]}))
    assert process.running_pid(settings, "redis") is None
    assert not process.pid_file(settings, "redis").exists()
    assert process.stop(settings, "redis") is False  # and never signals it


class _ExitsFirst(Service):
    """A service whose first start dies as if its port was taken while it started (the ports
    are in Linux's ephemeral range), then listens; ``always`` dies every time."""

    title = "exits first"
    start_timeout = 20.0
    stop_timeout = 5.0

    def __init__(self, name: str, port: int, marker: Path, always: bool = False) -> None:
        self.name, self.port, self.marker, self.always = name, port, marker, always

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        return [(self.port, "TEST_PORT")]

    def address(self, settings: Settings) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self, settings: Settings) -> Command:
        script = (
            "import pathlib, socket, sys, time\n"
            f"marker = pathlib.Path({str(self.marker)!r})\n"
            f"if {self.always} or not marker.exists():\n"
            "    marker.touch(); print('Address already in use', flush=True); sys.exit(1)\n"
            f"s = socket.create_server(('127.0.0.1', {self.port}))\n"
            "while True: s.accept()\n"
        )
        return Command([sys.executable, "-c", script])

    def check(self, settings: Settings, timeout: float) -> str:
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout):
            return "listening"


def test_a_service_that_dies_while_starting_is_started_again(tmp_path: Path) -> None:
    settings = private_settings(tmp_path / "state")
    svc = _ExitsFirst("exits-first", ports.free_port(), tmp_path / "started-once")
    try:
        status = manager._up_one(settings, svc)
        assert status.healthy and status.detail == "listening"
        assert (tmp_path / "started-once").exists()  # the first start did die
    finally:
        process.stop(settings, svc.name, timeout=5)


def test_a_service_that_always_dies_while_starting_fails_with_its_log(tmp_path: Path) -> None:
    settings = private_settings(tmp_path / "state")
    svc = _ExitsFirst("always-exits", ports.free_port(), tmp_path / "m", always=True)
    with pytest.raises(ServiceUnavailable, match="exited during start-up"):
        manager._up_one(settings, svc)
    assert process.running_pid(settings, svc.name) is None
