"""A conversation's turns as prompt context: what a turn contributes and which turns fit.

Pure logic, shared by the Redis cache, the MongoDB fallback and the worker:

- a turn contributes its request's messages, then the answer as an ``assistant`` message;
- only answered turns count (``stop`` / ``length``): a refused, failed or cancelled-before-any-
  text turn adds nothing;
- a turn sent *without* ``use_history`` carried the whole transcript itself, so nothing older
  than it is context;
- the newest turns are kept, up to ``max_turns`` and ``max_chars``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.events import ChatMessage

CONTEXT_FINISH_REASONS = frozenset({"stop", "length", "cancelled"})


@dataclass(frozen=True, slots=True)
class ContextTurn:
    """One request and its answer, as the context of later requests needs them."""

    request_id: str
    created_at: float  # epoch seconds of the request (orders turns)
    messages: tuple[ChatMessage, ...] = field(default_factory=tuple)
    answer: str = ""
    finish_reason: str | None = None
    use_history: bool = False

    @property
    def answered(self) -> bool:
        return (
            bool(self.messages)
            and self.finish_reason in CONTEXT_FINISH_REASONS
            and (bool(self.answer) or self.finish_reason != "cancelled")
        )

    def chat_messages(self) -> list[ChatMessage]:
        return [*self.messages, ChatMessage(role="assistant", content=self.answer)]

    def chars(self) -> int:
        return sum(len(m.content) for m in self.messages) + len(self.answer)

    def to_json(self) -> str:
        return json.dumps(
            {
                "request_id": self.request_id,
                "created_at": self.created_at,
                "messages": [m.model_dump() for m in self.messages],
                "answer": self.answer,
                "finish_reason": self.finish_reason,
                "use_history": self.use_history,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> ContextTurn:
        data = json.loads(raw)
        return cls(
            request_id=data["request_id"],
            created_at=float(data["created_at"]),
            messages=tuple(ChatMessage.model_validate(m) for m in data["messages"]),
            answer=data.get("answer", ""),
            finish_reason=data.get("finish_reason"),
            use_history=bool(data.get("use_history", False)),
        )

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> ContextTurn:
        """From a MongoDB ``turns`` document (see the repository)."""
        created = doc.get("created_at")
        if isinstance(doc.get("created_us"), int):
            at = doc["created_us"] / 1_000_000
        else:
            at = created.timestamp() if isinstance(created, datetime) else 0.0
        return cls(
            request_id=str(doc["_id"]),
            created_at=at,
            messages=tuple(ChatMessage.model_validate(m) for m in doc.get("messages") or ()),
            answer=str(doc.get("answer") or ""),
            finish_reason=doc.get("finish_reason"),
            use_history=bool(doc.get("use_history", False)),
        )


def select_context(
    turns: Iterable[ContextTurn], *, max_turns: int, max_chars: int, exclude: str | None = None
) -> list[ContextTurn]:
    """The turns that form the context, oldest first (``exclude``: the request being served)."""
    newest_first = sorted(
        (t for t in turns if t.request_id != exclude and t.answered),
        key=lambda t: t.created_at,
        reverse=True,
    )
    chosen: list[ContextTurn] = []
    chars = 0
    for turn in newest_first:
        if len(chosen) >= max_turns or (chosen and chars + turn.chars() > max_chars):
            break
        chosen.append(turn)
        chars += turn.chars()
        if not turn.use_history:  # it carried the whole transcript before it
            break
    chosen.reverse()
    return chosen


def context_messages(turns: Iterable[ContextTurn]) -> list[ChatMessage]:
    """The chat messages of ``turns`` (oldest first), ready to precede a new request's."""
    return [m for turn in turns for m in turn.chat_messages()]
