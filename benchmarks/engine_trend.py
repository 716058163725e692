"""Does the llama.cpp engine get slower as it serves more requests? Drives ``LlamaCppEngine``
directly (no Kafka): ``--streams`` concurrent greedy requests of ``--new-tokens`` tokens, a new
one started as soon as one ends, for ``--minutes``; every window prints the tokens per second,
the tokens per CPU-second of this process (the figure that would fall if each decode step cost
more over time), the CPU the rest of the machine used meanwhile, and the mean time of a decode
step. At the end: the first three windows against the last three, as a ratio.

    .venv/bin/python -m benchmarks.engine_trend [--minutes 7] [--threads 1]

Uses the real model of ``make model`` (``CHATBUS_MODEL_NAME``/``CHATBUS_MODEL_PATH`` as the
worker resolves them).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.inference.cpu import machine_cpu_seconds
from chatbus.settings import Settings
from inference_consumers.engine.base import GenerationRequest
from inference_consumers.engine.llama_cpp_engine import LlamaCppEngine

WORDS = (
    "time",
    "year",
    "people",
    "way",
    "day",
    "thing",
    "life",
    "child",
    "world",
    "school",
    "family",
    "student",
    "group",
    "country",
    "problem",
    "hand",
    "part",
    "place",
    "week",
    "company",
    "system",
    "program",
    "question",
    "work",
    "number",
    "night",
    "point",
    "home",
    "water",
    "room",
    "area",
    "money",
    "story",
    "fact",
    "month",
    "book",
    "eye",
    "job",
    "word",
    "business",
    "side",
    "kind",
    "head",
    "house",
    "service",
    "friend",
    "power",
    "hour",
    "game",
    "line",
    "end",
    "member",
    "law",
    "car",
    "city",
    "community",
    "name",
    "team",
    "minute",
    "idea",
    "body",
    "river",
    "mountain",
    "garden",
    "kitchen",
    "window",
    "bridge",
    "engine",
    "market",
    "winter",
    "summer",
    "music",
    "picture",
    "letter",
)


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine has used, stolen time included."""
    busy, steal = machine_cpu_seconds()
    return busy + steal


def prompts(engine: LlamaCppEngine, n: int, seed: int) -> list[list[int]]:
    """``n`` chat-templated prompts of 30 to 300 words, reproducibly."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not security
    return [
        engine.encode_chat(
            [
                {
                    "role": "user",
                    "content": "Summarise in one sentence: "
                    + " ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 300))),
                }
            ]
        )
        for _ in range(n)
    ]


@dataclass
class Counters:
    finished: int = 0
    tokens: int = 0
    errors: int = 0
    steps: int = 0
    step_seconds: float = 0.0


def timed_decode(llama_cpp: Any, counters: Counters) -> None:
    """Count and time every ``llama_decode`` the batch loop makes."""
    real = llama_cpp.llama_decode

    def decode(ctx: Any, batch: Any) -> Any:
        started = time.perf_counter()
        rc = real(ctx, batch)
        counters.steps += 1
        counters.step_seconds += time.perf_counter() - started
        return rc

    llama_cpp.llama_decode = decode


async def run(args: argparse.Namespace) -> int:
    import llama_cpp

    counters = Counters()
    timed_decode(llama_cpp, counters)
    settings = Settings()
    engine = LlamaCppEngine(
        settings.resolved_model_path,
        model_name=settings.model.name,
        max_batch=args.streams,
        n_threads=args.threads or None,
    )
    await engine.start()
    print(f"# llama_cpp {llama_cpp.__version__}, {engine.n_threads} threads, n_ctx {engine.n_ctx}")
    load = prompts(engine, 1000, args.seed)
    numbers = itertools.count()
    deadline = time.monotonic() + args.minutes * 60

    async def client() -> None:
        while time.monotonic() < deadline:
            i = next(numbers)
            request = GenerationRequest(f"r{i}", load[i % len(load)], args.new_tokens, 0.0)
            async for event in engine.generate(request):
                counters.tokens += len(event.token_ids)
                if event.finished:
                    counters.finished += 1
                    counters.errors += event.finish_reason == "error"

    clients = [asyncio.create_task(client()) for _ in range(args.streams)]
    print("t_s  finished  tok/s  cpu_s  tok/cpu_s  others_cpu_s  step_ms", flush=True)
    windows: list[tuple[float, float]] = []
    started = time.monotonic()
    before = (started, sum(os.times()[:2]), machine_busy_seconds(), Counters(**vars(counters)))
    while not all(c.done() for c in clients):
        await asyncio.wait(clients, timeout=args.window)
        now = (
            time.monotonic(),
            sum(os.times()[:2]),
            machine_busy_seconds(),
            Counters(**vars(counters)),
        )
        wall, cpu = now[0] - before[0], now[1] - before[1]
        tokens = now[3].tokens - before[3].tokens
        steps = now[3].steps - before[3].steps
        step_ms = 1000 * (now[3].step_seconds - before[3].step_seconds) / max(steps, 1)
        per_cpu = tokens / cpu if cpu else 0.0
        print(
            f"{now[0] - started:4.0f}  {now[3].finished - before[3].finished:8d}  "
            f"{tokens / wall:5.1f}  {cpu:5.1f}  {per_cpu:9.2f}  "
            f"{now[2] - before[2] - cpu:12.1f}  {step_ms:7.1f}",
            flush=True,
        )
        if wall >= args.window * 0.9:
            windows.append((tokens / wall, per_cpu))
        before = now
    await engine.stop()
    print(f"# {counters.finished} requests, {counters.tokens} tokens, {counters.errors} errors")
    if len(windows) >= 6:
        first = sum(w[1] for w in windows[:3]) / 3
        last = sum(w[1] for w in windows[-3:]) / 3
        print(
            f"# tokens per CPU-second: first 3 windows {first:.2f}, last 3 {last:.2f}, "
            f"ratio last/first {last / first:.2f}"
        )
    return 1 if counters.errors else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=7.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per printed line")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: default)")
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
