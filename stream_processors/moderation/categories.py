"""OpenAI's moderation taxonomy, and per-category thresholds from settings."""

from __future__ import annotations

from collections.abc import Mapping

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings
from schemas.events import MODERATION_CATEGORIES

CATEGORIES: tuple[str, ...] = MODERATION_CATEGORIES

#: Category of a refusal that is about the user, not the text (too many recent violations).
ABUSE = "abuse"

CategoryScores = dict[str, float]


def thresholds_from(settings: Settings) -> dict[str, float]:
    """Every category's threshold; raises :class:`ConfigurationError` on an unknown category."""
    unknown = sorted(set(settings.moderation.thresholds) - set(CATEGORIES))
    if unknown:
        raise ConfigurationError(
            f"CHATBUS_MODERATION_THRESHOLDS names unknown categories {unknown}; "
            f"known: {', '.join(CATEGORIES)}"
        )
    for name, value in settings.moderation.thresholds.items():
        if not 0.0 < value <= 1.0:
            raise ConfigurationError(
                f"CHATBUS_MODERATION_THRESHOLDS[{name!r}] must be within (0, 1], got {value}"
            )
    return {
        c: settings.moderation.thresholds.get(c, settings.moderation.default_threshold)
        for c in CATEGORIES
    }


def with_parents(scores: Mapping[str, float]) -> CategoryScores:
    """Scores where a parent category scores at least as high as its subcategories
    (``violence/graphic`` 0.9 implies ``violence`` ≥ 0.9)."""
    out = {c: scores.get(c, 0.0) for c in CATEGORIES}
    for category in CATEGORIES:
        parent = category.split("/", 1)[0]
        if parent != category:
            out[parent] = max(out[parent], out[category])
    return out


def flagged_categories(
    scores: Mapping[str, float], thresholds: Mapping[str, float]
) -> dict[str, bool]:
    """Each category → whether its score reaches its threshold (or a subcategory's does)."""
    hits = {c: scores.get(c, 0.0) >= thresholds[c] for c in CATEGORIES}
    for category in CATEGORIES:
        parent = category.split("/", 1)[0]
        if parent != category and hits[category]:
            hits[parent] = True
    return hits
