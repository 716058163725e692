"""The peer: ``transformers serve --continuous-batching`` on the same model, over its OpenAI API.

Facts this module relies on (transformers 5.x): the server needs the ``transformers[serving]``
extra; its SSE stream ends on the chunk with ``finish_reason`` (no ``data: [DONE]``), which also
carries ``usage``; ``/v1/models`` fails unless ``HF_HOME`` holds a ``hub/`` folder, so the server
gets a temporary one; a server started on one model answers only that model's name (its path).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sys
import tempfile
import uuid
from pathlib import Path

import httpx

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.openai_http import chat_body, server_ready, stream_chat
from benchmarks.inference.stats import StreamTrace
from benchmarks.inference.workload import Messages
from chatbus.polling import eventually
from infra.local import process

READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 300.0


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_argv(config: ServingConfig, port: int) -> list[str]:
    """The ``transformers serve`` command line matching the worker's engine."""
    program = Path(sys.executable).with_name("transformers")
    if not program.exists():
        found = shutil.which("transformers")
        if found is None:
            raise BenchError("`transformers` CLI not found: pip install 'transformers[serving]'")
        program = Path(found)
    argv = [
        str(program),
        "serve",
        str(config.model_path),
        "--continuous-batching",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        config.device,
        "--dtype",
        config.dtype,
        "--cb-block-size",
        str(config.block_size),
        "--log-level",
        "warning",
    ]
    if config.num_blocks is not None:
        argv += ["--cb-num-blocks", str(config.num_blocks)]
    if config.max_batch_tokens is not None:
        argv += ["--cb-max-batch-tokens", str(config.max_batch_tokens)]
    return argv


class PeerSystem:
    """A ``transformers serve`` subprocess and a streaming HTTP client for it."""

    name = "peer"  # transformers serve

    def __init__(self, config: ServingConfig, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self._config = config
        self._ready_timeout_s = ready_timeout_s
        self._process_name = f"bench-peer-{uuid.uuid4().hex[:8]}"
        self._hf_home: tempfile.TemporaryDirectory[str] | None = None
        self._client: httpx.AsyncClient | None = None
        self._pid: int | None = None
        self._model_id = str(config.model_path)

    async def __aenter__(self) -> PeerSystem:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        self._hf_home = tempfile.TemporaryDirectory(prefix="chatbus-bench-hf-")
        (Path(self._hf_home.name) / "hub").mkdir()
        port = free_port()
        env = {
            "HF_HOME": self._hf_home.name,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        }
        self._pid = await asyncio.to_thread(
            process.spawn,
            self._config.settings,
            self._process_name,
            serve_argv(self._config, port),
            env,
        )
        base_url = f"http://127.0.0.1:{port}"
        self._client = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
        )
        await eventually(
            self._ready,
            timeout_s=self._ready_timeout_s,
            interval=0.2,
            what=f"transformers serve at {base_url}",
        )

    async def _ready(self) -> bool:
        assert self._client is not None
        return await server_ready(
            self._client,
            "/health",
            settings=self._config.settings,
            process_name=self._process_name,
            who="transformers serve",
        )

    async def _stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._pid is not None:
            await asyncio.to_thread(process.stop, self._config.settings, self._process_name)
            self._pid = None
        if self._hf_home is not None:
            self._hf_home.cleanup()
            self._hf_home = None

    async def stream(self, messages: Messages, max_new_tokens: int) -> StreamTrace:
        client = self._client
        if client is None:
            raise BenchError("the peer server is not started")
        config = self._config
        return await stream_chat(
            client,
            chat_body(self._model_id, messages, max_new_tokens, config.temperature, config.top_p),
            who="transformers serve",
        )

    def processes(self) -> dict[str, int]:
        return {"transformers serve": self._pid} if self._pid else {}
