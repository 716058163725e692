"""Conversations into training examples: token ids, and labels that are the assistant's alone.

A conversation is rendered with the base model's own chat template (the one the worker prompts
it with), then cut at the turn boundaries the template draws: for each assistant turn, the text
up to its generation prompt (``render(turns before, add_generation_prompt=True)``) is context,
and what the template adds for the turn itself (its content and end-of-turn token, the token the
worker stops at) is learned. Every piece is tokenised on its own and the ids concatenated, so a
token never straddles a prompt and an answer; the labels of context tokens are ``-100`` (no loss).

A conversation without a system message gets the one the worker adds
(``CHATBUS_DEFAULT_SYSTEM_PROMPT``), so the model learns under the prompt it is served with.
Turns after the last learned one are dropped (nothing would learn from them). An example longer
than ``max_length`` tokens is cut at the end and counted; one left with no learned token is
dropped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from chatbus.errors import ConfigurationError
from inference_consumers.request_stream import with_default_system
from inference_consumers.training.chat_jsonl import Conversation
from inference_consumers.training.errors import TrainingDataError

__all__ = ["IGNORE", "ChatTokenizer", "EncodedSet", "Example", "encode_all", "encode_conversation"]

IGNORE = -100  # the label torch's cross entropy skips


class ChatTokenizer(Protocol):
    """What of a Hugging Face tokenizer this module uses."""

    chat_template: Any

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    where: str = ""

    @property
    def learned_tokens(self) -> int:
        return sum(label != IGNORE for label in self.labels)


@dataclass
class EncodedSet:
    examples: list[Example] = field(default_factory=list)
    truncated: int = 0  # cut to max_length, something learned left
    dropped_too_long: int = 0  # cut to max_length, nothing learned left
    truncated_where: list[str] = field(default_factory=list)  # the first few

    @property
    def learned_tokens(self) -> int:
        return sum(e.learned_tokens for e in self.examples)

    @property
    def tokens(self) -> int:
        return sum(len(e.input_ids) for e in self.examples)


def encode_all(
    tokenizer: ChatTokenizer,
    conversations: Sequence[Conversation],
    *,
    max_length: int,
    system_prompt: str = "",
) -> EncodedSet:
    """Every conversation as an example, cut to ``max_length`` tokens."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigurationError(
            "the base model's tokenizer has no chat template: chatbus trains (and serves) chat "
            "models only; pick a base model with a chat template"
        )
    encoded = EncodedSet()
    for conversation in conversations:
        ids, labels = encode_conversation(tokenizer, conversation, system_prompt=system_prompt)
        if len(ids) > max_length:
            ids, labels = ids[:max_length], labels[:max_length]
            if all(label == IGNORE for label in labels[1:]):  # the first label is never used
                encoded.dropped_too_long += 1
                continue
            encoded.truncated += 1
            if len(encoded.truncated_where) < 5:
                encoded.truncated_where.append(conversation.where)
        encoded.examples.append(Example(ids, labels, conversation.where))
    return encoded


def encode_conversation(
    tokenizer: ChatTokenizer, conversation: Conversation, *, system_prompt: str = ""
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one conversation, labels ``IGNORE`` except on learned turns."""
    turns = list(conversation.turns)
    last = max(i for i, t in enumerate(turns) if t.learn)
    messages = [t.as_message() for t in turns[: last + 1]]
    learn = [t.learn for t in turns[: last + 1]]
    if system_prompt and not any(m["role"] == "system" for m in messages):
        messages = with_default_system(messages, system_prompt)
        learn = [False, *learn]
    ids: list[int] = []
    labels: list[int] = []
    for text, learned in _pieces(tokenizer, messages, learn, conversation.where):
        piece = list(tokenizer.encode(text, add_special_tokens=False)) if text else []
        ids.extend(piece)
        labels.extend(piece if learned else [IGNORE] * len(piece))
    return ids, labels


def _pieces(
    tokenizer: ChatTokenizer, messages: list[dict[str, str]], learn: list[bool], where: str
) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, learned)`` pieces, in order."""
    full = _render(tokenizer, messages, where, generation_prompt=False)
    pieces: list[tuple[str, bool]] = []
    done = 0  # characters of ``full`` already in pieces
    for i, learned in enumerate(learn):
        if not learned:
            continue
        prompt = _render(tokenizer, messages[:i], where, generation_prompt=True) if i else ""
        through = _render(tokenizer, messages[: i + 1], where, generation_prompt=False)
        if not (full.startswith(through) and through.startswith(prompt) and len(prompt) >= done):
            raise ConfigurationError(
                f"{where}: the base model's chat template does not render this conversation as "
                "its turns one after another (an earlier turn renders differently once a later "
                "one follows), so chatbus cannot tell the assistant's tokens apart; pick a base "
                "model with a plain chat template"
            )
        answer = through[len(prompt) :]
        kept = answer.rstrip()  # the newline after the end-of-turn token is not generated
        pieces += [(full[done : len(prompt)], False), (kept, True), (answer[len(kept) :], False)]
        done = len(through)
    return [p for p in pieces if p[0]]


def _render(
    tokenizer: ChatTokenizer, messages: list[dict[str, str]], where: str, *, generation_prompt: bool
) -> str:
    if not messages:
        return ""
    try:
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    except Exception as exc:  # jinja's raise_exception: roles out of order, say
        raise TrainingDataError(
            f"{where}: the base model's chat template refuses this conversation: {exc}"
        ) from exc
    if not isinstance(text, str):
        raise ConfigurationError(f"the chat template rendered {type(text).__name__}, not text")
    return text
