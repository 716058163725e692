"""The engine interface in front of torch/transformers.

The worker depends only on this: it hands the engine token ids and reads token events back as an
async iterator. Implementations run model compute off the asyncio thread and must be safe to drive
from one event loop with many requests in flight at once.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Self

from chatbus.errors import ChatbusError

EngineFinishReason = Literal["stop", "length", "cancelled", "error"]


class EngineError(ChatbusError):
    """The engine could not run a request (bad input, model failure)."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One sequence to generate. ``prompt_ids`` already has the chat template applied."""

    request_id: str
    prompt_ids: Sequence[int]
    max_new_tokens: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    seed: int | None = None
    # A stream its client is already reading, taken over from another worker (its prompt ends
    # with what was streamed): engines that schedule prefill put it ahead of requests still
    # waiting for their first token, since its client sees a stall and theirs only a wait.
    resumed: bool = False


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """New tokens of one request since its previous event; the last event has ``finished``."""

    request_id: str
    token_ids: list[int] = field(default_factory=list)
    finished: bool = False
    finish_reason: EngineFinishReason | None = None
    error: str | None = None


class InferenceEngine(abc.ABC):
    """A model that serves many concurrent generations (continuous batching where it can)."""

    model_name: str
    max_context: int
    eos_token_ids: frozenset[int]

    @abc.abstractmethod
    async def start(self) -> None:
        """Load the model and warm it; idempotent."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop generation threads and free the model; idempotent."""

    @abc.abstractmethod
    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Token ids of ``messages`` rendered with the model's chat template, ready to generate."""

    @abc.abstractmethod
    def decode(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` (special tokens skipped)."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        """Stream the tokens of ``request``; ends with one event whose ``finished`` is true."""

    @abc.abstractmethod
    async def cancel(self, request_id: str) -> None:
        """Stop ``request_id`` at the next decode step; its stream ends with ``cancelled``."""

    def set_threads(self, threads: int) -> bool:
        """Decode on ``threads`` CPU threads from the next step on (any thread may call it).
        False: this engine's thread count is fixed once loaded (a GPU engine's is moot)."""
        return False

    def wait_for_threads(self, timeout: float) -> bool:
        """Block (any thread but the event loop's) up to ``timeout`` s until the threads last
        set are the ones decoding (the step under way when they were set has ended). True:
        they are, or this engine applies them before its next step anyway."""
        return True

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
