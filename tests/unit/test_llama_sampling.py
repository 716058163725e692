"""Sampling one token from a row of logits, as the llama.cpp engine's loop does (pure numpy)."""

from __future__ import annotations

import numpy as np

from inference_consumers.engine.llama_batch_loop import sample_token


def _logits(probs: list[float], vocab: int = 0) -> np.ndarray:
    row = np.full(max(vocab, len(probs)), -1e9, dtype=np.float32)
    row[: len(probs)] = np.log(np.asarray(probs, dtype=np.float64))
    return row


def test_greedy_and_a_zero_nucleus_take_the_argmax() -> None:
    row = _logits([0.1, 0.6, 0.3])
    rng = np.random.default_rng(0)
    assert sample_token(row, 0.0, 1.0, rng) == 1
    assert sample_token(row, 1.0, 0.0, rng) == 1


def test_the_nucleus_keeps_only_the_most_likely_tokens_reaching_top_p() -> None:
    row = _logits([0.5, 0.3, 0.15, 0.05])
    rng = np.random.default_rng(1)
    drawn = {sample_token(row, 1.0, 0.75, rng) for _ in range(400)}
    assert drawn == {0, 1}  # 0.5 + 0.3 reach 0.75; 2 and 3 never


def test_draws_follow_the_distribution() -> None:
    row = _logits([0.7, 0.2, 0.1])
    rng = np.random.default_rng(2)
    counts = np.bincount([sample_token(row, 1.0, 1.0, rng) for _ in range(4000)], minlength=3)
    assert np.allclose(counts / 4000, [0.7, 0.2, 0.1], atol=0.03)


def test_a_seed_gives_the_same_tokens() -> None:
    row = _logits(list(np.random.default_rng(3).dirichlet(np.ones(50))))
    a = [sample_token(row, 0.8, 0.9, np.random.default_rng(7)) for _ in range(5)]
    b = [sample_token(row, 0.8, 0.9, np.random.default_rng(7)) for _ in range(5)]
    assert a == b


def test_a_long_tail_below_the_floor_is_reached_when_top_p_needs_it() -> None:
    # one likely token (40%) and 20,000 unlikely ones, each under the relative floor: a nucleus
    # of 0.9 must reach into the tail, which the fast path alone would miss
    tail = 20_000
    probs = [0.4] + [0.6 / tail] * tail
    rng = np.random.default_rng(4)
    drawn = [sample_token(_logits(probs), 1.0, 0.9, rng) for _ in range(400)]
    assert any(t > 0 for t in drawn) and 0 in drawn
