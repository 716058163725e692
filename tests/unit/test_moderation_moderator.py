"""The decision on a request, with a fake classifier (no model)."""

from __future__ import annotations

from schemas.events import ChatRequest, ReplyTo
from stream_processors.moderation.abuse import AbusePolicy, AbuseState
from stream_processors.moderation.categories import CATEGORIES, CategoryScores
from stream_processors.moderation.moderator import InputModerator, refusal_events


class FixedScores:
    name = "fixed"

    def __init__(self, **scores: float) -> None:
        self.scores = {c.replace("__", "/").replace("_", "-"): s for c, s in scores.items()}
        self.seen: list[str] = []

    def classify(self, text: str) -> CategoryScores:
        self.seen.append(text)
        return dict.fromkeys(CATEGORIES, 0.0) | self.scores


def request(text: str, user: str = "u1") -> ChatRequest:
    return ChatRequest(
        model="m",
        user_id=user,
        reply_to=ReplyTo(partition=1),
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "earlier"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": text},
        ],
    )


THRESHOLDS = dict.fromkeys(CATEGORIES, 0.5) | {"sexual/minors": 0.2}
POLICY = AbusePolicy(half_life_s=3600, weight=1.0, block_threshold=1.5, block_s=600)


def test_a_benign_request_is_allowed_with_scores_and_pii() -> None:
    classifier = FixedScores(violence=0.3)
    moderator = InputModerator(classifier, THRESHOLDS, POLICY)
    decision = moderator.assess(request("call me at 415-555-0132"), AbuseState(), 0.0)
    assert decision.approved and decision.abuse is None
    verdict = decision.verdict
    assert verdict.action == "allow" and not verdict.flagged and verdict.stage == "input"
    assert verdict.category_scores["violence"] == 0.3
    assert classifier.seen == ["call me at 415-555-0132"]  # the last user message only
    (span,) = verdict.pii
    assert (span.kind, span.message_index, span.start, span.end) == ("phone", 3, 11, 23)


def test_thresholds_are_per_category() -> None:
    moderator = InputModerator(FixedScores(sexual__minors=0.25, hate=0.45), THRESHOLDS, POLICY)
    decision = moderator.assess(request("x"), AbuseState(), 0.0)
    assert decision.verdict.categories["sexual/minors"]
    assert decision.verdict.categories["sexual"]  # the parent is lifted by its subcategory
    assert not decision.verdict.categories["hate"]
    assert decision.verdict.action == "block"


def test_a_blocked_request_names_the_category_and_counts_a_violation() -> None:
    moderator = InputModerator(FixedScores(self_harm__instructions=0.9), THRESHOLDS, POLICY)
    decision = moderator.assess(request("x"), AbuseState(), 100.0)
    assert not decision.approved and decision.refusal is not None
    assert decision.refusal.code == "content_policy_violation"
    assert "self-harm/instructions" in decision.refusal.message
    assert decision.refusal.param == "messages.3.content"
    assert decision.abuse == AbuseState(score=1.0, updated_at=100.0, violations=1)

    chunk, completion = refusal_events(request("x"), decision.refusal)
    assert chunk.seq == 0 and chunk.finish_reason == "content_filter" and chunk.error
    assert completion.finish_reason == "content_filter" and completion.error == chunk.error


def test_a_blocked_user_is_refused_without_classifying() -> None:
    classifier = FixedScores()
    moderator = InputModerator(classifier, THRESHOLDS, POLICY)
    state = AbuseState().with_violation(0, POLICY).with_violation(1, POLICY)
    decision = moderator.assess(request("hello"), state, 2.0)
    assert decision.refusal is not None and decision.refusal.code == "user_blocked"
    assert "abuse" in decision.refusal.message
    assert decision.verdict.categories == {"abuse": True}
    assert decision.abuse is None and classifier.seen == []
    later = moderator.assess(request("hello"), state, 1.0 + POLICY.block_s + 1)
    assert later.approved
