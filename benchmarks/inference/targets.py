"""The benchmark's targets and their PASS/MISS verdicts (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from benchmarks.inference.stats import LevelSummary, difference, ratio

Comparison = Literal[">=", "<="]
Verdict = Literal["PASS", "MISS", "NOT MEASURED"]

# system name -> concurrency -> summary
Results = Mapping[str, Mapping[int, LevelSummary]]


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    bound: float
    comparison: Comparison
    unit: str


@dataclass(frozen=True, slots=True)
class TargetResult:
    target: Target
    measured: float | None

    @property
    def verdict(self) -> Verdict:
        if self.measured is None:
            return "NOT MEASURED"
        if self.target.comparison == ">=":
            return "PASS" if self.measured >= self.target.bound else "MISS"
        return "PASS" if self.measured <= self.target.bound else "MISS"

    @property
    def gap(self) -> float | None:
        """How far past the bound (positive) or short of it (negative)."""
        if self.measured is None:
            return None
        if self.target.comparison == ">=":
            return self.measured - self.target.bound
        return self.target.bound - self.measured


THROUGHPUT_CONCURRENCY = 32
TTFT_CONCURRENCY = 1
GATEWAY = "chatbus-gateway"
PEERS = ("peer", "llama.cpp")
VS_BEST_PEER = Target("gateway/best peer tokens/s @32", 1.0, ">=", "x")
VS_CEILING = Target("gateway/ceiling tokens/s @32", 0.9, ">=", "x")
VS_LLAMA_ONE = Target("gateway/llama.cpp tokens/s @1", 0.9, ">=", "x")
ADDED_TTFT_P50 = Target("gateway-added TTFT p50 @1", 25.0, "<=", "ms")
ADDED_TTFT_P99 = Target("gateway-added TTFT p99 @1", 60.0, "<=", "ms")
TTFT_P99_VS_PEER = Target("gateway/peer TTFT p99 @32", 1.2, "<=", "x")
PIPELINE_CPU = Target("(processors+gateway)/worker CPU", 0.10, "<=", "x")

# system name -> {"wall_s": float, "cpu_s": {process: seconds}}
Cpu = Mapping[str, Mapping[str, Any]]


def _tps(results: Results, system: str, concurrency: int) -> float | None:
    summary = results.get(system, {}).get(concurrency)
    return summary.tokens_per_s if summary else None


def _ttft(results: Results, system: str, concurrency: int, which: str) -> float | None:
    summary = results.get(system, {}).get(concurrency)
    if summary is None:
        return None
    return summary.ttft_ms_p50 if which == "p50" else summary.ttft_ms_p99


def added_ttft_ms(
    results: Results, system: str = GATEWAY, concurrency: int = TTFT_CONCURRENCY
) -> dict[str, float | None]:
    """TTFT of ``system`` minus that of the ceiling, per percentile, in milliseconds."""
    return {
        q: difference(
            _ttft(results, system, concurrency, q), _ttft(results, "ceiling", concurrency, q)
        )
        for q in ("p50", "p99")
    }


def _best(values: list[float | None], pick: Any) -> float | None:
    found = [v for v in values if v is not None]
    return pick(found) if found else None


def pipeline_cpu_share(cpu: Cpu) -> float | None:
    """CPU seconds of moderation (the processors) and the gateway over the worker's, in the
    gateway run."""
    used = cpu.get(GATEWAY, {}).get("cpu_s", {})
    workers = sum(v for k, v in used.items() if k.startswith("worker"))
    if not workers or "processors" not in used or "gateway" not in used:
        return None
    return float((used["processors"] + used["gateway"]) / workers)


def evaluate(results: Results, cpu: Cpu | None = None) -> list[TargetResult]:
    """Every target against ``results``; a target whose inputs were not measured says so."""
    c = THROUGHPUT_CONCURRENCY
    gateway = _tps(results, GATEWAY, c)
    best_peer = _best([_tps(results, p, c) for p in PEERS], max)
    peer_p99 = _best([_ttft(results, p, c, "p99") for p in PEERS], min)
    added = added_ttft_ms(results)
    return [
        TargetResult(VS_BEST_PEER, ratio(gateway, best_peer)),
        TargetResult(VS_CEILING, ratio(gateway, _tps(results, "ceiling", c))),
        TargetResult(
            VS_LLAMA_ONE,
            ratio(
                _tps(results, GATEWAY, TTFT_CONCURRENCY),
                _tps(results, "llama.cpp", TTFT_CONCURRENCY),
            ),
        ),
        TargetResult(ADDED_TTFT_P50, added["p50"]),
        TargetResult(ADDED_TTFT_P99, added["p99"]),
        TargetResult(TTFT_P99_VS_PEER, ratio(_ttft(results, GATEWAY, c, "p99"), peer_p99)),
        TargetResult(PIPELINE_CPU, pipeline_cpu_share(cpu or {})),
    ]
