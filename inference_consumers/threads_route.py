"""``POST /engine/threads`` on the worker's ops port: how many CPU threads the engine decodes on.

Several workers on one machine each running one thread per core make the cores' threads wait for
each other at every layer (llama.cpp's threads meet at a barrier, torch's OpenMP threads as well;
a core taken by another process stalls them all). The local supervisor gives each worker its share
of the cores when it starts it, and when the number of workers changes it resizes the running ones
through this route, without a restart: ``{"threads": 1}`` → 200 ``{"threads": 1, "applied":
true}`` once the engine decodes on them (the step under way ends first; ``applied`` is false when
that took longer than :data:`APPLY_WAIT_S`); a body that is not that → 400; an engine whose
threads are fixed (one on a GPU) → 409. The supervisor shrinks the running workers this way
*before* it starts another one: a step still running on a thread per core while a newcomer boots
beside it waits at every layer for the thread the newcomer preempted (measured: 2 to 3 s stalls).
"""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chatbus.health import PostHandler
from inference_consumers.engine import InferenceEngine

PATH = "/engine/threads"
APPLY_WAIT_S = 0.75  # the longest a step runs on this machine's two cores, with room


class ThreadsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int = Field(ge=1, le=1024)


def _reply(status: int, body: dict[str, object]) -> tuple[int, bytes]:
    return status, json.dumps(body).encode()


def threads_handler(engine: InferenceEngine) -> PostHandler:
    def handle(body: bytes) -> tuple[int, bytes]:
        try:
            wanted = ThreadsRequest.model_validate_json(body)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"]) or "body"
            return _reply(
                400,
                {
                    "error": {
                        "message": f'expected {{"threads": N}}, N >= 1: {where}: {error["msg"]}'
                    }
                },
            )
        if not engine.set_threads(wanted.threads):
            return _reply(
                409,
                {
                    "error": {
                        "message": f"the {type(engine).__name__} decodes on a fixed "
                        "number of threads; restart the worker with CHATBUS_ENGINE_THREADS"
                    }
                },
            )
        applied = engine.wait_for_threads(APPLY_WAIT_S)
        return _reply(200, {"threads": wanted.threads, "applied": applied})

    return handle
