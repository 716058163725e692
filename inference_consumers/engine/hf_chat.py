"""What both engines share: the model folder's Hugging Face tokenizer (chat template in, text
out, the same ids the gateway's prompt counter sees), request checks, and the EOS ids."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

from inference_consumers.engine.base import EngineError, GenerationRequest, TokenEvent

__all__ = ["EngineState", "HuggingFaceChat", "eos_ids", "read_events", "room_for"]


class EngineState(enum.Enum):
    NEW = "new"
    STARTED = "started"
    STOPPED = "stopped"


class HuggingFaceChat:
    """``encode_chat``/``decode`` of :class:`InferenceEngine` over a loaded tokenizer."""

    _tokenizer: Any = None

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        tokenizer = self._require_tokenizer()
        try:
            ids = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except Exception as exc:  # jinja's raise_exception, a message without role/content
            raise EngineError(f"cannot apply the chat template: {exc}") from exc
        return [int(i) for i in ids]

    def decode(self, token_ids: Sequence[int]) -> str:
        return str(self._require_tokenizer().decode(list(token_ids), skip_special_tokens=True))

    def _require_tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise EngineError("engine not started: call start() first")
        return self._tokenizer


def room_for(request: GenerationRequest, max_context: int) -> int:
    """Tokens ``request`` may generate in a context of ``max_context``; raises
    :class:`EngineError` for an empty prompt, a bad ``max_new_tokens`` or no room at all."""
    if not request.prompt_ids:
        raise EngineError("prompt_ids is empty")
    if request.max_new_tokens < 1:
        raise EngineError(f"max_new_tokens must be at least 1, got {request.max_new_tokens}")
    room = max_context - len(request.prompt_ids)
    if room < 1:
        raise EngineError(
            f"prompt of {len(request.prompt_ids)} tokens leaves no room to generate in the "
            f"context of {max_context} tokens"
        )
    return room


def eos_ids(*sources: int | Iterable[int] | None) -> frozenset[int]:
    """Every non-negative id named by ``sources`` (an id, a list of ids, or None)."""
    ids: set[int] = set()
    for source in sources:
        if source is None:
            continue
        ids.update(int(i) for i in ([source] if isinstance(source, int) else source))
    return frozenset(i for i in ids if i >= 0)


async def read_events(
    queue: asyncio.Queue[TokenEvent], *, abandoned: Callable[[], None]
) -> AsyncIterator[TokenEvent]:
    """A request's events from its queue up to the finished one; ``abandoned`` runs when the
    consumer stops reading before that (it went away: the engine frees the slot)."""
    finished = False
    try:
        while not finished:
            event = await queue.get()
            finished = event.finished
            yield event
    finally:
        if not finished:
            abandoned()
