"""Reading OpenAI's chat fine-tuning JSONL into conversations.

One JSON object per line, ``{"messages": [{"role": ..., "content": ...}, ...]}``, roles
``system``, ``user`` and ``assistant``. An assistant message may carry OpenAI's ``"weight": 0``
(kept as context, not learned). Other keys (``name``, ``tools``, ...) are ignored.

Two kinds of bad line, treated differently:

- a line that is not such an object (bad JSON, no ``messages``, an unknown role, content that is
  not text) stops the run with :class:`TrainingDataError` naming the file, the line and why: a
  set with broken lines was written by a broken job, and training on the rest would hide that;
- a conversation with no assistant message to learn from is skipped and counted (a filtered set
  may leave some behind; there is nothing in it to train on).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference_consumers.training.errors import TrainingDataError

__all__ = ["ROLES", "Conversation", "ConversationSet", "Turn", "parse_line", "read_conversations"]

ROLES = ("system", "user", "assistant")
_SHOWN_SKIPS = 5  # where the first skipped conversations were, for the report


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    learn: bool = False  # an assistant turn the loss is computed on

    def as_message(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    turns: tuple[Turn, ...]
    where: str  # file:line, for messages about it

    @property
    def messages(self) -> list[dict[str, str]]:
        return [t.as_message() for t in self.turns]


@dataclass
class ConversationSet:
    conversations: list[Conversation] = field(default_factory=list)
    lines: int = 0  # non-blank lines read
    skipped_no_assistant: int = 0
    skipped_where: list[str] = field(default_factory=list)  # the first few, to show

    def skip(self, where: str) -> None:
        self.skipped_no_assistant += 1
        if len(self.skipped_where) < _SHOWN_SKIPS:
            self.skipped_where.append(where)


def read_conversations(files: Sequence[Path]) -> ConversationSet:
    """Every conversation of ``files`` (in order). Raises :class:`TrainingDataError` for a
    malformed line, or when the files hold no line at all."""
    result = ConversationSet()
    for file in files:
        for where, text in _lines(file):
            result.lines += 1
            conversation = parse_line(text, where)
            if conversation is None:
                result.skip(where)
            else:
                result.conversations.append(conversation)
    if result.lines == 0:
        names = ", ".join(str(f) for f in files)
        raise TrainingDataError(f"{names}: empty, no conversation to train on")
    return result


def _lines(file: Path) -> Iterator[tuple[str, str]]:
    """``(file:line, text)`` of every non-blank line, decoded one by one (so a bad byte is
    reported with its line)."""
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise TrainingDataError(f"cannot read {file}: {exc.strerror or exc}") from exc
    with handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{file}:{number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise TrainingDataError(
                    f"{where}: not UTF-8 text (byte {exc.start + 1} of the line)"
                ) from exc
            if number == 1:
                text = text.removeprefix("\ufeff")
            if text.strip():
                yield where, text


def parse_line(text: str, where: str) -> Conversation | None:
    """The conversation on one line, or None when it has no assistant message to learn."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrainingDataError(
            f"{where}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from exc
    if not isinstance(data, dict):
        raise TrainingDataError(
            f'{where}: expected a JSON object with "messages", got {_kind(data)}'
        )
    messages = data.get("messages")
    if not isinstance(messages, list):
        got = "no such key" if "messages" not in data else _kind(messages)
        raise TrainingDataError(f'{where}: "messages" must be a list of messages ({got})')
    if not messages:
        raise TrainingDataError(f'{where}: "messages" is empty')
    turns = tuple(_turn(message, f"{where}: message {i}") for i, message in enumerate(messages, 1))
    if not any(turn.learn for turn in turns):
        return None
    return Conversation(turns=turns, where=where)


def _turn(message: Any, where: str) -> Turn:
    if not isinstance(message, dict):
        raise TrainingDataError(f"{where} is {_kind(message)}, not an object")
    role = message.get("role")
    if role not in ROLES:
        raise TrainingDataError(
            f"{where} has role {role!r}: chatbus trains on {', '.join(ROLES)} messages"
        )
    content = _text(message.get("content"), where)
    weight = message.get("weight", 1)
    if role == "assistant" and weight not in (0, 1):
        raise TrainingDataError(f'{where}: "weight" must be 0 or 1, got {weight!r}')
    return Turn(role=role, content=content, learn=role == "assistant" and weight == 1)


def _text(content: Any, where: str) -> str:
    """The text of ``content``: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(_is_text_part(p) for p in content):
        return "".join(p["text"] for p in content)
    raise TrainingDataError(
        f'{where}: "content" must be text (a string or a list of text parts), got {_kind(content)}'
    )


def _is_text_part(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    return part.get("type") == "text" and isinstance(part.get("text"), str)


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")
