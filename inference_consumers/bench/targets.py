"""The benchmark's targets and their PASS/MISS verdicts (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from inference_consumers.bench.stats import LevelSummary, difference, ratio

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
VS_CEILING = Target("chatbus/ceiling tokens/s @32", 0.9, ">=", "x")
VS_PEER = Target("chatbus/peer tokens/s @32", 1.0, ">=", "x")
ADDED_TTFT_P50 = Target("bus-added TTFT p50 @1", 15.0, "<=", "ms")
ADDED_TTFT_P99 = Target("bus-added TTFT p99 @1", 50.0, "<=", "ms")


def _tps(results: Results, system: str, concurrency: int) -> float | None:
    summary = results.get(system, {}).get(concurrency)
    return summary.tokens_per_s if summary else None


def _ttft(results: Results, system: str, concurrency: int, which: str) -> float | None:
    summary = results.get(system, {}).get(concurrency)
    if summary is None:
        return None
    return summary.ttft_ms_p50 if which == "p50" else summary.ttft_ms_p99


def bus_added_ttft_ms(results: Results,
                      concurrency: int = TTFT_CONCURRENCY) -> dict[str, float | None]:
    """TTFT of chatbus minus that of the ceiling, per percentile, in milliseconds."""
    return {
        q: difference(_ttft(results, "chatbus", concurrency, q),
                      _ttft(results, "ceiling", concurrency, q))
        for q in ("p50", "p99")
    }


def evaluate(results: Results) -> list[TargetResult]:
    """Every target against ``results``; a target whose inputs were not measured says so."""
    c = THROUGHPUT_CONCURRENCY
    bus = _tps(results, "chatbus", c)
    added = bus_added_ttft_ms(results)
    return [
        TargetResult(VS_CEILING, ratio(bus, _tps(results, "ceiling", c))),
        TargetResult(VS_PEER, ratio(bus, _tps(results, "peer", c))),
        TargetResult(ADDED_TTFT_P50, added["p50"]),
        TargetResult(ADDED_TTFT_P99, added["p99"]),
    ]
