"""Drive one system through the workload: warm up, then rounds at each concurrency level.

A system is a :class:`System`: an async context manager (started = ready to serve, warm) whose
``stream`` sends one request and returns what the client saw. Rounds cycle through the levels
(1, 8, 32, 1, 8, 32, …) so slow drift on a noisy machine spreads over every level.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from benchmarks.inference.stats import RoundResult, StreamTrace
from benchmarks.inference.workload import Messages, Workload, messages_for

Progress = Callable[[str], None]


class System(AbstractAsyncContextManager["System"], Protocol):
    """A system under test."""

    name: str

    async def stream(self, messages: Messages, max_new_tokens: int) -> StreamTrace:
        """Send one request (the run's sampling) and collect its answer as the client sees it."""
        ...

    def processes(self) -> dict[str, int]:
        """The processes whose CPU seconds count for this system, by name (once started)."""
        ...


async def run_round(
    system: System,
    concurrency: int,
    requests_per_stream: int,
    max_new_tokens: int,
    first_index: int = 0,
) -> RoundResult:
    """``concurrency`` closed-loop streams, each sending ``requests_per_stream`` requests."""

    async def one_stream(stream_no: int) -> list[StreamTrace]:
        traces = []
        for k in range(requests_per_stream):
            index = first_index + stream_no * requests_per_stream + k
            traces.append(await system.stream(messages_for(index), max_new_tokens))
        return traces

    started = time.perf_counter()
    per_stream = await asyncio.gather(*(one_stream(s) for s in range(concurrency)))
    traces = tuple(t for stream in per_stream for t in stream)
    ended = max(
        (t.finished_at for t in traces if t.finished_at is not None), default=time.perf_counter()
    )
    return RoundResult(concurrency, started, ended, traces)


async def warm_up(system: System, workload: Workload) -> None:
    """Full-length answers at the highest concurrency, so no measured round pays first costs."""
    await run_round(
        system,
        min(workload.warmup_requests, workload.max_concurrency),
        1,
        workload.max_new_tokens,
        first_index=1000,
    )


async def measure(
    system: System, workload: Workload, progress: Progress
) -> dict[int, list[RoundResult]]:
    """Every level's rounds on a started ``system``."""
    progress(f"{system.name}: warming up")
    await warm_up(system, workload)
    by_level: dict[int, list[RoundResult]] = {c: [] for c in workload.concurrency}
    for round_no in range(workload.rounds):
        for concurrency in workload.concurrency:
            result = await run_round(
                system,
                concurrency,
                workload.requests_per_stream(concurrency),
                workload.max_new_tokens,
            )
            by_level[concurrency].append(result)
            progress(
                f"{system.name} c={concurrency} round {round_no + 1}/{workload.rounds}: "
                f"{result.tokens} tokens in {result.wall_s:.2f} s = "
                f"{result.tokens_per_s:.0f} tokens/s"
            )
    return by_level
