"""The ceiling: the worker's own engine driven in-process, with no bus in between."""

from __future__ import annotations

import itertools
import os
import time

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.stats import StreamTrace
from benchmarks.inference.workload import Messages
from inference_consumers.engine import GenerationRequest, InferenceEngine
from inference_consumers.serve import build_engine


class CeilingSystem:
    """``serve.build_engine`` (what ``chatbus worker`` runs), called directly."""

    name = "ceiling"

    def __init__(self, config: ServingConfig) -> None:
        self._config = config
        self._engine: InferenceEngine | None = None
        self._ids = itertools.count()

    async def __aenter__(self) -> CeilingSystem:
        engine = build_engine(self._config.settings)
        await engine.start()
        self._engine = engine
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            await engine.stop()

    def processes(self) -> dict[str, int]:
        return {"bench (engine in-process)": os.getpid()}

    async def stream(self, messages: Messages, max_new_tokens: int) -> StreamTrace:
        engine = self._engine
        if engine is None:
            raise BenchError("the ceiling engine is not started")
        trace = StreamTrace(sent_at=time.perf_counter())
        # Tokenizing is part of the request's cost, as it is in the worker and the peer.
        prompt = engine.encode_chat(messages)
        request = GenerationRequest(
            f"ceiling-{next(self._ids)}",
            prompt,
            max_new_tokens,
            temperature=self._config.temperature,
            top_p=self._config.top_p,
        )
        async for event in engine.generate(request):
            now = time.perf_counter()
            trace.add(now, len(event.token_ids))
            if event.finished:
                if event.error:
                    raise BenchError(f"the ceiling engine failed a request: {event.error}")
                trace.finish(now, event.finish_reason)
        return trace
