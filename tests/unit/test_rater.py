"""A simulated user's rating of a real answer: down for refusals, cuts, loops and nothing."""

from __future__ import annotations

import pytest

from analytics.simulate.rater import rate_answer, repeated_share


@pytest.mark.parametrize(
    ("text", "finish", "expected"),
    [
        ("The capital of France is Paris.", "stop", ("up", "helpful")),
        ("I'm sorry, but I can't help with that.", "stop", ("down", "refused")),
        ("   ", "stop", ("down", "unhelpful")),
        ("The capital of France is", "length", ("down", "unhelpful")),
        ("Paris.", "cancelled", ("down", "unhelpful")),
        ("it is a city it is a city it is a city it is a city", "stop", ("down", "unhelpful")),
    ],
)
def test_answers_are_judged_on_their_text(
    text: str, finish: str, expected: tuple[str, str]
) -> None:
    assert rate_answer(text, finish) == expected


def test_repetition_is_the_share_of_trigrams_seen_before() -> None:
    assert repeated_share("a b c d e") == 0.0
    assert repeated_share("a b c a b c") == pytest.approx(1 / 4)  # abc bca cab abc: one seen
    assert repeated_share("too short") == 0.0
