"""The moderation check: texts judged on demand by the processors' classifier.

The gateway's ``POST /v1/moderations`` sends a :class:`ModerationCheck` to the processors
(``POST /v1/moderations`` on their ops port, ``CHATBUS_MODERATION_SERVICE_URL``) and gets a
:class:`ModerationCheckResult` back: the same classifier, thresholds and parent-category rule
that moderate chat requests on the bus, so a client can check a text before sending it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_TEXTS = 32
MAX_TEXT_CHARS = 32_000


class ModerationCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)


class TextJudgement(BaseModel):
    """One text: whether it is flagged, and each category's decision and score."""

    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


class ModerationCheckResult(BaseModel):
    classifier: str
    results: list[TextJudgement]
