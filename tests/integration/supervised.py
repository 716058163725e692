"""A private pipeline under the local supervisor, for the tests that drive it as an SRE does.

:func:`supervised_pipeline` runs ``chatbus pipeline up`` with settings of the test's own (topic
prefix, state directory, ports, database), yields a :class:`Pipeline` to drive the CLI with, and
takes everything down afterwards, checking by PID that nothing it started is left.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from chatbus.kafka.topic_setup import delete_prefixed_topics, ensure_topics
from chatbus.object_store import ObjectStore
from chatbus.settings import Settings
from infra.local import process
from tests.conftest import REPO, base_settings, mongo_database


class Pipeline:
    """A private pipeline: its settings, its environment, and the CLI run against it."""

    def __init__(self, settings: Settings, env: dict[str, str]) -> None:
        self.settings, self.env = settings, env

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatbus.cli", *args],
            cwd=REPO,
            env=os.environ | self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, dict[str, object]]:
        from infra.local import supervisor

        return supervisor.read_status(self.settings)

    def port(self, replica: str) -> int:
        return int(self.status()[replica]["port"])  # type: ignore[call-overload]


def logs(settings: Settings) -> str:
    """The tail of every component's log (for an assertion's message)."""
    return "".join(
        f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(settings.log_dir.glob("*.log"))
    )


@contextmanager
def supervised_pipeline(fields: dict[str, Any], *up_args: str) -> Iterator[Pipeline]:
    """``chatbus pipeline up [up_args]`` with the settings ``fields`` (flat names); down, topics,
    archive and database removed afterwards, and no process it started left behind."""
    settings = base_settings(**fields)
    env = {f"CHATBUS_{k.upper()}": str(v) for k, v in fields.items()} | {"HF_HUB_OFFLINE": "1"}
    ran = Pipeline(settings, env)
    asyncio.run(ensure_topics(settings))
    up = ran.cli("pipeline", "up", *up_args, "--timeout", "240", timeout=300)
    try:
        assert up.returncode == 0, up.stdout + up.stderr + logs(settings)
        yield ran
    finally:
        pids = [row.get("pid") for row in ran.status().values() if row.get("pid")]
        down = ran.cli("pipeline", "down", timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
        left = [pid for pid in pids if isinstance(pid, int) and process.is_alive(pid)]
        assert left == [], f"processes left after pipeline down: {left}"
        assert process.running_pid(settings, "supervisor") is None
        ObjectStore(settings).delete_prefix(settings.archive.prefix + "/")
        asyncio.run(delete_prefixed_topics(settings))
        with mongo_database(settings) as db:
            db.client.drop_database(settings.mongo.db)


def keys_by_partition(settings: Settings, count: int = 3) -> dict[int, list[str]]:
    """Conversation ids that land on each partition of chat.requests (the key partitioner)."""
    partitioner, partitions = DefaultPartitioner(), list(range(settings.kafka.topic_partitions))
    out: dict[int, list[str]] = {p: [] for p in partitions}
    while any(len(keys) < count for keys in out.values()):
        key = f"conv-{uuid.uuid4().hex}"
        chosen = out[partitioner(key.encode(), partitions, partitions)]
        if len(chosen) < count:
            chosen.append(key)
    return out


def replica_of(worker_id: str) -> str:
    return worker_id.split(".", 1)[0]  # the supervisor names worker ids <replica>.<host>.<hex>
