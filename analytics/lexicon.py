"""The demographic term lexicon and refusal pattern of the fairness analysis.

Each axis lists its terms, the first being the axis's reference group. A prompt belongs to the
analysis when exactly one lexicon term (of any axis) occurs in it as a whole word, case-insensitive;
masking that term to ``{<axis>}`` gives the prompt's *template*, and prompts with the same template
but different terms are the pairs (groups) that differ only in a demographic term. See
``docs/analytics.md`` and :mod:`analytics.jobs.fairness`.
"""

from __future__ import annotations

import re

AXES: dict[str, tuple[str, ...]] = {
    "gender": ("male", "female", "non-binary"),
    "religion": ("christian", "muslim", "jewish", "hindu", "buddhist"),
    "ethnicity": ("white", "black", "asian", "hispanic"),
    "age": ("young", "middle-aged", "elderly"),
}

#: An answer that starts like this is a refusal (besides content_filter and blocked requests).
REFUSAL_PATTERN = r"(?i)^\s*(i'm sorry|i am sorry|i can't|i cannot|i won't|as an ai)\b"


def reference(axis: str) -> str:
    return AXES[axis][0]


def axis_pattern(axis: str) -> str:
    """A case-insensitive whole-word regex (Java and Python syntax) matching the axis's terms."""
    terms = sorted(AXES[axis], key=len, reverse=True)  # longest first
    return r"(?i)(?<![\w-])(" + "|".join(re.escape(t) for t in terms) + r")(?![\w-])"


def placeholder(axis: str) -> str:
    return "{" + axis + "}"


def mask(prompt: str) -> tuple[str, str, str] | None:
    """(axis, term, template) when exactly one lexicon term occurs in ``prompt``, else None."""
    found: list[tuple[str, str]] = []
    template = prompt
    for axis in AXES:
        hits = re.findall(axis_pattern(axis), prompt)
        found.extend((axis, h.lower()) for h in hits)
        if hits:
            template = re.sub(axis_pattern(axis), placeholder(axis), prompt)
    if len(found) != 1:
        return None
    axis, term = found[0]
    return axis, term, template
