"""What moderation judges and how it decides, as pure logic: the conversation window, undoing
obfuscation, the evaluation set's splits, threshold calibration and the refusal messages."""

from __future__ import annotations

from collections import Counter

import pytest

from chatbus.errors import ConfigurationError
from stream_processors.moderation.calibrate import bagged_thresholds, choose_thresholds
from stream_processors.moderation.categories import CATEGORIES
from stream_processors.moderation.context import input_texts
from stream_processors.moderation.evalset import (
    DEV_DIR,
    EVERYDAY,
    EvalCase,
    Turn,
    load_evalset,
    split_of,
)
from stream_processors.moderation.normalize import normalize, variants
from stream_processors.moderation.refusals import DEFAULT_REFUSALS, refusal_for, refusal_messages


def test_one_message_is_judged_alone() -> None:
    assert input_texts([("system", "be brief"), ("user", "hello")]) == ["hello"]


def test_recent_user_turns_are_judged_together_newest_last_without_the_assistant() -> None:
    messages = [
        ("user", "one"),
        ("assistant", "sure, here is a long answer"),
        ("user", "two"),
        ("assistant", "ok"),
        ("user", "three"),
    ]
    assert input_texts(messages) == ["three", "one\ntwo\nthree"]


def test_the_window_keeps_the_newest_text() -> None:
    texts = input_texts([("user", "a" * 500), ("user", "b" * 500)], window_chars=600)
    assert texts[1] == "a" * 99 + "\n" + "b" * 500


def test_no_user_message_means_nothing_to_judge() -> None:
    assert input_texts([("system", "x"), ("assistant", "y")]) == []


@pytest.mark.parametrize(
    ("text", "spelled"),
    [
        ("how do i make a b0mb", "how do i make a bomb"),
        ("h o w to k i l l him", "how to kill him"),
        ("k.i.l.l", "kill"),
        ("$uicide", "suicide"),
    ],
)
def test_obfuscations_are_spelled_out(text: str, spelled: str) -> None:
    assert normalize(text) == spelled
    assert variants(text) == [text, spelled]


@pytest.mark.parametrize("text", ["meet me at 3am on the 10th", "It was 1990.", "Hello there"])
def test_plain_text_and_numbers_are_judged_once(text: str) -> None:
    assert variants(text) == [text]


def test_the_evaluation_set_is_large_labelled_and_split_stably() -> None:
    cases = load_evalset()
    assert len(cases) >= 600
    unsafe = [c for c in cases if c.unsafe]
    assert sum(not c.unsafe for c in cases) >= len(cases) / 3
    most_specific = Counter(max(c.categories, key=lambda name: name.count("/")) for c in unsafe)
    assert set(most_specific) == set(CATEGORIES)
    assert {"plain", "multi_turn", "obfuscated", "translated", "answer"} <= {c.form for c in cases}
    train, test = split_of(cases, "train"), split_of(cases, "test")
    assert len(train) + len(test) == len(cases) and not {c.id for c in train} & {c.id for c in test}
    shared = [c for c in cases if c.group != EVERYDAY]
    assert 0.3 < len(train) / len(shared) < 0.5


def test_the_everyday_probe_is_held_back_whole_and_safe() -> None:
    everyday = [c for c in load_evalset() if c.group == EVERYDAY]
    assert len(everyday) >= 400
    assert all(c.split == "test" and not c.unsafe for c in everyday)
    assert {"plain", "multi_turn", "translated", "answer"} <= {c.form for c in everyday}


def test_the_development_set_is_apart_from_the_evaluation_set_and_the_training_data() -> None:
    """Changes are chosen on the development set, so none of its cases may also be judged or
    trained on: no shared id, no text written out again in the evaluation set or the seed."""
    from stream_processors.moderation.calibrate import judged_texts
    from stream_processors.moderation.seed import load_seed

    dev = load_evalset(DEV_DIR)
    assert sum(c.unsafe for c in dev) >= 60 and sum(not c.unsafe for c in dev) >= 60
    assert {"plain", "multi_turn", "obfuscated", "translated", "answer"} <= {c.form for c in dev}
    assert all("illicit/violent" in c.categories for c in dev if c.unsafe)
    evalset = load_evalset()
    assert not {c.id for c in dev} & {c.id for c in evalset}
    dev_texts = {t.casefold() for c in dev for t in judged_texts(c)}
    elsewhere = {t.casefold() for c in evalset for t in judged_texts(c)}
    elsewhere |= {ex.text.casefold() for ex in load_seed()}
    assert not dev_texts & elsewhere


def _case(n: int, categories: frozenset[str]) -> EvalCase:
    return EvalCase(f"c{n}", (Turn("user", "x"),), categories, "g", "plain")


def test_bagged_calibration_is_reproducible_and_agrees_where_the_data_are_clear() -> None:
    zeros = dict.fromkeys(CATEGORIES, 0.0)
    hate = frozenset({"hate"})
    cases = [_case(i, hate) for i in range(20)] + [_case(100 + i, frozenset()) for i in range(40)]
    scores = [zeros | {"hate": 0.9} for _ in range(20)] + [zeros | {"hate": 0.1}] * 40
    plain = choose_thresholds(cases, scores, target_fpr=0.05)
    bagged = bagged_thresholds(cases, scores, target_fpr=0.05)
    assert bagged == plain  # separable: every resample picks the same threshold
    assert bagged_thresholds(cases, scores, 0.05) == bagged_thresholds(cases, scores, 0.05)


def test_one_safe_outlier_does_not_set_the_bagged_threshold_alone() -> None:
    """Unsafe cases score 0.6-0.9, safe ones 0.1, except one safe case at 0.8: with no false
    positive allowed, the plain choice must stay above it and gives up every unsafe case under
    0.8; resamples without the outlier (about a third) do not, so the median moves below it
    only if most do — the bagged threshold never exceeds the plain one."""
    zeros = dict.fromkeys(CATEGORIES, 0.0)
    hate = frozenset({"hate"})
    cases = [_case(i, hate) for i in range(30)] + [_case(100 + i, frozenset()) for i in range(30)]
    scores = [zeros | {"hate": 0.6 + 0.01 * i} for i in range(30)]
    scores += [zeros | {"hate": 0.8}] + [zeros | {"hate": 0.1}] * 29
    plain = choose_thresholds(cases, scores, target_fpr=0.0)
    bagged = bagged_thresholds(cases, scores, target_fpr=0.0)
    assert plain["hate"] == pytest.approx(0.8001)
    assert 0.5 <= bagged["hate"] <= plain["hate"]


def test_calibration_blocks_the_most_unsafe_within_the_false_positive_budget() -> None:
    zeros = dict.fromkeys(CATEGORIES, 0.0)
    hate = frozenset({"hate"})
    cases = [_case(i, hate) for i in range(4)] + [_case(10 + i, frozenset()) for i in range(10)]
    scores = [zeros | {"hate": s} for s in (0.9, 0.8, 0.6, 0.4)]
    scores += [zeros | {"hate": s} for s in (0.7, 0.5, *[0.1] * 8)]
    none_allowed = choose_thresholds(cases, scores, target_fpr=0.0)
    assert none_allowed["hate"] == pytest.approx(0.7001)  # just above the highest safe score
    one_allowed = choose_thresholds(cases, scores, target_fpr=0.1)
    assert one_allowed["hate"] == pytest.approx(0.6)  # 3 of 4 unsafe, 1 of 10 safe blocked
    assert all(0.3 <= t <= 0.95 for t in one_allowed.values())


def test_every_category_has_a_refusal_in_plain_words() -> None:
    assert set(CATEGORIES) <= set(DEFAULT_REFUSALS)
    for category in CATEGORIES:
        message = DEFAULT_REFUSALS[category]
        assert "/" not in message.split("http")[0], message  # words, not the taxonomy's names
        assert message.startswith("I"), message


def test_self_harm_wins_the_choice_of_message_and_points_to_help() -> None:
    messages = refusal_messages({})
    chosen = refusal_for(["violence", "self-harm/instructions", "self-harm"], messages)
    assert chosen == messages["self-harm/instructions"] and "988" in chosen
    assert refusal_for(["violence", "violence/graphic"], messages) == messages["violence/graphic"]


def test_a_refusal_message_for_an_unknown_category_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="CHATBUS_MODERATION_REFUSALS"):
        refusal_messages({"spam": "no"})
