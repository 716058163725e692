"""Where a chatbus request's time to first token goes (pure).

Each request's client-side TTFT is split with the worker's own timings (its ``Completion``):

- ``queue_wait``: the request record's Kafka timestamp → the worker admits it (wall clocks of one
  machine; includes the consumer's fetch wait);
- ``worker_ttft``: admission → the engine's first token (tokenizing, the engine's queue, prefill);
- ``rest``: what remains — the client's publish before the record is stamped, the first chunk's
  publish, the broker, and the client's reply consumer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from benchmarks.inference.stats import RoundResult, percentile, ttft_s


@dataclass(frozen=True, slots=True)
class WorkerTimings:
    queue_wait_ms: float
    worker_ttft_ms: float | None


@dataclass(frozen=True, slots=True)
class StageSummary:
    concurrency: int
    requests: int
    client_ttft_ms: dict[str, float]  # "p50"/"p99"
    queue_wait_ms: dict[str, float]
    worker_ttft_ms: dict[str, float]
    rest_ms: dict[str, float]


def _p(values: Sequence[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99)}


def split_ttft(
    rounds: Sequence[RoundResult], timings: Mapping[str, WorkerTimings]
) -> StageSummary | None:
    """Stage percentiles over every request of ``rounds`` the worker reported on."""
    client, queue, worker, rest = [], [], [], []
    for trace in (t for r in rounds for t in r.traces):
        ttft = ttft_s(trace)
        timing = timings.get(trace.request_id or "")
        if ttft is None or timing is None or timing.worker_ttft_ms is None:
            continue
        client_ms = ttft * 1000.0
        client.append(client_ms)
        queue.append(timing.queue_wait_ms)
        worker.append(timing.worker_ttft_ms)
        rest.append(client_ms - timing.queue_wait_ms - timing.worker_ttft_ms)
    if not client:
        return None
    return StageSummary(
        rounds[0].concurrency, len(client), _p(client), _p(queue), _p(worker), _p(rest)
    )


GATEWAY_STAGES = ("gateway_ms", "bus_ms", "moderation_ms", "queue_ms", "prefill_ms", "delivery_ms")


@dataclass(frozen=True, slots=True)
class GatewayStageSummary:
    """p50/p99 of each stage of the gateway's trace over one concurrency level's requests."""

    concurrency: int
    requests: int
    client_ttft_ms: dict[str, float]
    stages_ms: dict[str, dict[str, float]]  # stage → {"p50", "p99"}


def split_gateway_ttft(
    rounds: Sequence[RoundResult], lines: Mapping[str, Mapping[str, float]]
) -> GatewayStageSummary | None:
    """Stage percentiles over every request of ``rounds`` the gateway logged a breakdown of."""
    client: list[float] = []
    stages: dict[str, list[float]] = {s: [] for s in GATEWAY_STAGES}
    for trace in (t for r in rounds for t in r.traces):
        ttft = ttft_s(trace)
        found = lines.get(trace.request_id or "")
        if ttft is None or found is None:
            continue
        client.append(ttft * 1000.0)
        for stage in GATEWAY_STAGES:
            stages[stage].append(found.get(stage, 0.0))
    if not client:
        return None
    return GatewayStageSummary(
        rounds[0].concurrency, len(client), _p(client), {s: _p(v) for s, v in stages.items()}
    )
