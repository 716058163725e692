"""What the benchmarked systems share: an async context whose failed start is undone, and an
OpenAI-compatible server subprocess on a free loopback port with a streaming client for it."""

from __future__ import annotations

import asyncio
from typing import Self

import httpx

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.openai_http import chat_body, server_ready, stream_chat
from benchmarks.inference.stats import StreamTrace
from benchmarks.inference.workload import Messages
from chatbus.polling import eventually
from chatbus.ports import free_port
from infra.local import process

READY_TIMEOUT_S = 300.0


def http_client(base_url: str, request_timeout_s: float) -> httpx.AsyncClient:
    """A client for many concurrent streams (no connection cap) to ``base_url``."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(request_timeout_s, connect=5.0),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
    )


class ManagedSystem:
    """``async with``: ``_start`` on entry (a failed start is undone by ``_stop``), ``_stop`` on
    exit; ``_stop`` must cope with a half-done start."""

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    async def _start(self) -> None:
        raise NotImplementedError

    async def _stop(self) -> None:
        raise NotImplementedError


class OpenAIServerSystem(ManagedSystem):
    """A server subprocess with an OpenAI API, started on a free port, and a streaming client."""

    label: str  # the server in messages and in ``processes()``
    ready_path: str  # answers 200 once the server serves
    ready_hint = ""  # said when the process exits before it is ready
    request_timeout_s = 300.0

    def __init__(self, config: ServingConfig, *, process_name: str, ready_timeout_s: float) -> None:
        self._config = config
        self._ready_timeout_s = ready_timeout_s
        self._process_name = process_name
        self._client: httpx.AsyncClient | None = None
        self._pid: int | None = None

    def argv(self, port: int) -> list[str]:
        """The server's command line, listening on 127.0.0.1:``port``."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment variables the server gets on top of the settings' ones."""
        return {}

    @property
    def model_id(self) -> str:
        """The model name the server answers to."""
        return self._config.model_name

    async def _start(self) -> None:
        port = free_port()
        self._pid = await asyncio.to_thread(
            process.spawn, self._config.settings, self._process_name, self.argv(port), self.env()
        )
        base_url = f"http://127.0.0.1:{port}"
        self._client = http_client(base_url, self.request_timeout_s)
        await eventually(
            self._ready,
            timeout_s=self._ready_timeout_s,
            interval=0.2,
            what=f"{self.label} at {base_url}",
        )

    async def _ready(self) -> bool:
        assert self._client is not None
        return await server_ready(
            self._client,
            self.ready_path,
            settings=self._config.settings,
            process_name=self._process_name,
            who=f"{self.label}{self.ready_hint}",
        )

    async def _stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._pid is not None:
            await asyncio.to_thread(process.stop, self._config.settings, self._process_name)
            self._pid = None

    def processes(self) -> dict[str, int]:
        return {self.label: self._pid} if self._pid else {}

    async def stream(self, messages: Messages, max_new_tokens: int) -> StreamTrace:
        client = self._client
        if client is None:
            raise BenchError(f"{self.label} is not started")
        config = self._config
        return await stream_chat(
            client,
            chat_body(self.model_id, messages, max_new_tokens, config.temperature, config.top_p),
            who=self.label,
        )
