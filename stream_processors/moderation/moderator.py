"""The input-moderation decision for one request, and the events that carry it.

:class:`InputModerator` is plain (blocking) logic: the Faust agent calls :meth:`assess` in a
thread and publishes what it returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.events import (
    ChatRequest,
    Completion,
    ErrorInfo,
    ModerationVerdict,
    PiiSpan,
    TokenChunk,
)
from stream_processors.moderation.abuse import AbusePolicy, AbuseState
from stream_processors.moderation.categories import (
    ABUSE,
    CATEGORIES,
    CategoryScores,
    flagged_categories,
    with_parents,
)
from stream_processors.moderation.classifier import Classifier, classify_all
from stream_processors.moderation.context import input_texts
from stream_processors.moderation.normalize import variants
from stream_processors.moderation.pii import find_pii
from stream_processors.moderation.refusals import refusal_for, refusal_messages

MODERATION_WORKER_ID = "moderation"


def last_user_message(request: ChatRequest) -> tuple[int, str] | None:
    """Index and text of the request's last user message (where a refusal points)."""
    for index in range(len(request.messages) - 1, -1, -1):
        if request.messages[index].role == "user":
            return index, request.messages[index].content
    return None


@dataclass(frozen=True)
class Decision:
    """What to do with a request: the verdict, and the refusal when it is blocked."""

    verdict: ModerationVerdict
    refusal: ErrorInfo | None = None
    abuse: AbuseState | None = None  # the user's new abuse state, when it changed
    flagged: tuple[str, ...] = field(default_factory=tuple)

    @property
    def approved(self) -> bool:
        return self.refusal is None


class InputModerator:
    """Classifies the conversation (its last user message and its recent user turns, each as
    written and normalised), applies thresholds, and tracks abuse per user."""

    def __init__(
        self,
        classifier: Classifier,
        thresholds: dict[str, float],
        policy: AbusePolicy,
        refusals: Mapping[str, str] | None = None,
    ) -> None:
        missing = set(CATEGORIES) - set(thresholds)
        if missing:
            raise ValueError(f"no threshold for {sorted(missing)}")
        self.classifier = classifier
        self.thresholds = thresholds
        self.policy = policy
        self.refusals = refusal_messages(refusals or {})

    def judge_texts(self, texts: Sequence[str]) -> tuple[CategoryScores, dict[str, bool]]:
        """The highest score per category over ``texts`` and their normalised forms (a parent
        at least its subcategories), and whether each reaches its threshold."""
        scores = dict.fromkeys(CATEGORIES, 0.0)
        judged = list(dict.fromkeys(v for text in texts for v in variants(text)))
        for found in classify_all(self.classifier, judged):  # one encoder batch
            for c, s in found.items():
                if c in scores:
                    scores[c] = max(scores[c], min(1.0, max(0.0, s)))
        scores = with_parents(scores)
        return scores, flagged_categories(scores, self.thresholds)

    def judge(self, text: str) -> tuple[CategoryScores, dict[str, bool]]:
        """One text's verdict: what ``/v1/moderations`` decides on."""
        return self.judge_texts([text])

    def assess(self, request: ChatRequest, abuse: AbuseState, now: float) -> Decision:
        """The decision on ``request`` by a user whose abuse state is ``abuse`` (blocking)."""
        base = {
            "request_id": request.request_id,
            "conversation_id": request.conversation_id,
            "user_id": request.user_id,
            "stage": "input",
        }
        if abuse.is_blocked(now):
            until = datetime.fromtimestamp(abuse.blocked_until, UTC).isoformat(timespec="seconds")
            verdict = ModerationVerdict(
                **base, flagged=True, categories={ABUSE: True}, action="block"
            )
            return Decision(
                verdict,
                ErrorInfo(
                    code="user_blocked",
                    message=f"{self.refusals[ABUSE]} Try again after {until} (category {ABUSE}).",
                ),
                flagged=(ABUSE,),
            )
        found = last_user_message(request)
        if found is None:
            return Decision(ModerationVerdict(**base, flagged=False))
        index, text = found
        scores, categories = self.judge_texts(
            input_texts([(m.role, m.content) for m in request.messages])
        )
        flagged = tuple(
            sorted((c for c, hit in categories.items() if hit), key=lambda c: -scores.get(c, 0.0))
        )
        pii = [
            PiiSpan(kind=m.kind, message_index=index, start=m.start, end=m.end)
            for m in find_pii(text)
        ]
        verdict = ModerationVerdict(
            **base,
            flagged=bool(flagged),
            categories=categories,
            category_scores={c: round(s, 4) for c, s in scores.items()},
            action="block" if flagged else "allow",
            pii=pii,
        )
        if not flagged:
            return Decision(verdict)
        named = ", ".join(f"{c} ({scores[c]:.2f})" for c in flagged)
        refusal = ErrorInfo(
            code="content_policy_violation",
            message=f"{refusal_for(flagged, self.refusals)} "
            f"(blocked by input moderation; flagged categories: {named})",
            param=f"messages.{index}.content",
        )
        return Decision(verdict, refusal, abuse.with_violation(now, self.policy), flagged)


def refusal_events(request: ChatRequest, error: ErrorInfo) -> tuple[TokenChunk, Completion]:
    """The terminal chunk for the requester's reply partition, and the refused completion."""
    chunk = TokenChunk(
        request_id=request.request_id,
        conversation_id=request.conversation_id,
        seq=0,
        finish_reason="content_filter",
        error=error,
        worker_id=MODERATION_WORKER_ID,
    )
    completion = Completion(
        request_id=request.request_id,
        conversation_id=request.conversation_id,
        user_id=request.user_id,
        key_id=request.key_id,
        model=request.model,
        text="",
        finish_reason="content_filter",
        worker_id=MODERATION_WORKER_ID,
        error=error,
    )
    return chunk, completion
