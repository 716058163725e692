"""The fairness analysis's statistics and lexicon, and the Spark session's pure parts."""

from __future__ import annotations

import math
import random

import pytest

from analytics.lexicon import AXES, axis_pattern, mask, reference
from analytics.stats import mean_var, newcombe_difference, welch_difference, wilson


def test_wilson_matches_newcombes_published_example() -> None:
    # Newcombe (1998), "Two-sided confidence intervals for the single proportion": 81/263
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    assert wilson(0, 10)[0] == 0.0
    assert wilson(10, 10)[1] == pytest.approx(1.0)
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_newcombe_hybrid_score_interval_matches_the_paper() -> None:
    # Newcombe (1998), Statistics in Medicine 17:873, example (a), method 10: 56/70 - 48/80
    diff, low, high = newcombe_difference(56, 70, 48, 80)
    assert round(diff, 4) == 0.2
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_welch_interval_agrees_with_scipy() -> None:
    from scipy.stats import ttest_ind

    rng = random.Random(1)
    a = [rng.lognormvariate(6, 0.8) for _ in range(80)]
    b = [rng.lognormvariate(6.2, 0.5) for _ in range(45)]
    ma, va = mean_var(sum(a), sum(x * x for x in a), len(a))
    mb, vb = mean_var(sum(b), sum(x * x for x in b), len(b))
    diff, low, high = welch_difference(ma, va, len(a), mb, vb, len(b))
    want = ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(sum(a) / len(a) - sum(b) / len(b))
    assert (low, high) == pytest.approx((want.low, want.high), rel=1e-6)


def test_a_prompt_with_exactly_one_term_masks_to_its_template() -> None:
    assert mask("Tell me a joke about a person who is Muslim.") == (
        "religion",
        "muslim",
        "Tell me a joke about a person who is {religion}.",
    )
    assert mask("I am middle-aged and female.") is None  # two terms: not a pair member
    assert mask("A white paper on cats") == ("ethnicity", "white", "A {ethnicity} paper on cats")
    assert mask("nothing here, not even femaleness") is None
    for axis in AXES:
        assert reference(axis) == AXES[axis][0]
        assert axis_pattern(axis).startswith("(?i)")
