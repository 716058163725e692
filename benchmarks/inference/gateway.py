"""chatbus as users call it: the whole local pipeline (processors with moderation, archiver,
worker, gateway) under its own supervisor, driven through the gateway's ``/v1/chat/completions``
with an API key, exactly as the ``openai`` package does.

It runs on fresh topics, its own state folder, ports and MongoDB database, beside whatever else
runs, and is stopped (by PID) and cleaned up afterwards. The gateway's ``trace_breakdown`` log
lines give each request's time to first token by stage.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.openai_http import chat_body, stream_chat
from benchmarks.inference.stats import StreamTrace
from benchmarks.inference.system import READY_TIMEOUT_S, ManagedSystem, http_client
from benchmarks.inference.workload import Messages
from chatbus.kafka.topic_setup import admin_client, ensure_topics
from chatbus.ports import free_port
from chatbus.settings import Settings
from infra.local import process
from infra.local.supervisor import read_status
from schemas.topics import TOPICS

REQUEST_TIMEOUT_S = 600.0
SERVICES = ("kafka", "ferretdb", "postgres", "redis", "s3")
STAGES = (
    "gateway_ms",
    "bus_ms",
    "moderation_ms",
    "queue_ms",
    "prefill_ms",
    "delivery_ms",
    "ttft_ms",
)


def free_port_block(size: int = 64) -> int:
    """The first port of ``size`` consecutive loopback ports nobody listens on."""
    for _ in range(50):
        base = free_port()
        if base + size > 65000:
            continue
        try:
            for port in range(base, base + size):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise BenchError(f"no block of {size} free ports on 127.0.0.1")


class GatewaySystem(ManagedSystem):
    """A private ``chatbus pipeline up`` and an HTTP client with an API key."""

    name = "chatbus-gateway"

    def __init__(self, config: ServingConfig, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self._config = config
        self._ready_timeout_s = ready_timeout_s
        run_id = uuid.uuid4().hex[:10]
        self._state = Path(tempfile.mkdtemp(prefix="chatbus-bench-gateway-"))
        s = config.settings
        self.settings: Settings = s.replace(
            **{
                "topic_prefix": f"bench-{run_id}.",
                "state_dir": self._state,
                "gateway_port": free_port(),
                "local_metrics_base_port": free_port_block(),
                "mongo_db": f"bench_{run_id}",
            }
        )
        self._env = self.settings.replace(
            model_path=self.settings.resolved_model_path,
            archive_prefix=f"bench-{run_id}",
            gateway_requests_per_minute=1_000_000,
            gateway_tokens_per_minute=1_000_000_000,
            log_json=True,
        ).as_env() | {"HF_HUB_OFFLINE": "1"}
        self._client: httpx.AsyncClient | None = None
        self._key = ""
        self._up = False

    def _cli(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chatbus.cli", *args],
            env=os.environ | self._env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    async def _start(self) -> None:
        await ensure_topics(self.settings)
        self._up = True
        up = await asyncio.to_thread(
            self._cli,
            "pipeline",
            "up",
            "--timeout",
            str(int(self._ready_timeout_s)),
            timeout=self._ready_timeout_s + 60,
        )
        if up.returncode != 0:
            raise BenchError(
                f"the bench pipeline did not come up: {up.stderr.strip()[-800:]} "
                f"(its logs, kept: {self._keep_logs()})"
            )
        made = await asyncio.to_thread(self._cli, "keys", "create", "--user", "bench", timeout=60)
        if made.returncode != 0:
            raise BenchError(f"could not create an API key: {made.stderr.strip()[-400:]}")
        self._key = made.stdout.strip().splitlines()[-1]
        self._client = http_client(
            f"http://127.0.0.1:{self.settings.gateway.port}", REQUEST_TIMEOUT_S
        )

    async def _stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._up:
            self._up = False
            await asyncio.to_thread(self._cli, "pipeline", "down", timeout=300)
            await self._cleanup()
        shutil.rmtree(self._state, ignore_errors=True)

    def _keep_logs(self) -> Path:
        """Copy the private pipeline's logs out of its state folder (removed on stop) into
        ``<state_dir>/bench/failed-logs``; the folder they are in."""
        kept = Path(self._config.settings.state_dir) / "bench" / "failed-logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(self.settings.log_dir, kept, dirs_exist_ok=True)
        return kept

    async def _cleanup(self) -> None:
        async with admin_client(self.settings) as admin:
            await admin.delete_topics([self.settings.topic(t) for t in TOPICS])
        from chatbus.stores import mongo_client

        mongo = mongo_client(self.settings)
        try:
            mongo.drop_database(self.settings.mongo.db)
        finally:
            mongo.close()

    def add_env(self, **variables: str) -> None:
        """More CHATBUS_* variables for the pipeline (before it starts)."""
        self._env.update(variables)

    @property
    def env(self) -> dict[str, str]:
        """The pipeline's CHATBUS_* variables (what its commands run with)."""
        return dict(self._env)

    @property
    def api_key(self) -> str:
        """The key of the benchmark's user (created at start)."""
        if not self._key:
            raise BenchError("the gateway is not started")
        return self._key

    def processes(self) -> dict[str, int]:
        """The pipeline's processes and the services it uses (for CPU seconds)."""
        found = {
            name: row.get("pid")
            for name, row in read_status(self.settings).items()
            if row.get("state") == "running"
        }
        for service in SERVICES:
            found[service] = process.running_pid(self._config.settings, service)
        return {name: int(pid) for name, pid in found.items() if isinstance(pid, int)}

    async def stream(self, messages: Messages, max_new_tokens: int) -> StreamTrace:
        if self._client is None:
            raise BenchError("the gateway is not started")
        config = self._config
        trace = await stream_chat(
            self._client,
            chat_body(
                config.model_name, messages, max_new_tokens, config.temperature, config.top_p
            ),
            who="chatbus gateway",
            headers={"Authorization": f"Bearer {self._key}"},
        )
        if trace.request_id:  # chatcmpl-<id> names request req-<id>
            trace.request_id = "req-" + trace.request_id.removeprefix("chatcmpl-")
        return trace

    def stage_lines(self) -> dict[str, dict[str, float]]:
        """Each request's TTFT by stage (ms), from the gateway's ``trace_breakdown`` lines."""
        out: dict[str, dict[str, float]] = {}
        path = process.log_file(self.settings, "gateway")
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            return out
        for line in lines:
            if '"trace_breakdown"' not in line:
                continue
            try:
                record = json.loads(line[line.index("{") :])
            except ValueError:
                continue
            request_id = record.get("request_id")
            if isinstance(request_id, str):
                out[request_id] = {k: float(record[k]) for k in STAGES if k in record}
        return out
