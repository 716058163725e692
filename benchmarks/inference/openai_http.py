"""Stream one chat completion from an OpenAI-compatible HTTP server (the peers, the gateway)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx

from benchmarks.inference.errors import BenchError
from benchmarks.inference.stats import StreamTrace
from benchmarks.inference.workload import Messages
from chatbus.settings import Settings
from infra.local import process


async def server_ready(
    client: httpx.AsyncClient, path: str, *, settings: Settings, process_name: str, who: str
) -> bool:
    """Whether the server process ``process_name`` answers ``path`` with 200; raises
    :class:`BenchError` (pointing at its log) once the process has exited."""
    if await asyncio.to_thread(process.running_pid, settings, process_name) is None:
        raise BenchError(f"{who} exited; see {process.log_file(settings, process_name)}")
    try:
        response = await client.get(path, timeout=2.0)
    except httpx.TransportError:
        return False
    return response.status_code == httpx.codes.OK


def chat_body(
    model: str, messages: Messages, max_new_tokens: int, temperature: float, top_p: float
) -> dict[str, Any]:
    return {
        "model": model,
        "messages": messages,
        "stream": True,
        "max_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "stream_options": {"include_usage": True},
    }


async def stream_chat(
    client: httpx.AsyncClient,
    body: Mapping[str, Any],
    *,
    who: str,
    headers: Mapping[str, str] | None = None,
) -> StreamTrace:
    """POST ``body`` to ``/v1/chat/completions`` and record what arrives, as a client sees it."""
    trace = StreamTrace(sent_at=time.perf_counter())
    async with client.stream(
        "POST", "/v1/chat/completions", json=dict(body), headers=dict(headers or {})
    ) as response:
        if response.status_code != httpx.codes.OK:
            detail = (await response.aread()).decode(errors="replace")[:500]
            raise BenchError(f"{who} answered HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if on_sse_line(trace, line, time.perf_counter(), who):
                break
    if trace.finished_at is None:
        raise BenchError(f"the {who} stream ended without a finish_reason")
    return trace


def on_sse_line(trace: StreamTrace, line: str, now: float, who: str = "server") -> bool:
    """Record one SSE line; True on ``[DONE]`` (a server that sends none closes the stream)."""
    if not line.startswith("data:"):
        return False
    data = line[5:].strip()
    if data == "[DONE]":
        if trace.finished_at is None:
            trace.finish(now, "done")
        return True
    payload: dict[str, Any] = json.loads(data)
    if "error" in payload:
        raise BenchError(f"{who} stream error: {payload['error']}")
    if trace.request_id is None and isinstance(payload.get("id"), str):
        trace.request_id = payload["id"]
    usage = payload.get("usage")
    if usage:
        trace.reported_tokens = int(usage.get("completion_tokens", 0))
    for choice in payload.get("choices", []):
        if choice.get("delta", {}).get("content"):
            trace.add(now, 1)  # one delta per decoded piece; usage gives the exact count
        if choice.get("finish_reason"):
            # Not over yet: with include_usage a usage-only chunk and [DONE] follow (the gateway,
            # llama.cpp); transformers serve folds usage in here and closes the stream.
            trace.finish(now, str(choice["finish_reason"]))
    return False
