"""Coalesce tokens into chunks: at most N tokens or M ms per chunk; the first token at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class PendingChunk:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    opened_at: float | None = None


class Chunker:
    """Decides when buffered tokens become a chunk (one Kafka message)."""

    def __init__(
        self, max_tokens: int, max_ms: float, *, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_tokens = max_tokens
        self._max_s = max_ms / 1000.0
        self._now = now
        self._pending = PendingChunk()
        self._sent_any = False

    def add(self, text: str, token_ids: list[int]) -> PendingChunk | None:
        """Buffer tokens; returns a chunk to send now, or None to keep buffering."""
        pending = self._pending
        if pending.opened_at is None:
            pending.opened_at = self._now()
        pending.text += text
        pending.token_ids.extend(token_ids)
        due = (
            not self._sent_any  # the first token goes out at once: time to first token
            or len(pending.token_ids) >= self._max_tokens
            or self._now() - pending.opened_at >= self._max_s
        )
        if due and (pending.text or len(pending.token_ids) >= self._max_tokens):
            return self.take()
        return None

    def take(self) -> PendingChunk:
        """Everything buffered, as one chunk (possibly empty)."""
        chunk, self._pending = self._pending, PendingChunk()
        self._sent_any = True
        return chunk
