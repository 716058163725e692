"""Output moderation, mid-stream: which windows of a growing answer to judge, and the verdict.

Chunks of one answer all travel on its reply partition, so one processor sees every chunk of an
answer, in order. :class:`OutputWatch` accumulates the text per request and hands out a window
to classify each time ``window_chars`` of new text have arrived (overlapping the previous window
by ``overlap_chars``, so a phrase split across windows is still seen), and on the last chunk.
After a violation it counts the tokens that still reach the client (the overrun).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from schemas.events import CancelRequest, ModerationVerdict, TokenChunk
from stream_processors.moderation.categories import flagged_categories, with_parents
from stream_processors.moderation.classifier import Classifier

CONTENT_FILTER = "content_filter"  # the cancel reason a worker turns into finish_reason


@dataclass(slots=True)
class _Answer:
    conversation_id: str
    text: str = ""
    checked: int = 0  # characters already judged
    tokens: int = 0
    stopped_at_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Window:
    request_id: str
    conversation_id: str
    text: str
    tokens_seen: int


class OutputWatch:
    """Per-request answer text and the windows of it still to judge."""

    def __init__(self, window_chars: int, overlap_chars: int, max_tracked: int = 50_000) -> None:
        if not 0 <= overlap_chars < window_chars:
            raise ValueError("overlap_chars must be within [0, window_chars)")
        self._window = window_chars
        self._overlap = overlap_chars
        self._max = max_tracked
        self._answers: OrderedDict[str, _Answer] = OrderedDict()

    def add(self, chunk: TokenChunk) -> tuple[Window | None, int | None]:
        """Take a chunk; returns (a window to judge now or None, the overrun when it is the
        last chunk of a stopped answer or None)."""
        answer = self._answers.get(chunk.request_id)
        if answer is None:
            answer = self._answers[chunk.request_id] = _Answer(chunk.conversation_id)
            while len(self._answers) > self._max:  # answers whose last chunk we never saw
                self._answers.popitem(last=False)
        answer.text += chunk.text
        answer.tokens += len(chunk.token_ids)
        window: Window | None = None
        if answer.stopped_at_tokens is None and (
            len(answer.text) - answer.checked >= self._window
            or (chunk.is_last and len(answer.text) > answer.checked)
        ):
            start = max(0, answer.checked - self._overlap)
            window = Window(
                chunk.request_id, answer.conversation_id, answer.text[start:], answer.tokens
            )
            answer.checked = len(answer.text)
        overrun = None
        if chunk.is_last:
            del self._answers[chunk.request_id]
            if answer.stopped_at_tokens is not None:
                overrun = answer.tokens - answer.stopped_at_tokens
        return window, overrun

    def stop(self, window: Window) -> None:
        """``window`` violated the policy: judge no more of this answer, count its overrun."""
        answer = self._answers.get(window.request_id)
        if answer is not None:
            answer.stopped_at_tokens = window.tokens_seen


def judge_output(
    classifier: Classifier, thresholds: Mapping[str, float], window: Window
) -> tuple[ModerationVerdict, CancelRequest | None]:
    """The verdict on one window, and the cancel that stops generation when it is flagged."""
    scores = with_parents(
        {c: min(1.0, max(0.0, s)) for c, s in classifier.classify(window.text).items()}
    )
    categories = flagged_categories(scores, thresholds)
    flagged = any(categories.values())
    verdict = ModerationVerdict(
        request_id=window.request_id,
        conversation_id=window.conversation_id,
        stage="output",
        flagged=flagged,
        categories=categories,
        category_scores={c: round(s, 4) for c, s in scores.items()},
        action="stop_generation" if flagged else "allow",
    )
    cancel = CancelRequest(request_id=window.request_id, reason=CONTENT_FILTER) if flagged else None
    return verdict, cancel
