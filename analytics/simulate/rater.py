"""How a simulated user rates a real answer: a few plain rules over its text.

When simulated conversations go through the live pipeline, the answers are the real model's,
so the ratings must judge them, not draw from a table: an answer is rated down when it refuses
(:data:`analytics.lexicon.REFUSAL_PATTERN`), is empty, was cut at ``max_tokens`` or stopped, or
repeats itself (a small model's loop); else up. Crude, but it is a judgement of the text — the
same answer always gets the same rating — and it is what the fine-tuning set then learns from.
"""

from __future__ import annotations

import re

from analytics.lexicon import REFUSAL_PATTERN
from schemas.events import RatingCategory

REPEATED_SHARE = 0.3  # of an answer's word trigrams seen before in it: it loops


def repeated_share(text: str) -> float:
    """The share of the text's word trigrams that already occurred earlier in it."""
    words = text.lower().split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if not grams:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


def rate_answer(text: str, finish_reason: str | None) -> tuple[str, RatingCategory]:
    """(``up`` or ``down``, the category a user would pick) for one answer."""
    if not text.strip():
        return "down", "unhelpful"
    if re.match(REFUSAL_PATTERN, text):
        return "down", "refused"
    if finish_reason in ("length", "cancelled", "content_filter"):
        return "down", "unhelpful"
    if repeated_share(text) > REPEATED_SHARE:
        return "down", "unhelpful"
    return "up", "helpful"
