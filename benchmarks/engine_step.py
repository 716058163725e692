"""How long running streams stall while new prompts are prefilled, by the llama.cpp engine's step
budget: a whole 512-token batch a step (the default until 2026-12-01, the baseline) against a
candidate (by default the engine's default, 256), in one run.

    .venv/bin/python -m benchmarks.engine_step [--step-tokens 128] [--threads 1] [--rounds 3]

Each round, on the worker's own engine (``LlamaCppEngine``, the real model's GGUF, greedy): eight
streams are decoding when six requests with 300-token prompts arrive at once (what a burst of new
requests, or a dead worker's streams resumed on a survivor, puts on a worker). Printed per
budget: the largest gap between two tokens of a running stream after the burst arrives (the
stall users see), the newcomers' time to first token, and the wall time until all six have their
first token (the prefill's own cost), with the ratio of each to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from chatbus.settings import get_settings
from inference_consumers.engine.base import GenerationRequest
from inference_consumers.engine.llama_cpp_engine import (
    N_BATCH,
    STEP_TOKENS,
    LlamaCppEngine,
    find_gguf,
)

BASELINE_STEP_TOKENS = N_BATCH
RUNNING, ARRIVING = 8, 6
PROMPT_TOKENS = 300


def prompt(seed: int, length: int) -> list[int]:
    """Token ids of a prompt that shares no leading tokens with another seed's."""
    return [100 + (seed * 7919 + i * (31 + seed)) % 5000 for i in range(length)]


async def one_round(engine: LlamaCppEngine, round_no: int) -> tuple[float, list[float], float]:
    """(largest gap of a running stream after the burst, newcomers' TTFTs, burst wall time)."""
    arrivals: dict[str, list[float]] = {}
    warmed: set[str] = set()
    all_decoding = asyncio.Event()  # every running stream has 10 tokens

    async def run(request: GenerationRequest) -> None:
        times = arrivals.setdefault(request.request_id, [])
        async for event in engine.generate(request):
            if event.token_ids:
                times.append(time.perf_counter())
                if len(times) >= 10 and "-run" in request.request_id:
                    warmed.add(request.request_id)
                    if len(warmed) == RUNNING:
                        all_decoding.set()

    tag = f"r{round_no}"
    running = [
        asyncio.create_task(
            run(GenerationRequest(f"{tag}-run{i}", prompt(round_no * 100 + i, 20), 400, 0.0))
        )
        for i in range(RUNNING)
    ]
    await all_decoding.wait()
    start = time.perf_counter()
    newcomers = [
        # a prompt never seen before: nothing of it is in the cache (prefix reuse)
        GenerationRequest(f"{tag}-new{i}", prompt(round_no * 100 + 50 + i, PROMPT_TOKENS), 3, 0.0)
        for i in range(ARRIVING)
    ]
    await asyncio.gather(*(run(r) for r in newcomers))
    first_tokens = [arrivals[r.request_id][0] for r in newcomers]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    gaps = [
        b - a
        for i in range(RUNNING)
        for a, b in zip(arrivals[f"{tag}-run{i}"], arrivals[f"{tag}-run{i}"][1:], strict=False)
        if b > start and a < max(first_tokens)
    ]
    return max(gaps), [t - start for t in first_tokens], max(first_tokens) - start


async def started_engine(max_batch: int, threads: int, **options: Any) -> LlamaCppEngine:
    """The worker's llama.cpp engine on the configured model's GGUF, started; ``options`` are
    the engine's own (the candidate a benchmark measures)."""
    folder = get_settings().resolved_model_path
    if find_gguf(folder) is None:
        raise SystemExit(f"no GGUF model in {folder}: build the models with `make model`")
    engine = LlamaCppEngine(
        folder, model_name="bench", max_batch=max_batch, n_threads=threads, **options
    )
    await engine.start()
    return engine


async def measure(step_tokens: int, threads: int, rounds: int) -> dict[str, float]:
    engine = await started_engine(RUNNING + ARRIVING, threads, step_tokens=step_tokens)
    gaps, ttfts, walls = [], [], []
    try:
        for round_no in tqdm(range(rounds), desc=f"step {step_tokens} tokens", unit="round"):
            gap, firsts, wall = await one_round(engine, round_no)
            gaps.append(gap)
            ttfts.extend(firsts)
            walls.append(wall)
    finally:
        await engine.stop()
    return {
        "largest_gap_s": max(gaps),
        "median_largest_gap_s": statistics.median(gaps),
        "ttft_mean_s": statistics.fmean(ttfts),
        "burst_wall_s": statistics.median(walls),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--step-tokens", type=int, default=STEP_TOKENS, help="the candidate budget")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base = asyncio.run(measure(BASELINE_STEP_TOKENS, args.threads, args.rounds))
    ours = asyncio.run(measure(args.step_tokens, args.threads, args.rounds))
    print(
        f"\n{RUNNING} streams decoding, {ARRIVING} prompts of {PROMPT_TOKENS} tokens arrive; "
        f"{args.threads} thread(s), {args.rounds} rounds"
    )
    print(f"| figure | step {BASELINE_STEP_TOKENS} (baseline) | step {args.step_tokens} | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for key, label in (
        ("largest_gap_s", "largest gap of a running stream (s)"),
        ("median_largest_gap_s", "median over rounds of the largest gap (s)"),
        ("ttft_mean_s", "newcomers' mean time to first token (s)"),
        ("burst_wall_s", "until every newcomer has a token (s)"),
    ):
        print(f"| {label} | {base[key]:.2f} | {ours[key]:.2f} | {ours[key] / base[key]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
