"""OpenAI's moderation taxonomy, and per-category thresholds from settings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings
from schemas.events import MODERATION_CATEGORIES

CATEGORIES: tuple[str, ...] = MODERATION_CATEGORIES

#: Category of a refusal that is about the user, not the text (too many recent violations).
ABUSE = "abuse"

CategoryScores = dict[str, float]


#: Thresholds calibrated on the evaluation set's train split (python -m
#: stream_processors.moderation.calibrate writes it; the heads it was calibrated for are trained
#: on the same data at start-up).
CALIBRATION_FILE = Path(__file__).resolve().parent / "calibration.json"


def calibrated_thresholds(path: Path = CALIBRATION_FILE) -> dict[str, float]:
    """The calibrated threshold of each category ({} without a calibration file)."""
    if not path.exists():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return {str(c): float(v) for c, v in data["thresholds"].items()}


def thresholds_from(
    settings: Settings, calibrated: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Every category's threshold: the one ``CHATBUS_MODERATION_THRESHOLDS`` sets, else the
    calibrated one (``calibration.json``; ``calibrated`` replaces it), else
    ``CHATBUS_MODERATION_DEFAULT_THRESHOLD``. Raises :class:`ConfigurationError` on an unknown
    category or a threshold outside (0, 1]."""
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
    tuned = calibrated_thresholds() if calibrated is None else dict(calibrated)
    default = settings.moderation.default_threshold
    return {c: settings.moderation.thresholds.get(c, tuned.get(c, default)) for c in CATEGORIES}


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
