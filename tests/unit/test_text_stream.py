"""Incremental detokenization: partial characters wait, stop sequences cut, nothing is lost."""

from __future__ import annotations

from collections.abc import Sequence

from inference_consumers.text_stream import TextStream


def byte_decode(ids: Sequence[int]) -> str:
    """A byte-level tokenizer: one token per byte, undecodable tails become U+FFFD."""
    return bytes(ids).decode("utf-8", errors="replace")


def tokens(text: str) -> list[int]:
    return list(text.encode())


def test_released_text_concatenates_to_the_whole_answer() -> None:
    stream = TextStream(byte_decode)
    out = "".join(stream.push([t]) for t in tokens("héllo wörld ✓"))
    out += stream.finish()
    assert out == "héllo wörld ✓" == stream.text


def test_an_incomplete_utf8_character_is_held_until_complete() -> None:
    stream = TextStream(byte_decode)
    first, second = tokens("é")
    assert stream.push([first]) == ""
    assert stream.push([second]) == "é"


def test_a_stop_sequence_ends_the_text_before_it() -> None:
    stream = TextStream(byte_decode, stop=["STOP"])
    out = "".join(stream.push([t]) for t in tokens("abc STOP def"))
    assert stream.stopped
    assert out + stream.finish() == "abc " == stream.text


def test_text_that_might_become_a_stop_sequence_is_held_back() -> None:
    stream = TextStream(byte_decode, stop=["###"])
    assert stream.push(tokens("ab#")) == "ab"  # '#' could still turn into '###'
    assert stream.push(tokens("#")) == ""
    assert stream.push(tokens("x")) == "##x"
    assert stream.finish() == ""
    assert not stream.stopped
