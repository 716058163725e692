"""The benchmark's pure statistics: percentiles, TTFT, inter-token gaps, summaries, targets."""

from __future__ import annotations

import pytest

from benchmarks.inference.stages import WorkerTimings, split_ttft
from benchmarks.inference.stats import (
    RoundResult,
    StreamTrace,
    inter_token_gaps_s,
    percentile,
    ratio,
    summarize,
    ttft_s,
)
from benchmarks.inference.targets import evaluate


def trace(
    sent: float,
    arrivals: list[tuple[float, int]],
    *,
    reported: int | None = None,
    request_id: str | None = None,
) -> StreamTrace:
    t = StreamTrace(sent_at=sent, reported_tokens=reported, request_id=request_id)
    for at, n in arrivals:
        t.add(at, n)
    t.finish(arrivals[-1][0] if arrivals else sent, "length")
    return t


def test_percentile_interpolates_linearly_like_numpy() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_no_values_and_bad_q() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


def test_ttft_is_the_first_arrival_with_tokens() -> None:
    t = trace(10.0, [(10.25, 0), (10.5, 1), (10.6, 2)])
    assert ttft_s(t) == pytest.approx(0.5)
    assert ttft_s(StreamTrace(sent_at=1.0)) is None


def test_a_chunk_gap_is_spread_evenly_over_its_tokens() -> None:
    t = trace(0.0, [(1.0, 1), (1.1, 1), (1.5, 4)])
    assert inter_token_gaps_s(t) == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.1])


def test_tokens_arriving_with_the_first_one_count_as_zero_gaps() -> None:
    t = trace(0.0, [(1.0, 3), (1.3, 1)])
    gaps = inter_token_gaps_s(t)
    assert gaps == pytest.approx([0.0, 0.0, 0.3])
    assert len(gaps) == t.tokens - 1


def test_reported_tokens_win_over_counted_arrivals() -> None:
    assert trace(0.0, [(1.0, 1), (2.0, 1)], reported=5).tokens == 5
    assert trace(0.0, [(1.0, 1), (2.0, 2)]).tokens == 3


def test_summary_takes_the_median_round_and_pools_latencies() -> None:
    rounds = [
        RoundResult(2, 0.0, 1.0, (trace(0.0, [(0.1, 1), (0.2, 9)]),)),  # 10 tokens/s
        RoundResult(2, 0.0, 0.5, (trace(0.0, [(0.2, 1), (0.3, 9)]),)),  # 20 tokens/s
        RoundResult(2, 0.0, 0.25, (trace(0.0, [(0.3, 1), (0.4, 9)]),)),  # 40 tokens/s
    ]
    s = summarize(rounds)
    assert s.concurrency == 2 and s.rounds == 3 and s.requests == 3 and s.tokens == 30
    assert s.tokens_per_s == pytest.approx(20.0)
    assert s.tokens_per_s_rounds == pytest.approx((10.0, 20.0, 40.0))
    assert s.ttft_ms_p50 == pytest.approx(200.0)
    assert s.itl_ms_p50 == pytest.approx(100.0 / 9)
    assert s.finish_reasons == {"length": 3}


def test_summary_refuses_mixed_concurrency() -> None:
    t = trace(0.0, [(0.1, 1)])
    with pytest.raises(ValueError, match="different concurrency"):
        summarize([RoundResult(1, 0, 1, (t,)), RoundResult(8, 0, 1, (t,))])


def test_ratio_of_missing_values_is_none() -> None:
    assert ratio(9.0, 10.0) == pytest.approx(0.9)
    assert ratio(None, 10.0) is None
    assert ratio(1.0, 0.0) is None


def _level(concurrency: int, tps: float, ttft_s_: float) -> RoundResult:
    tokens = round(tps)
    return RoundResult(concurrency, 0.0, 1.0, (trace(0.0, [(ttft_s_, 1), (0.5, tokens - 1)]),))


def test_targets_pass_miss_and_not_measured() -> None:
    results = {
        "ceiling": {1: summarize([_level(1, 100, 0.010)]), 32: summarize([_level(32, 1000, 0.1)])},
        "peer": {32: summarize([_level(32, 800, 0.1)])},
        "llama.cpp": {1: summarize([_level(1, 95, 0.010)]), 32: summarize([_level(32, 300, 9.0)])},
        "chatbus-gateway": {
            1: summarize([_level(1, 90, 0.040)]),
            32: summarize([_level(32, 850, 0.1)]),
        },
    }
    cpu = {
        "chatbus-gateway": {
            "wall_s": 10.0,
            "cpu_s": {"worker-1": 20.0, "processors": 1.0, "gateway": 0.5, "kafka": 3.0},
        }
    }
    verdicts = {r.target.name: r for r in evaluate(results, cpu)}
    vs_ceiling = verdicts["gateway/ceiling tokens/s @32"]
    assert vs_ceiling.verdict == "MISS" and vs_ceiling.gap == pytest.approx(-0.05)
    best_peer = verdicts["gateway/best peer tokens/s @32"]  # the faster peer: transformers serve
    assert best_peer.measured == pytest.approx(850 / 800) and best_peer.verdict == "PASS"
    assert verdicts["gateway/llama.cpp tokens/s @1"].measured == pytest.approx(90 / 95)
    added = verdicts["gateway-added TTFT p50 @1"]
    assert added.measured == pytest.approx(30.0) and added.verdict == "MISS"
    assert added.gap == pytest.approx(-5.0)
    # p99 at 32 against the lower of the two peers' p99 (0.1 s), not llama.cpp's 9 s
    assert verdicts["gateway/peer TTFT p99 @32"].measured == pytest.approx(1.0)
    share = verdicts["(processors+gateway)/worker CPU"]
    assert share.measured == pytest.approx(0.075) and share.verdict == "PASS"
    assert all(r.verdict == "NOT MEASURED" for r in evaluate({}))


def test_ttft_is_split_into_stages_with_the_workers_timings() -> None:
    rounds = [
        RoundResult(
            1,
            0.0,
            1.0,
            (trace(0.0, [(0.030, 1)], request_id="r1"), trace(0.0, [(0.050, 1)], request_id="r2")),
        )
    ]
    timings = {"r1": WorkerTimings(queue_wait_ms=5.0, worker_ttft_ms=20.0)}
    stages = split_ttft(rounds, timings)
    assert stages is not None and stages.requests == 1
    assert stages.client_ttft_ms["p50"] == pytest.approx(30.0)
    assert stages.rest_ms["p50"] == pytest.approx(5.0)
    assert split_ttft(rounds, {}) is None
