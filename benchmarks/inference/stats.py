"""Pure statistics of streamed answers: throughput, time to first token, inter-token latency.

Definitions (the benchmark's report and ``docs/benchmarks.md`` use exactly these):

- An *arrival* is one message the client receives that carries ``n >= 1`` tokens, at time ``t``
  (a chatbus chunk, an SSE delta, an engine event). Arrivals without tokens are ignored.
- *Time to first token* (TTFT): first arrival time minus the time the client sent the request.
- *Inter-token latency* (ITL): for every arrival after the first, its gap ``g`` to the previous
  arrival is spread evenly over its tokens, giving ``n`` samples of ``g / n``. Tokens that came
  together *with* the first token add ``n - 1`` samples of 0 (they waited for nothing more).
  A stream of ``T`` tokens thus gives ``T - 1`` samples, whatever the chunking.
- *Aggregate throughput* of a round: all tokens the clients received divided by the wall time from
  the first send to the last final message of the round.
- Percentiles interpolate linearly between order statistics (numpy's default, ``linear``).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Arrival:
    """``tokens`` tokens reached the client at ``at`` (seconds, a monotonic clock)."""

    at: float
    tokens: int


@dataclass(slots=True)
class StreamTrace:
    """What the client saw of one request."""

    sent_at: float
    arrivals: list[Arrival] = field(default_factory=list)
    finished_at: float | None = None
    finish_reason: str | None = None
    reported_tokens: int | None = None  # the server's own count (usage), when it sends one
    request_id: str | None = None  # when the system names its requests (chatbus)

    def add(self, at: float, tokens: int) -> None:
        if tokens > 0:
            self.arrivals.append(Arrival(at, tokens))

    def finish(self, at: float, reason: str | None) -> None:
        self.finished_at = at
        self.finish_reason = reason

    @property
    def tokens(self) -> int:
        """Tokens received: the server's count when it reports one, else the arrivals' sum."""
        if self.reported_tokens is not None:
            return self.reported_tokens
        return sum(a.tokens for a in self.arrivals)


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One round at one concurrency: every stream, and the round's wall time."""

    concurrency: int
    started_at: float
    ended_at: float
    traces: tuple[StreamTrace, ...]

    @property
    def wall_s(self) -> float:
        return self.ended_at - self.started_at

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.traces)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LevelSummary:
    """One system at one concurrency, over all its rounds."""

    concurrency: int
    rounds: int
    requests: int
    tokens: int
    tokens_per_s: float  # median over rounds
    tokens_per_s_rounds: tuple[float, ...]
    ttft_ms_p50: float | None  # pooled over every request of every round
    ttft_ms_p99: float | None
    itl_ms_p50: float | None  # pooled over every token gap of every round
    itl_ms_p99: float | None
    finish_reasons: dict[str, int]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) with linear interpolation; raises on no values."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must be within [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ttft_s(trace: StreamTrace) -> float | None:
    """Seconds from send to the first arrival with tokens; None when no token came."""
    if not trace.arrivals:
        return None
    return trace.arrivals[0].at - trace.sent_at


def inter_token_gaps_s(trace: StreamTrace) -> list[float]:
    """The ITL samples of one stream, in seconds (see the module docstring)."""
    arrivals = trace.arrivals
    if not arrivals:
        return []
    gaps = [0.0] * (arrivals[0].tokens - 1)
    for previous, current in itertools.pairwise(arrivals):
        share = (current.at - previous.at) / current.tokens
        gaps.extend([share] * current.tokens)
    return gaps


def _pct_ms(values: Sequence[float], q: float) -> float | None:
    return percentile(values, q) * 1000.0 if values else None


def summarize(rounds: Sequence[RoundResult]) -> LevelSummary:
    """Throughput as the median of the rounds; latency percentiles over all rounds' samples."""
    if not rounds:
        raise ValueError("no rounds to summarize")
    concurrency = {r.concurrency for r in rounds}
    if len(concurrency) != 1:
        raise ValueError(f"rounds of different concurrency: {sorted(concurrency)}")
    traces = [t for r in rounds for t in r.traces]
    ttfts = [v for v in (ttft_s(t) for t in traces) if v is not None]
    gaps = [g for t in traces for g in inter_token_gaps_s(t)]
    reasons: dict[str, int] = {}
    for trace in traces:
        reason = trace.finish_reason or "none"
        reasons[reason] = reasons.get(reason, 0) + 1
    per_round = tuple(r.tokens_per_s for r in rounds)
    return LevelSummary(
        concurrency=concurrency.pop(),
        rounds=len(rounds),
        requests=len(traces),
        tokens=sum(t.tokens for t in traces),
        tokens_per_s=statistics.median(per_round),
        tokens_per_s_rounds=per_round,
        ttft_ms_p50=_pct_ms(ttfts, 50),
        ttft_ms_p99=_pct_ms(ttfts, 99),
        itl_ms_p50=_pct_ms(gaps, 50),
        itl_ms_p99=_pct_ms(gaps, 99),
        finish_reasons=reasons,
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def difference(a: float | None, b: float | None) -> float | None:
    """``a - b``, None when either is missing."""
    return None if a is None or b is None else a - b
