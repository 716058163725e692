"""What the serving layer needs from the rest of chatbus, as interfaces, and the bus-backed ones.

:class:`ChatBackend` puts a request on the bus and yields its chunks; :class:`PromptCounter`
counts a prompt's tokens (for ``usage`` and the tokens-per-minute limit). Unit tests drive the
serving layer with fakes of both; the gateway uses :class:`BusChatBackend` (one
:class:`~producers.sdk.ChatClient` multiplexing every request of the process) and
:class:`TokenizerPromptCounter` (the served model's own tokenizer and chat template).
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from chatbus.chat_tokenizer import load_chat_tokenizer
from chatbus.errors import ConfigurationError
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.tracing import RequestTrace
from producers.replay import ReplyPosition, replay_chunks
from producers.sdk import ChatClient
from schemas.events import ChatMessage, SamplingParams, TokenChunk

log = get_logger(__name__)


class ChatBackend(abc.ABC):
    """Sends chat requests and streams their chunks back."""

    @abc.abstractmethod
    async def send(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        sampling: SamplingParams,
        user_id: str,
        conversation_id: str | None = None,
        use_history: bool = False,
        trace: RequestTrace | None = None,
        key_id: str = "",
    ) -> str:
        """Publish a request; returns its request_id (its chunks are collected from now on).

        ``trace`` (begun when the HTTP request arrived) travels with the request in its Kafka
        headers; the serving layer passes it only when it traces.
        """

    @abc.abstractmethod
    def chunks(self, request_id: str) -> AsyncIterator[TokenChunk]:
        """The request's chunks in order; raises ``ChatError`` when the worker refuses it."""

    @abc.abstractmethod
    async def cancel(self, request_id: str) -> None:
        """Stop the request wherever it runs (frees the worker's slot)."""

    def trace(self, request_id: str) -> RequestTrace | None:
        """The trace of a recent request, when this backend keeps one."""
        return None

    def position(self, request_id: str) -> ReplyPosition | None:
        """Where the chunks of ``request_id`` (being read now) begin on the bus, once known."""
        return None

    def replay(self, position: ReplyPosition, request_id: str) -> AsyncIterator[TokenChunk]:
        """The chunks of ``request_id`` again from ``position``, then live, up to the last."""
        raise NotImplementedError("this backend cannot replay streams")


class PromptCounter(abc.ABC):
    @abc.abstractmethod
    async def count(self, messages: Sequence[ChatMessage]) -> int:
        """Tokens of ``messages`` rendered with the model's chat template."""


class BusChatBackend(ChatBackend):
    """Requests over Kafka through the gateway's one :class:`ChatClient`."""

    def __init__(self, client: ChatClient, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def send(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        sampling: SamplingParams,
        user_id: str,
        conversation_id: str | None = None,
        use_history: bool = False,
        trace: RequestTrace | None = None,
        key_id: str = "",
    ) -> str:
        request = await self._client.send(
            list(messages),
            model=model,
            sampling=sampling,
            user_id=user_id,
            conversation_id=conversation_id,
            use_history=use_history,
            trace=trace,
            key_id=key_id,
        )
        return request.request_id

    def trace(self, request_id: str) -> RequestTrace | None:
        return self._client.trace(request_id)

    def chunks(self, request_id: str) -> AsyncIterator[TokenChunk]:
        return self._client.chunks(request_id)

    def position(self, request_id: str) -> ReplyPosition | None:
        return self._client.position(request_id)

    def replay(self, position: ReplyPosition, request_id: str) -> AsyncIterator[TokenChunk]:
        return replay_chunks(self._settings, position, request_id)

    async def cancel(self, request_id: str) -> None:
        await self._client.cancel(request_id, reason="client_disconnected")


class TokenizerPromptCounter(PromptCounter):
    """Counts with the served model's tokenizer (loaded off the event loop)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer

    @classmethod
    async def load(cls, model_path: Path) -> TokenizerPromptCounter:
        if not (model_path / "tokenizer_config.json").exists():
            raise ConfigurationError(
                f"no tokenizer at {model_path}: build the demo model with `make model`, or set "
                "CHATBUS_MODEL_PATH to the served model's folder (the gateway counts prompt "
                "tokens with it)"
            )
        return cls(await asyncio.to_thread(_load_tokenizer, model_path))

    async def count(self, messages: Sequence[ChatMessage]) -> int:
        return await asyncio.to_thread(self._count, [m.model_dump() for m in messages])

    def _count(self, messages: list[dict[str, str]]) -> int:
        try:
            ids = self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
        except Exception as exc:  # noqa: BLE001 - the worker reports why; we only estimate
            log.warning("prompt_count_failed", error=repr(exc))
            return sum(len(m["content"]) for m in messages) // 4 + 1
        return len(ids)


def _load_tokenizer(model_path: Path) -> Any:
    return load_chat_tokenizer(model_path)
