"""Output moderation windows: judged as the answer grows, overlapping, overrun counted."""

from __future__ import annotations

from schemas.events import TokenChunk
from stream_processors.moderation.categories import CATEGORIES
from stream_processors.moderation.output_watch import OutputWatch, judge_output


def chunk(seq: int, text: str, last: bool = False) -> TokenChunk:
    return TokenChunk(
        request_id="r",
        conversation_id="c",
        seq=seq,
        text=text,
        token_ids=[1] * len(text),
        finish_reason="length" if last else None,
    )


class Flags:
    """Flags text containing 'BAD' as violence; everything else scores zero."""

    name = "flags"

    def classify(self, text: str) -> dict[str, float]:
        return {c: (0.99 if c == "violence" and "BAD" in text else 0.0) for c in CATEGORIES}


def test_a_window_is_judged_each_time_enough_new_text_arrived() -> None:
    watch = OutputWatch(window_chars=10, overlap_chars=4)
    assert watch.add(chunk(0, "12345"))[0] is None
    window, _ = watch.add(chunk(1, "67890ab"))
    assert window is not None and window.text == "1234567890ab"
    window, _ = watch.add(chunk(2, "cdefghijkl"))
    assert window is not None and window.text == "90abcdefghijkl", "overlaps the last window"


def test_the_last_chunk_gets_the_rest_judged() -> None:
    watch = OutputWatch(window_chars=100, overlap_chars=10)
    watch.add(chunk(0, "short"))
    window, overrun = watch.add(chunk(1, " answer", last=True))
    assert window is not None and window.text == "short answer"
    assert overrun is None


def test_after_a_violation_nothing_more_is_judged_and_the_overrun_is_counted() -> None:
    watch = OutputWatch(window_chars=5, overlap_chars=0)
    window, _ = watch.add(chunk(0, "a BAD thing"))
    assert window is not None
    verdict, cancel = judge_output(Flags(), dict.fromkeys(CATEGORIES, 0.5), window)
    assert verdict.flagged and verdict.stage == "output" and verdict.action == "stop_generation"
    assert cancel is not None and cancel.reason == "content_filter"
    watch.stop(window)
    assert watch.add(chunk(1, "more text"))[0] is None
    _, overrun = watch.add(chunk(2, "end", last=True))
    assert overrun == len("more text") + len("end")


def test_a_clean_window_is_allowed_without_a_cancel() -> None:
    watch = OutputWatch(window_chars=5, overlap_chars=0)
    window, _ = watch.add(chunk(0, "all good here"))
    assert window is not None
    verdict, cancel = judge_output(Flags(), dict.fromkeys(CATEGORIES, 0.5), window)
    assert not verdict.flagged and cancel is None and verdict.action == "allow"
