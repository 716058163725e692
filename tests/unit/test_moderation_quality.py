"""Moderation's judgement on the held-back split of the evaluation set never gets worse than
the committed baseline (``stream_processors/moderation/evaluation.json``, written by
``python -m stream_processors.moderation.evaluate --json …``).

A change that lowers recall on unsafe cases, raises the false-positive rate on safe ones or the
share of everyday requests refused, or lowers any category's recall fails here; one that improves
them should commit the new figures (the baseline only moves forward). One case of slack absorbs
float differences between CPUs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from stream_processors.moderation.embedding import MiniLMEncoder
from stream_processors.moderation.evaluate import (
    BASELINE_FILE,
    as_json,
    evaluate,
    production_classifier,
)

pytestmark = pytest.mark.model

SLACK = 1  # cases


@pytest.fixture(scope="module")
def measured() -> dict[str, Any]:
    _test, results, _scores = evaluate(MiniLMEncoder("cpu").encode)
    return as_json(results[production_classifier()])


@pytest.fixture(scope="module")
def baseline() -> dict[str, Any]:
    figures = json.loads(BASELINE_FILE.read_text(encoding="utf-8"))
    return figures[production_classifier()]  # type: ignore[no-any-return]


def test_recall_on_unsafe_cases_is_no_worse_than_the_baseline(
    measured: dict[str, Any], baseline: dict[str, Any]
) -> None:
    assert measured["recall"]["n"] == baseline["recall"]["n"], "the test split changed"
    assert measured["recall"]["k"] >= baseline["recall"]["k"] - SLACK, measured["recall"]


def test_false_positives_on_safe_cases_are_no_more_than_the_baseline(
    measured: dict[str, Any], baseline: dict[str, Any]
) -> None:
    assert measured["fpr"]["k"] <= baseline["fpr"]["k"] + SLACK, measured["fpr"]


def test_no_category_loses_recall(measured: dict[str, Any], baseline: dict[str, Any]) -> None:
    worse = {
        category: (row["recall"]["k"], baseline["categories"][category]["recall"]["k"])
        for category, row in measured["categories"].items()
        if row["recall"]["k"] < baseline["categories"][category]["recall"]["k"] - SLACK
    }
    assert not worse, f"category recall (now, baseline) fell: {worse}"


def test_everyday_requests_are_refused_no_more_often_than_the_baseline(
    measured: dict[str, Any], baseline: dict[str, Any]
) -> None:
    """The everyday probe: ordinary requests ("Describe a cat in one sentence.") once met
    refusals because words like "describe" were mostly seen in unsafe training texts."""
    now, before = measured["everyday"]["fpr"], baseline["everyday"]["fpr"]
    assert now["n"] == before["n"], "the everyday probe changed"
    assert now["k"] <= before["k"] + SLACK, now
