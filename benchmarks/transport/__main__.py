"""Transport benchmark: the Responses API's time to first event over SSE and over the WebSocket,
and what resuming a stream costs, on the user's path.

``python -m benchmarks.transport [--rounds 12] [--max-tokens 16]`` starts a private copy of the
whole local pipeline (processors with input and output moderation, archiver, worker on the
default model, gateway) under its own supervisor, exactly as ``make run`` does, with an API key,
then, one stream at a time:

1. **SSE** (the baseline): ``POST /v1/responses`` with ``stream: true`` over a kept-alive HTTP
   connection: time to the first event (``response.created``) and to the first text delta;
2. **WebSocket**: ``response.create`` on one open ``/v1/responses`` WebSocket (OpenAI's WebSocket
   mode, a connection reused across responses as its clients do): the same two times;
3. **resume**: the SSE stream cut after its first delta and resumed with
   ``GET /v1/responses/{id}?stream=true&starting_after=N`` (the chunks read again from Kafka):
   time to the first resumed event, and whether the events put together are the whole answer.

SSE and WebSocket alternate round by round, so both see the same machine. Prints medians and
p90s and the WebSocket/SSE ratio; writes ``.chatbus/bench/transport.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from tqdm import tqdm

from benchmarks.inference.config import serving_config
from benchmarks.inference.gateway import GatewaySystem
from benchmarks.inference.report import write_json
from chatbus.settings import get_settings

PROMPT = "What is the capital of France?"


def _body(model: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "input": PROMPT, "max_output_tokens": max_tokens, "temperature": 0}


async def _sse(
    http: httpx.AsyncClient, body: dict[str, Any], *, cut_after_delta: bool = False
) -> tuple[float, float, list[dict[str, Any]]]:
    """(ms to the first event, ms to the first delta, the events read)."""
    started = time.perf_counter()
    first_event = first_delta = 0.0
    events: list[dict[str, Any]] = []
    async with http.stream("POST", "/v1/responses", json={**body, "stream": True}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            events.append(event)
            now = (time.perf_counter() - started) * 1000
            first_event = first_event or now
            if event["type"] == "response.output_text.delta" and not first_delta:
                first_delta = now
                if cut_after_delta:
                    break
    return first_event, first_delta, events


async def _ws(socket: Any, body: dict[str, Any]) -> tuple[float, float]:
    started = time.perf_counter()
    first_event = first_delta = 0.0
    await socket.send(json.dumps({"type": "response.create", **body}))
    while True:
        event = json.loads(await socket.recv())
        now = (time.perf_counter() - started) * 1000
        first_event = first_event or now
        if event["type"] == "response.output_text.delta" and not first_delta:
            first_delta = now
        if event["type"] in ("response.completed", "response.incomplete", "response.failed"):
            return first_event, first_delta


async def _resume(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[float, bool]:
    """(ms to the first resumed event, whether cut + resumed events are the whole answer)."""
    _, _, seen = await _sse(http, body, cut_after_delta=True)
    response_id, last = seen[0]["response"]["id"], seen[-1]["sequence_number"]
    started = time.perf_counter()
    first = 0.0
    rest: list[dict[str, Any]] = []
    url = f"/v1/responses/{response_id}?stream=true&starting_after={last}"
    async with http.stream("GET", url) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                first = first or (time.perf_counter() - started) * 1000
                rest.append(json.loads(line[6:]))
    numbers = [e["sequence_number"] for e in seen + rest]
    text = "".join(e.get("delta", "") for e in seen + rest)
    final = rest[-1]["response"] if rest and "response" in rest[-1] else {}
    whole = (
        numbers == list(range(len(numbers)))
        and final.get("output", [{}])[0].get("content", [{}])[0].get("text") == text
    )
    return first, whole


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"median_ms": round(statistics.median(ordered), 1), "p90_ms": round(p90, 1)}


async def run(rounds: int, max_tokens: int) -> dict[str, Any]:
    settings = get_settings()
    config = serving_config(settings, settings.worker.max_inflight)
    samples: dict[str, list[float]] = {
        k: [] for k in ("sse_event", "sse_delta", "ws_event", "ws_delta", "resume_event")
    }
    whole = 0
    print(f"==> starting a private pipeline ({config.model_name}, moderation on)")
    async with GatewaySystem(config) as system:
        port = system.settings.gateway.port
        key = system.api_key
        headers = {"Authorization": f"Bearer {key}"}
        body = _body(config.model_name, max_tokens)
        async with (
            httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=300
            ) as http,
            websockets.connect(
                f"ws://127.0.0.1:{port}/v1/responses", additional_headers=headers
            ) as socket,
        ):
            await _sse(http, body)  # warm both paths once
            await _ws(socket, body)
            for n in tqdm(range(rounds), desc="rounds", unit="round"):
                order = ("sse", "ws") if n % 2 == 0 else ("ws", "sse")
                for transport in order:
                    if transport == "sse":
                        event, delta, _ = await _sse(http, body)
                    else:
                        event, delta = await _ws(socket, body)
                    samples[f"{transport}_event"].append(event)
                    samples[f"{transport}_delta"].append(delta)
                resumed, complete = await _resume(http, body)
                samples["resume_event"].append(resumed)
                whole += complete
    result: dict[str, Any] = {name: _summary(values) for name, values in samples.items()}
    result["ws_over_sse_first_event"] = round(
        result["ws_event"]["median_ms"] / result["sse_event"]["median_ms"], 2
    )
    result["ws_over_sse_first_delta"] = round(
        result["ws_delta"]["median_ms"] / result["sse_delta"]["median_ms"], 2
    )
    result["resumed_whole"] = f"{whole}/{rounds}"
    result["rounds"] = rounds
    result["max_tokens"] = max_tokens
    result["model"] = config.model_name
    result["machine"] = f"{platform.machine()} {platform.processor() or ''} {_cpus()} CPUs".strip()
    return result


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _print(result: dict[str, Any]) -> None:
    print(f"\nResponses API, one stream at a time, {result['model']}, {result['rounds']} rounds")
    print(f"{'path':34} {'median ms':>10} {'p90 ms':>8}")
    rows = [
        ("SSE: first event", "sse_event"),
        ("WebSocket: first event", "ws_event"),
        ("SSE: first text delta", "sse_delta"),
        ("WebSocket: first text delta", "ws_delta"),
        ("resume (GET ?stream): first event", "resume_event"),
    ]
    for label, name in rows:
        row = result[name]
        print(f"{label:34} {row['median_ms']:>10} {row['p90_ms']:>8}")
    print(
        f"WebSocket / SSE: first event {result['ws_over_sse_first_event']}, "
        f"first delta {result['ws_over_sse_first_delta']}; "
        f"resumed streams whole: {result['resumed_whole']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    result = asyncio.run(run(args.rounds, args.max_tokens))
    _print(result)
    out = Path(get_settings().state_dir) / "bench" / "transport.json"
    write_json(out, result)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
