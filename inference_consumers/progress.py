"""Which requests a worker of the group has started or finished, and who serves each one now
(kept in Redis).

At pickup a worker records ``since_ms`` (the request's publish time) with one atomic
``SET NX GET``; the answer says whether this request is new, was started by a member that died or
handed it over (resume it), or is already done (skip it). The tokens themselves are not stored
here: what the client received is on the reply partition, and :mod:`resume` reads it from there.

**Leases.** The worker that serves a request holds a lease on it (``…:lease:<request_id>``, its
worker id, expiring after ``lease_ms``) and renews it while it streams. When a rebalance moves a
partition to another member, the old owner keeps serving the streams it has under a live lease —
their caches are warm — and the new owner only watches them: it resumes one once its lease is
gone (its worker died, or handed it over and released it) and counts it done when it is done. A
worker publishes on a moved partition only until its lease's own deadline (the time it *sent*
the last renewal that succeeded, plus ``lease_ms``), which comes before Redis lets the lease
expire, so two workers never publish the same stream at once.

If Redis is down the worker keeps serving: a redelivered request then restarts, and the client's
``(request_id, seq)`` dedupe hides the repeat; a stream on a moved partition whose lease cannot be
renewed stops at its deadline and is handed over.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from redis.exceptions import RedisError

from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.stores import redis_client

log = get_logger(__name__)

ProgressKind = Literal["new", "started", "leased", "done"]
LeaseState = Literal["held", "free", "done", "unknown"]  # unknown: Redis did not answer

# Take the lease when it is free or already ours; else answer its owner.
_TAKE = """
local owner = redis.call('GET', KEYS[1])
if (not owner) or owner == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
return owner
"""
# Release the lease only if it is ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


@dataclass(frozen=True, slots=True)
class Progress:
    """``new``/``started``: this worker now holds the lease (``started``: resume it);
    ``leased``: ``owner`` serves it under a live lease; ``done``: answered already."""

    kind: ProgressKind
    since_ms: int = 0
    owner: str = ""


class ProgressStore:
    """Start/done markers and serving leases per request, shared by every worker of the group."""

    def __init__(self, settings: Settings, worker_id: str, *, lease_ms: int = 2_000) -> None:
        self._settings = settings
        self._redis = redis_client(settings)
        self._prefix = f"{settings.kafka.topic_prefix}chatbus:progress:"
        self._me = worker_id
        self.lease_ms = lease_ms
        self._take = self._redis.register_script(_TAKE)
        self._release = self._redis.register_script(_RELEASE)
        self._failed_renewals = 0  # renewals in a row Redis did not answer

    async def stop(self) -> None:
        await self._redis.aclose()

    def _lease_key(self, request_id: str) -> str:
        return f"{self._prefix}lease:{request_id}"

    async def begin(self, request_id: str, since_ms: int) -> Progress:
        """Claim ``request_id`` and its lease; says what earlier workers did with it."""
        value = json.dumps({"since_ms": since_ms, "done": False})
        try:
            old = await self._redis.set(
                self._prefix + request_id,
                value,
                nx=True,
                get=True,
                ex=self._settings.worker.progress_ttl_s,
            )
            earlier = None if old is None else json.loads(old)  # type: ignore[arg-type]
            if earlier is not None and earlier.get("done"):
                return Progress("done")
            owner = await self._take_lease(request_id)
        except RedisError as exc:
            log.warning("progress_store_unavailable", error=repr(exc), request_id=request_id)
            return Progress("new")
        if earlier is None:
            return Progress("new")
        earlier_since = int(earlier.get("since_ms", since_ms))
        if owner:
            return Progress("leased", earlier_since, owner)
        return Progress("started", earlier_since)

    async def _take_lease(self, request_id: str) -> str:
        owner = await self._take(keys=[self._lease_key(request_id)], args=[self._me, self.lease_ms])
        return owner.decode() if isinstance(owner, bytes) else ""

    async def take(self, request_id: str) -> str | None:
        """Take the lease of ``request_id`` (free or ours already): "" when taken, else its
        owner; None when Redis does not answer."""
        try:
            return await self._take_lease(request_id)
        except RedisError as exc:
            log.warning("progress_store_unavailable", error=repr(exc), request_id=request_id)
            return None

    async def renew(self, request_ids: Iterable[str]) -> set[str] | None:
        """Renew the leases of ``request_ids`` in one round trip: those another worker holds
        now (lost); None when Redis does not answer (none is renewed)."""
        ids = list(request_ids)
        if not ids:
            return set()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for request_id in ids:
                    await self._take(
                        keys=[self._lease_key(request_id)],
                        args=[self._me, self.lease_ms],
                        client=pipe,
                    )
                owners = await pipe.execute()
        except RedisError as exc:
            self._failed_renewals += 1
            if self._failed_renewals == 1:  # once per outage, not four times a second
                log.warning("lease_renewal_failing", error=repr(exc), leases=len(ids))
            return None
        if self._failed_renewals:
            log.info("lease_renewal_recovered", failed_renewals=self._failed_renewals)
            self._failed_renewals = 0
        return {request_id for request_id, owner in zip(ids, owners, strict=True) if owner}

    async def lease_state(self, request_id: str) -> LeaseState:
        """Whether ``request_id`` is done, served under a live lease, or free to resume."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.get(self._prefix + request_id)
                pipe.exists(self._lease_key(request_id))
                progress, leased = await pipe.execute()
        except RedisError as exc:
            log.warning("progress_store_unavailable", error=repr(exc), request_id=request_id)
            return "unknown"
        if progress is not None and json.loads(progress).get("done"):
            return "done"
        return "held" if leased else "free"

    async def release(self, request_id: str) -> None:
        """Give up the lease (handed over): the next owner resumes at once, not at its expiry."""
        try:
            await self._release(keys=[self._lease_key(request_id)], args=[self._me])
        except RedisError as exc:
            log.warning("progress_store_unavailable", error=repr(exc), request_id=request_id)

    async def done(self, request_id: str) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(
                    self._prefix + request_id,
                    json.dumps({"done": True}),
                    ex=self._settings.worker.progress_ttl_s,
                )
                await self._release(
                    keys=[self._lease_key(request_id)], args=[self._me], client=pipe
                )
                await pipe.execute()
        except RedisError as exc:
            log.warning("progress_store_unavailable", error=repr(exc), request_id=request_id)
