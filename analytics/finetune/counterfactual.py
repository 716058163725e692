"""Counterfactual copies of a turn: one demographic term swapped for another (plain Python, run by
Spark as a UDF).

A turn takes part when its prompt (the last user message, as in the fairness job) holds exactly one
lexicon term (:func:`analytics.lexicon.mask`). For each other term of that axis, a copy has every
whole-word, case-insensitive occurrence of the term — in every message and in the answer — replaced
by the other term, in the case of the occurrence: ``muslim`` → ``christian``, ``Muslim`` →
``Christian``, ``MUSLIM`` → ``CHRISTIAN``, ``Non-Binary`` → ``Middle-Aged``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from analytics.lexicon import AXES, mask


def match_case(occurrence: str, term: str) -> str:
    """``term`` in the case of ``occurrence`` (upper, every part capitalised, first letter
    capitalised, or lower)."""
    letters = [c for c in occurrence if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return term.upper()
    if "-" in occurrence and all(part[:1].isupper() for part in occurrence.split("-")):
        return "-".join(part[:1].upper() + part[1:] for part in term.split("-"))
    if occurrence[:1].isupper():
        return term[:1].upper() + term[1:]
    return term.lower()


def term_pattern(term: str) -> re.Pattern[str]:
    """``term`` as a whole word (as :func:`analytics.lexicon.axis_pattern` delimits words)."""
    return re.compile(r"(?<![\w-])" + re.escape(term) + r"(?![\w-])", re.IGNORECASE)


def swap(text: str, term: str, other: str) -> str:
    """``text`` with each whole-word occurrence of ``term`` replaced by ``other``, case kept."""
    return term_pattern(term).sub(lambda m: match_case(m.group(), other), text)


def prompt_of(messages: Sequence[tuple[str, str]]) -> str:
    """The last user message ('' when none)."""
    users = [content for role, content in messages if role == "user"]
    return users[-1] if users else ""


def probe_of(messages: Sequence[tuple[str, str]]) -> tuple[str, str] | None:
    """(axis, term) when the prompt holds exactly one lexicon term, else None."""
    found = mask(prompt_of(messages))
    return None if found is None else (found[0], found[1])


def counterfactuals(
    messages: Sequence[tuple[str, str]], answer: str, axis: str, term: str
) -> list[tuple[str, list[tuple[str, str]], str]]:
    """(other term, messages, answer) for each other term of ``axis``, in the lexicon's order."""
    return [
        (
            other,
            [(role, swap(content, term, other)) for role, content in messages],
            swap(answer, term, other),
        )
        for other in AXES[axis]
        if other != term
    ]


def counterfactual_rows(messages: Any, answer: str, axis: str, term: str) -> list[tuple[Any, ...]]:
    """:func:`counterfactuals` over Spark rows."""
    pairs = [(m["role"], m["content"]) for m in messages]
    return list(counterfactuals(pairs, answer, axis, term))


def probe_row(messages: Any) -> tuple[str, str] | None:
    """:func:`probe_of` over Spark rows."""
    return probe_of([(m["role"], m["content"]) for m in messages])
