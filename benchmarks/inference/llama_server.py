"""The CPU peer: llama.cpp's own OpenAI server (``llama-cpp-python[server]``) on the same GGUF.

What a CPU user would run instead of chatbus. ``--chat_format chatml`` renders the same ChatML
prompt as the model's Hugging Face template (without it, its template detection answered the
capital-of-France prompt with nonsense). It serves one sequence at a time, and by default a new
request interrupts the one streaming (``--interrupt_requests``): here they queue.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid

import httpx

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.openai_http import chat_body, server_ready, stream_chat
from benchmarks.inference.peer import free_port
from benchmarks.inference.stats import StreamTrace
from benchmarks.inference.workload import Messages
from chatbus.polling import eventually
from inference_consumers.engine.llama_cpp_engine import CTX_PER_SLOT, find_gguf
from infra.local import process

READY_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 600.0


class LlamaServerSystem:
    """A ``python -m llama_cpp.server`` subprocess and a streaming HTTP client for it."""

    name = "llama.cpp"

    def __init__(self, config: ServingConfig, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        self._config = config
        self._ready_timeout_s = ready_timeout_s
        self._process_name = f"bench-llama-server-{uuid.uuid4().hex[:8]}"
        self._client: httpx.AsyncClient | None = None
        self._pid: int | None = None

    def argv(self, port: int) -> list[str]:
        gguf = find_gguf(self._config.model_path)
        if gguf is None:
            raise BenchError(f"no .gguf at {self._config.model_path} for the llama.cpp server")
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            self._config.model_name,
            "--chat_format",
            "chatml",
            "--n_ctx",
            str(CTX_PER_SLOT),
            "--n_threads",
            str(os.cpu_count() or 1),
            # its default lets each new request cut the one streaming: queue them instead
            "--interrupt_requests",
            "False",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]

    async def __aenter__(self) -> LlamaServerSystem:
        try:
            port = free_port()
            self._pid = await asyncio.to_thread(
                process.spawn, self._config.settings, self._process_name, self.argv(port), {}
            )
            self._client = httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}",
                timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=5.0),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
            )
            await eventually(
                self._ready,
                timeout_s=self._ready_timeout_s,
                interval=0.2,
                what=f"the llama.cpp server on port {port}",
            )
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def _ready(self) -> bool:
        assert self._client is not None
        return await server_ready(
            self._client,
            "/v1/models",
            settings=self._config.settings,
            process_name=self._process_name,
            who="the llama.cpp server (is llama-cpp-python[server] installed?)",
        )

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._pid is not None:
            await asyncio.to_thread(process.stop, self._config.settings, self._process_name)
            self._pid = None

    def processes(self) -> dict[str, int]:
        return {"llama.cpp server": self._pid} if self._pid else {}

    async def stream(self, messages: Messages, max_new_tokens: int) -> StreamTrace:
        if self._client is None:
            raise BenchError("the llama.cpp server is not started")
        config = self._config
        return await stream_chat(
            self._client,
            chat_body(
                config.model_name, messages, max_new_tokens, config.temperature, config.top_p
            ),
            who="llama.cpp server",
        )
