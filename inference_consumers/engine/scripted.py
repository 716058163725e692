"""An engine that answers every request with a fixed script: one byte per token per decode step.

For exercising the bus without a model: tests of the worker and the processors, and load on the
pipeline at a chosen token rate (``step_s`` paces each decode step like a model would).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from inference_consumers.engine.base import (
    EngineFinishReason,
    GenerationRequest,
    InferenceEngine,
    TokenEvent,
)


class ScriptedEngine(InferenceEngine):
    """Bytes are tokens; every answer is ``script`` (cut at ``max_new_tokens``)."""

    eos_token_ids = frozenset({0})

    def __init__(
        self,
        script: str,
        *,
        model_name: str = "scripted",
        max_context: int = 4096,
        step_s: float = 0.0,
    ) -> None:
        self.model_name = model_name
        self.max_context = max_context
        self._script = list(script.encode())
        self._step_s = step_s
        self.requests: list[GenerationRequest] = []
        self.cancelled: set[str] = set()
        self.generated = 0

    @property
    def script_tokens(self) -> int:
        return len(self._script)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def encode_chat(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return list("".join(m["content"] for m in messages).encode())

    def decode(self, token_ids: Sequence[int]) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        self.requests.append(request)
        emitted = 0
        for token in self._script[: request.max_new_tokens]:
            await asyncio.sleep(self._step_s)  # one decode step (0: just yield to the loop)
            if request.request_id in self.cancelled:
                yield TokenEvent(request.request_id, finished=True, finish_reason="cancelled")
                return
            emitted += 1
            self.generated += 1
            yield TokenEvent(request.request_id, [token])
        reason: EngineFinishReason = "length" if emitted == request.max_new_tokens else "stop"
        yield TokenEvent(request.request_id, finished=True, finish_reason=reason)

    async def cancel(self, request_id: str) -> None:
        self.cancelled.add(request_id)
