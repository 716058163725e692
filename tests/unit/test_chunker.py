"""Chunk coalescing: the first token at once, then at most N tokens or M ms per chunk."""

from __future__ import annotations

from inference_consumers.chunker import Chunker
from tests.unit.manual_clock import Clock


def test_the_first_token_is_sent_immediately() -> None:
    chunker = Chunker(max_tokens=8, max_ms=50, now=Clock())
    chunk = chunker.add("a", [1])
    assert chunk is not None and chunk.token_ids == [1] and chunk.text == "a"


def test_tokens_coalesce_until_the_token_limit() -> None:
    chunker = Chunker(max_tokens=3, max_ms=1000, now=Clock())
    chunker.add("a", [1])
    assert chunker.add("b", [2]) is None
    assert chunker.add("c", [3]) is None
    chunk = chunker.add("d", [4])
    assert chunk is not None and chunk.token_ids == [2, 3, 4] and chunk.text == "bcd"


def test_tokens_coalesce_until_the_time_limit() -> None:
    clock = Clock()
    chunker = Chunker(max_tokens=100, max_ms=10, now=clock)
    chunker.add("a", [1])
    assert chunker.add("b", [2]) is None
    clock.now = 0.011
    chunk = chunker.add("c", [3])
    assert chunk is not None and chunk.text == "bc"


def test_take_returns_what_is_buffered_even_if_empty() -> None:
    chunker = Chunker(max_tokens=100, max_ms=100, now=Clock())
    chunker.add("a", [1])
    chunker.add("b", [2])
    assert chunker.take().text == "b"
    assert chunker.take().text == ""
