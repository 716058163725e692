"""The stream processors (``chatbus processors``) as a subprocess of one test, and its cleanup."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from chatbus.polling import eventually
from chatbus.settings import Settings
from schemas.topics import TopicName

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 120.0  # interpreter + sentence-transformers import + model load on a busy 2-core box
# the rules classifier (no embedding model to load) and the history agent's debug lines
RULES_ONLY = {"CHATBUS_MODERATION_CLASSIFIER": "rules", "CHATBUS_LOG_LEVEL": "DEBUG"}


def start_processors(settings: Settings, state_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    """``chatbus processors`` for ``settings`` (``env`` adds or overrides CHATBUS_* settings);
    its output goes to ``state_dir/processors.log``."""
    environ = (
        os.environ
        | settings.replace(state_dir=state_dir, log_json=False).as_env()
        | {"HF_HUB_OFFLINE": "1"}
        | env
    )
    return start_cli("processors", environ, state_dir / "processors.log")


def start_cli(command: str, environ: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``chatbus COMMAND`` run from the repository root with ``environ``, its output appended to
    ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "chatbus.cli", command],
            cwd=REPO,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@asynccontextmanager
async def running_processors(
    settings: Settings, state_dir: Path, **env: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """``chatbus processors`` for the block; afterwards stopped by PID, the tail of its log
    printed (pytest shows it for a failed test), and its internal topics deleted."""
    proc = start_processors(settings, state_dir, **env)
    try:
        yield proc
    finally:
        stop_processors(proc)
        print((state_dir / "processors.log").read_text(errors="replace")[-4000:])
        await delete_internal_topics(settings)


@asynccontextmanager
async def moderation_service(settings: Settings, state_dir: Path) -> AsyncIterator[None]:
    """The processors (rules classifier) serving ``POST /v1/moderations`` on the port of
    ``settings.moderation.service_url``, ready, for the block."""
    port = str(settings.moderation.service_url).rstrip("/").rsplit(":", 1)[1]
    env = {**RULES_ONLY, "CHATBUS_METRICS_PORT": port}
    async with running_processors(settings, state_dir, **env), httpx.AsyncClient() as http:

        async def ready() -> bool:
            try:
                return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(ready, timeout_s=STARTUP_S, what="the processors to be ready")
        yield


def stop_processors(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop it (SIGTERM lets Faust leave the group), killing it if it will not go."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def delete_internal_topics(settings: Settings) -> None:
    """The app's own topics (repartition, changelog) under the test's prefix."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        registry = {settings.topic(t) for t in TopicName}
        ours = [
            t
            for t in await admin.list_topics()
            if t.startswith(settings.kafka.topic_prefix) and t not in registry
        ]
        if ours:
            await admin.delete_topics(ours)
    finally:
        await admin.close()


class Processors:
    """The processors subprocess of a test; restartable."""

    def __init__(self, settings: Settings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.proc = start_processors(settings, state_dir, **RULES_ONLY)

    def kill(self) -> None:
        stop_processors(self.proc, signal.SIGKILL)

    def start(self) -> None:
        self.proc = start_processors(self.settings, self.state_dir, **RULES_ONLY)

    def log_tail(self) -> str:
        return (self.state_dir / "processors.log").read_text(errors="replace")[-4000:]


@pytest.fixture
async def processors(history_settings: Settings, tmp_path: Path) -> AsyncIterator[Processors]:
    running = Processors(history_settings, tmp_path)
    try:
        yield running
    finally:
        stop_processors(running.proc)
        print(running.log_tail())
        await delete_internal_topics(history_settings)
