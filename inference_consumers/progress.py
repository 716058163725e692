"""Which requests a worker of the group has already started or finished (kept in Redis).

At pickup a worker records ``since_ms`` (the request's publish time) with one atomic
``SET NX GET``; the answer says whether this request is new, was started by a member that died or
handed it over (resume it), or is already done (skip it). The tokens themselves are not stored
here: what the client received is on the reply partition, and :mod:`resume` reads it from there.
If Redis is down the worker keeps serving; a redelivered request then restarts, and the client's
``(request_id, seq)`` dedupe hides the repeat.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from redis.exceptions import RedisError

from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.stores import redis_client

log = get_logger(__name__)

ProgressKind = Literal["new", "started", "done"]


@dataclass(frozen=True, slots=True)
class Progress:
    kind: ProgressKind
    since_ms: int = 0


class ProgressStore:
    """Start/done markers per request, shared by every worker of the group."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._redis = redis_client(settings)
        self._prefix = f"{settings.kafka.topic_prefix}chatbus:progress:"

    async def stop(self) -> None:
        await self._redis.aclose()

    async def begin(self, request_id: str, since_ms: int) -> Progress:
        """Claim ``request_id``; says what earlier workers did with it."""
        value = json.dumps({"since_ms": since_ms, "done": False})
        try:
            old = await self._redis.set(
                self._prefix + request_id,
                value,
                nx=True,
                get=True,
                ex=self._settings.worker.progress_ttl_s,
            )
        except RedisError as exc:
            log.warning("progress_store_unavailable", error=repr(exc), request_id=request_id)
            return Progress("new")
        if old is None:
            return Progress("new")
        earlier = json.loads(old)  # type: ignore[arg-type]
        if earlier.get("done"):
            return Progress("done")
        return Progress("started", int(earlier.get("since_ms", since_ms)))

    async def done(self, request_id: str) -> None:
        try:
            await self._redis.set(
                self._prefix + request_id,
                json.dumps({"done": True}),
                ex=self._settings.worker.progress_ttl_s,
            )
        except RedisError as exc:
            log.warning("progress_store_unavailable", error=repr(exc), request_id=request_id)
