"""Personal data streamed across token chunks is redacted in every chunk that holds part of it,
including the earlier chunks of the batch being built; answers never mix; lines stay in step."""

from __future__ import annotations

import json
from typing import Any

from stream_processors.archiver.batch import PartitionBatch
from stream_processors.archiver.stream_redaction import Span, TokenStreamRedactor, render


class Stream:
    """Chunks of answers appended to one partition's batch, as the archiver does."""

    def __init__(self) -> None:
        self.batch = PartitionBatch("chat.tokens", 0)
        self.redactor = TokenStreamRedactor()
        self.offset = 0
        self.found = 0

    def send(self, request_id: str, *texts: str, last: bool = False) -> None:
        for i, text in enumerate(texts):
            record: dict[str, Any] = {
                "type": "chat.token",
                "request_id": request_id,
                "text": text,
                "token_ids": [1, 2],
                "finish_reason": "stop" if last and i == len(texts) - 1 else None,
            }
            index = self.batch.add(self.offset, 0, record)
            self.offset += 1
            self.found += self.redactor.add(self.batch, index, record)

    def flush(self) -> None:
        self.batch = PartitionBatch("chat.tokens", 0)

    def archived(self, batch: PartitionBatch | None = None) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (batch or self.batch).lines]


def text_of(lines: list[dict[str, Any]], request_id: str) -> str:
    return "".join(line["text"] for line in lines if line["request_id"] == request_id)


def test_a_card_number_streamed_four_digits_at_a_time_is_redacted_in_every_chunk() -> None:
    stream = Stream()
    stream.send("r1", "Your card ", "4111", " 1111", " 1111", " 1111", " is on file.", last=True)
    lines = stream.archived()
    answer = text_of(lines, "r1")
    assert not any(c.isdigit() for c in answer)
    assert answer.startswith("Your card [REDACTED:payment_card]")
    assert answer.endswith(" is on file.")
    touched = [line for line in lines if "[REDACTED" in line["text"]]
    assert len(touched) == 4 and all(line["token_ids"] == [] for line in touched)
    assert lines[0] == {**lines[0], "text": "Your card ", "token_ids": [1, 2]}  # untouched
    assert stream.found >= 1
    assert len(stream.redactor) == 0  # the last chunk ends the answer's state


def test_an_email_split_across_chunks_is_counted_once() -> None:
    stream = Stream()
    stream.send("r1", "write to ali", "ce@exa", "mple.org", " today")
    assert text_of(stream.archived(), "r1") == (
        "write to [REDACTED:email][REDACTED:email][REDACTED:email] today"
    )
    assert stream.found == 1


def test_interleaved_answers_do_not_lend_each_other_digits() -> None:
    stream = Stream()
    stream.send("a", "dial 415 555")
    stream.send("b", "-0100 units")  # with a's text this would look like a phone number
    stream.send("a", " soon")
    lines = stream.archived()
    assert text_of(lines, "a") == "dial 415 555 soon"
    assert text_of(lines, "b") == "-0100 units"
    assert stream.found == 0


def test_a_flush_inside_a_number_leaves_the_uploaded_part_and_redacts_the_rest() -> None:
    stream = Stream()
    stream.send("r1", "call 415")
    uploaded = stream.batch
    stream.flush()
    stream.send("r1", "-555-", "0100 now")
    assert text_of(stream.archived(uploaded), "r1") == "call 415"  # already in S3: as it was
    assert text_of(stream.archived(), "r1") == "[REDACTED:phone][REDACTED:phone] now"


def test_rewritten_lines_keep_the_batch_size_exact() -> None:
    stream = Stream()
    stream.send("r1", "mail bob", "@example.com", " or 4111", " 1111 1111 1111")
    assert stream.batch.size == sum(len(line) for line in stream.batch.lines)
    assert all(line.endswith(b"\n") for line in stream.batch.lines)


def test_render_merges_overlapping_spans_under_the_longest_kind() -> None:
    spans = [Span(5, 13, "phone"), Span(5, 24, "payment_card")]
    assert render("card 4111 1111 1111 1111!", 0, spans) == "card [REDACTED:payment_card]!"
    assert render("1111 1111!", 15, spans) == "[REDACTED:payment_card]!"


def test_an_earlier_span_stays_redacted_when_a_long_chunk_is_rewritten() -> None:
    stream = Stream()
    stream.send("r1", "mail a@b.com " + "x" * 280 + " call 555-12", "34 bye")
    long_chunk, rest = (line["text"] for line in stream.archived())
    assert "a@b.com" not in long_chunk and long_chunk.startswith("mail [REDACTED:email] ")
    assert long_chunk.endswith(" call [REDACTED:phone]") and rest == "[REDACTED:phone] bye"


def test_a_chunk_of_no_known_answer_is_redacted_on_its_own() -> None:
    stream = Stream()
    record = {"type": "chat.token", "text": "mail me at john@example.com", "token_ids": [7]}
    stream.found += stream.redactor.add(stream.batch, stream.batch.add(0, 0, record), record)
    (line,) = stream.archived()
    assert line["text"] == "mail me at [REDACTED:email]" and line["token_ids"] == []
    assert stream.found == 1


def test_a_duplicate_chunk_is_redacted_as_its_first_copy_and_lends_no_digits() -> None:
    stream = Stream()
    for seq, text in enumerate(["call 415", "-555-", "0100"]):
        record = {"type": "chat.token", "request_id": "r1", "seq": seq, "text": text}
        stream.redactor.add(stream.batch, stream.batch.add(seq, 0, record), record)
    again = {"type": "chat.token", "request_id": "r1", "seq": 1, "text": "-555-"}
    stream.redactor.add(stream.batch, stream.batch.add(3, 0, again), again)
    after = {"type": "chat.token", "request_id": "r1", "seq": 3, "text": " ok 12"}
    stream.redactor.add(stream.batch, stream.batch.add(4, 0, after), after)
    texts = [line["text"] for line in stream.archived()]
    assert texts == [
        "call [REDACTED:phone]",
        "[REDACTED:phone]",
        "[REDACTED:phone]",
        "[REDACTED:phone]",
        " ok 12",
    ]


def test_context_read_before_a_resume_point_redacts_the_rest_of_a_number() -> None:
    stream = Stream()
    for seq, text in enumerate(["card 4111", " 1111"]):  # archived before the restart
        stream.redactor.context(
            {"type": "chat.token", "request_id": "r1", "seq": seq, "text": text}
        )
    stream.send("r1", " 1111", " 1111 thanks")
    assert text_of(stream.archived(), "r1") == "[REDACTED:payment_card]" * 2 + " thanks"


def test_an_uploaded_batch_is_not_kept_alive_by_an_unfinished_answer() -> None:
    import gc
    import weakref

    stream = Stream()
    stream.send("r1", "still going")
    uploaded = weakref.ref(stream.batch)
    stream.flush()
    gc.collect()
    assert uploaded() is None and len(stream.redactor) == 1
