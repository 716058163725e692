"""The per-user violation score: decay math and temporary blocks."""

from __future__ import annotations

import math

import pytest

from stream_processors.moderation.abuse import AbusePolicy, AbuseState, decayed


def test_the_score_halves_every_half_life() -> None:
    assert decayed(8.0, 0, 60) == 8.0
    assert decayed(8.0, 60, 60) == pytest.approx(4.0)
    assert decayed(8.0, 180, 60) == pytest.approx(1.0)
    assert decayed(8.0, 30, 60) == pytest.approx(8.0 / math.sqrt(2))
    assert decayed(8.0, -5, 60) == 8.0  # clock skew never raises a score


def test_violations_add_on_top_of_the_decayed_score() -> None:
    policy = AbusePolicy(half_life_s=100, weight=1.0, block_threshold=10, block_s=60)
    state = AbuseState().with_violation(0, policy)
    assert state.score == 1.0 and state.violations == 1
    state = state.with_violation(100, policy)
    assert state.score == pytest.approx(1.5)
    assert state.score_at(200, policy) == pytest.approx(0.75)


def test_back_to_back_violations_block_for_the_block_duration() -> None:
    policy = AbusePolicy(half_life_s=3600, weight=1.0, block_threshold=2.5, block_s=900)
    state = AbuseState()
    for t in (0.0, 1.0):
        state = state.with_violation(t, policy)
        assert not state.is_blocked(t)
    state = state.with_violation(2.0, policy)
    assert state.is_blocked(2.0)
    assert state.is_blocked(2.0 + 899)
    assert not state.is_blocked(2.0 + 900)


def test_violations_spread_out_in_time_never_block() -> None:
    policy = AbusePolicy(half_life_s=60, weight=1.0, block_threshold=2.5, block_s=900)
    state = AbuseState()
    for i in range(50):  # one violation per half-life converges to 2.0 < 2.5
        state = state.with_violation(i * 60.0, policy)
        assert not state.is_blocked(i * 60.0)
    assert state.score == pytest.approx(2.0, abs=1e-6)


def test_two_violations_never_block_three_within_half_an_hour_do() -> None:
    policy = AbusePolicy()  # the defaults: weight 1, half-life 1 h, threshold 2.5
    state = AbuseState().with_violation(0, policy).with_violation(900, policy)
    assert not state.is_blocked(900)
    assert state.with_violation(1800, policy).is_blocked(1800)
    assert not state.with_violation(3000, policy).is_blocked(3000)
    assert (
        not AbuseState()
        .with_violation(0, policy)
        .with_violation(3600, policy)
        .with_violation(7200, policy)
        .is_blocked(7200)
    )  # 0.25 + 0.5 + 1 = 1.75 < 2.5


def test_the_state_round_trips_through_json() -> None:
    state = AbuseState(score=2.5, updated_at=10.0, blocked_until=99.0, violations=3)
    assert AbuseState.from_json(state.to_json()) == state
    assert AbuseState.from_json(None) == AbuseState()
