"""A scripted :class:`ChatBackend` for the serving layer's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from chatbus.tracing import RequestTrace
from producers.gateway.backend import ChatBackend
from producers.gateway.responses.store import ResponseStore, StoredResponse
from producers.gateway.resume import StreamDirectory, StreamOrigin
from producers.replay import ReplyPosition
from producers.sdk import ChatError
from schemas.events import ChatMessage, SamplingParams, TokenChunk


class ScriptedBackend(ChatBackend):
    """Answers every request with the scripted chunks (``error`` raises ChatError there); each
    chunk after the first waits for ``gate``. Subclasses see each request in :meth:`accepted`."""

    def __init__(self, script: list[dict[str, Any]]) -> None:
        self.script = script
        self.sent: list[tuple[list[ChatMessage], SamplingParams, str]] = []
        self.cancelled: list[str] = []
        self.replayed: list[tuple[ReplyPosition, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def accepted(self, request_id: str, trace: RequestTrace | None) -> None:
        """Called with each request sent, before ``send`` returns its id."""

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
        self.sent.append((list(messages), sampling, user_id))
        request_id = f"req-{len(self.sent):032x}"
        self.accepted(request_id, trace)
        return request_id

    def position(self, request_id: str) -> ReplyPosition | None:
        return ReplyPosition(partition=0, offset=int(request_id.removeprefix("req-"), 16))

    def replay(self, position: ReplyPosition, request_id: str) -> AsyncIterator[TokenChunk]:
        self.replayed.append((position, request_id))
        return self.chunks(request_id)

    async def chunks(self, request_id: str) -> AsyncIterator[TokenChunk]:
        for seq, fields in enumerate(self.script):
            if seq > 0:
                await self.gate.wait()
            chunk = TokenChunk(request_id=request_id, conversation_id="conv-1", seq=seq, **fields)
            if chunk.error is not None:
                raise ChatError(chunk.error)
            yield chunk

    async def cancel(self, request_id: str) -> None:
        self.cancelled.append(request_id)


class MemoryResponseStore(ResponseStore):
    """Stored responses in a dict, scoped by user like the MongoDB store."""

    def __init__(self) -> None:
        self.saved: dict[str, StoredResponse] = {}

    async def save(self, stored: StoredResponse) -> None:
        self.saved[stored.response.id] = stored

    async def get(self, user_id: str, response_id: str) -> StoredResponse | None:
        stored = self.saved.get(response_id)
        return stored if stored is not None and stored.user_id == user_id else None

    async def delete(self, user_id: str, response_id: str) -> bool:
        if await self.get(user_id, response_id) is None:
            return False
        del self.saved[response_id]
        return True


class MemoryStreamDirectory(StreamDirectory):
    """Stream origins and follow marks in dicts; a mark lives until :meth:`expire_marks`; a
    gateway is alive while its owner name is in ``live_owners``."""

    def __init__(self) -> None:
        self.origins: dict[str, StreamOrigin] = {}
        self.marks: dict[str, float] = {}
        self.live_owners: set[str] = set()  # gateways still running

    async def record(self, origin: StreamOrigin) -> None:
        self.origins[origin.request_id] = origin

    async def find(self, request_id: str) -> StreamOrigin | None:
        return self.origins.get(request_id)

    async def mark_followed(self, request_id: str, for_s: float) -> None:
        self.marks[request_id] = for_s

    async def followed(self, request_id: str) -> bool:
        return request_id in self.marks

    def expire_marks(self) -> None:
        self.marks.clear()

    async def owner_alive(self, origin: StreamOrigin) -> bool:
        return origin.owner in self.live_owners
