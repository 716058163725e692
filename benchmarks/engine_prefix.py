"""What sharing a running stream's prefix saves new prompts: the llama.cpp engine with every
prompt computed whole (the baseline, as before 2026-12-02) against the engine that gives a new
sequence the cells of the running sequence sharing most of its prompt, in one run.

    .venv/bin/python -m benchmarks.engine_prefix [--threads 1] [--rounds 3]

Each round, on the worker's own engine (``LlamaCppEngine``, the real model's GGUF, greedy):
eight streams under one system prompt (an app's instructions, ~150 tokens) are decoding when
eight more requests under the same system prompt, each with its own question, arrive at once —
what an app's users do, and what a dead worker's streams are when a survivor resumes them.
Printed for each: the newcomers' time to first token, the wall time until all eight have one,
the largest gap of a running stream meanwhile, and the prompt tokens computed, with the ratio
of each to the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from collections.abc import Sequence

from tqdm import tqdm

from benchmarks.engine_step import started_engine
from inference_consumers.engine.base import GenerationRequest
from inference_consumers.engine.llama_cpp_engine import LlamaCppEngine

RUNNING, ARRIVING = 8, 8
SYSTEM = (
    "You are the support assistant of Northwind Travel, a small agency that books trains, "
    "ferries and hotels across Europe. Answer in at most two sentences, in the customer's "
    "language. Never invent a price, a timetable or a booking reference: when you do not know, "
    "say so and offer to pass the question to a human agent. Do not give legal, medical or "
    "visa advice beyond pointing to the official source. Be warm but brief, use the customer's "
    "name when they give it, and do not repeat the question back to them."
)
QUESTIONS = [
    "Can I bring my bicycle on the night train to Vienna?",
    "What is the cheapest way to get from Lyon to Turin?",
    "My ferry to Corsica was cancelled, what are my options?",
    "Do you book hotels with a kitchen in Lisbon?",
    "How early should I be at the station for a Eurostar?",
    "Can I change the name on a booking I made for my sister?",
    "Is breakfast included in the Prague hotel I booked?",
    "Which trains go from Munich to Venice in the morning?",
    "I lost my ticket, can you send it again?",
    "Are pets allowed on ferries to the Greek islands?",
    "What happens if my connecting train is late?",
    "Can I pay for a booking in two parts?",
    "Do night trains have private cabins?",
    "How do I get a refund for an unused hotel night?",
    "Is there a discount for travellers under twenty-six?",
    "Can you recommend a quiet hotel near Florence station?",
]


def chat(engine: LlamaCppEngine, round_no: int, question: str) -> list[int]:
    """The prompt of ``question`` under the round's system prompt: each round's starts with its
    own number, so no sequence parked by an earlier round shares its prefix (parked sequences
    are reused either way; this measures what running ones add)."""
    system = f"Session {round_no}. {SYSTEM}"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    return engine.encode_chat(messages)


async def one_round(engine: LlamaCppEngine, round_no: int) -> dict[str, float]:
    arrivals: dict[str, list[float]] = {}
    decoding = asyncio.Event()  # every running stream has a few tokens

    async def run(request: GenerationRequest) -> None:
        times = arrivals.setdefault(request.request_id, [])
        async for event in engine.generate(request):
            if event.token_ids:
                times.append(time.perf_counter())
                running = [arrivals.get(f"r{round_no}-run{i}", []) for i in range(RUNNING)]
                if all(len(t) >= 4 for t in running):
                    decoding.set()

    loop = engine._batch_loop
    assert loop is not None
    running = [
        asyncio.create_task(
            run(
                GenerationRequest(
                    f"r{round_no}-run{i}", chat(engine, round_no, QUESTIONS[i]), 200, 0.0
                )
            )
        )
        for i in range(RUNNING)
    ]
    await decoding.wait()
    computed_before = loop.prompt_tokens_computed
    start = time.perf_counter()
    newcomers = [
        GenerationRequest(
            f"r{round_no}-new{i}", chat(engine, round_no, QUESTIONS[RUNNING + i]), 3, 0.0
        )
        for i in range(ARRIVING)
    ]
    await asyncio.gather(*(run(r) for r in newcomers))
    computed = loop.prompt_tokens_computed - computed_before
    firsts = [arrivals[r.request_id][0] - start for r in newcomers]
    end = start + max(firsts)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    gaps = [
        b - a
        for i in range(RUNNING)
        for a, b in itertools.pairwise(arrivals[f"r{round_no}-run{i}"])
        if b > start and a < end
    ]
    return {
        "ttft_mean_s": statistics.fmean(firsts),
        "burst_wall_s": max(firsts),
        "largest_gap_s": max(gaps, default=0.0),
        "prompt_tokens_computed": computed,
    }


async def measure(share: bool, threads: int, rounds: int) -> dict[str, float]:
    engine = await started_engine(RUNNING + ARRIVING, threads, share_prefixes=share)
    results: list[dict[str, float]] = []
    try:
        label = "shared prefixes" if share else "every prompt whole (baseline)"
        for round_no in tqdm(range(rounds), desc=label, unit="round"):
            results.append(await one_round(engine, round_no))
    finally:
        await engine.stop()
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base = asyncio.run(measure(False, args.threads, args.rounds))
    ours = asyncio.run(measure(True, args.threads, args.rounds))
    print(
        f"\n{RUNNING} streams decoding under one system prompt, {ARRIVING} more under it "
        f"arrive at once; {args.threads} thread(s), median of {args.rounds} rounds"
    )
    print("| figure | every prompt whole (baseline) | shared prefixes | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for key, label in (
        ("prompt_tokens_computed", "prompt tokens computed for the newcomers"),
        ("ttft_mean_s", "newcomers' mean time to first token (s)"),
        ("burst_wall_s", "until every newcomer has a token (s)"),
        ("largest_gap_s", "largest gap of a running stream meanwhile (s)"),
    ):
        ratio = ours[key] / base[key] if base[key] else float("nan")
        print(f"| {label} | {base[key]:.2f} | {ours[key]:.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
