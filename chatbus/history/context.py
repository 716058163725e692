"""The per-conversation context cache in Redis, with MongoDB as the fallback.

One hash per conversation, ``<prefix>chatbus:ctx:<conversation_id>``: a field per turn
(``request_id`` → :class:`ContextTurn` JSON) and the field ``_complete`` once the hash holds every
turn the context needs (it was filled from MongoDB). Writes are ``HSET`` by request_id, so the
worker (which appends a turn the moment its answer ends) and the history processor (which
appends it again when it records the completion) agree without coordination. Every write
refreshes the TTL and trims the hash to the newest ``history_context_max_turns`` turns.

Reading: a hash with ``_complete`` answers alone; otherwise (cold, expired, or Redis down) the
context comes from MongoDB and, when Redis is up, warms the cache. Redis failures are logged and
never fail a chat: the answer just costs a MongoDB read.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from chatbus.history.repository import HistoryRepository
from chatbus.history.turns import ContextTurn, select_context
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.stores import CACHE_TIMEOUT_S, redis_client

log = get_logger(__name__)

COMPLETE = "_complete"


def context_key(settings: Settings, conversation_id: str) -> str:
    return f"{settings.kafka.topic_prefix}chatbus:ctx:{conversation_id}"


class ConversationContext(Protocol):
    """What a worker needs of the conversation context: the turns before a request, and its
    own finished turn added. :class:`ContextStore` is the Redis + MongoDB one."""

    async def load(
        self, conversation_id: str, *, exclude: str | None = None
    ) -> list[ContextTurn]: ...

    async def append(
        self, conversation_id: str, turn: ContextTurn, *, newest: bool = False
    ) -> None: ...


class ContextStore:
    """Conversation context for prompts: Redis first, MongoDB when Redis cannot answer."""

    def __init__(
        self,
        settings: Settings,
        repository: HistoryRepository,
        *,
        redis: aioredis.Redis | None = None,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._owns_redis = redis is None
        self._redis: aioredis.Redis = redis or redis_client(settings, timeout_s=CACHE_TIMEOUT_S)
        self.redis_failures = 0  # reads or writes that fell back (or were skipped)
        self.mongo_reads = 0  # contexts that came from MongoDB

    async def close(self) -> None:
        if self._owns_redis:
            await self._redis.aclose()

    def _key(self, conversation_id: str) -> str:
        return context_key(self._settings, conversation_id)

    def _select(self, turns: list[ContextTurn], exclude: str | None) -> list[ContextTurn]:
        return select_context(
            turns,
            max_turns=self._settings.history.context_max_turns,
            max_chars=self._settings.history.context_max_chars,
            exclude=exclude,
        )

    async def load(self, conversation_id: str, *, exclude: str | None = None) -> list[ContextTurn]:
        """The context of a new request in ``conversation_id`` (oldest turn first)."""
        cached, complete, reachable = await self._read_cache(conversation_id)
        if complete:
            return self._select(cached, exclude)
        self.mongo_reads += 1
        stored = await asyncio.to_thread(self._repository.context_turns, conversation_id)
        # turns cached but not yet recorded (the processor lags the worker) count too
        turns = list({t.request_id: t for t in [*stored, *cached]}.values())
        if reachable:
            await self._write(conversation_id, turns, complete=True)
        return self._select(turns, exclude)

    async def append(
        self, conversation_id: str, turn: ContextTurn, *, newest: bool = False
    ) -> None:
        """Add a finished turn (idempotent by request_id); never raises for Redis.

        ``newest``: the turn just ended (the worker says so, a processor catching up does not).
        The newest turn sent without ``use_history`` carried its whole transcript, so the cache
        then holds all the context there is: it is marked complete.
        """
        if turn.answered:
            await self._write(conversation_id, [turn], complete=newest and not turn.use_history)

    async def forget(self, *conversation_ids: str) -> None:
        """Drop cached context (conversation or user deleted); raises nothing for Redis."""
        if not conversation_ids:
            return
        try:
            await self._redis.delete(*(self._key(c) for c in conversation_ids))
        except RedisError as exc:
            self._redis_failed("forget", exc)

    async def _read_cache(self, conversation_id: str) -> tuple[list[ContextTurn], bool, bool]:
        """The cached turns, whether they are all the context, whether Redis answered."""
        try:
            raw: dict[Any, Any] = await self._redis.hgetall(  # type: ignore[misc]
                self._key(conversation_id)
            )
        except RedisError as exc:
            self._redis_failed("read", exc)
            return [], False, False
        turns = []
        for name, value in raw.items():
            if name == COMPLETE.encode():
                continue
            try:
                turns.append(ContextTurn.from_json(value))
            except (ValueError, KeyError, TypeError):
                log.warning("context_entry_unreadable", conversation_id=conversation_id)
                return [], False, True
        return turns, COMPLETE.encode() in raw, True

    async def _write(
        self, conversation_id: str, turns: list[ContextTurn], *, complete: bool
    ) -> None:
        key = self._key(conversation_id)
        mapping: dict[Any, Any] = {t.request_id: t.to_json() for t in turns}
        if complete:
            mapping[COMPLETE] = "1"
        if not mapping:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)
                pipe.expire(key, self._settings.history.context_ttl_s)
                pipe.hlen(key)
                results = await pipe.execute()
            if int(results[-1]) > self._settings.history.context_max_turns + 1:
                await self._trim(key)
        except RedisError as exc:
            self._redis_failed("write", exc)

    async def _trim(self, key: str) -> None:
        raw: dict[Any, Any] = await self._redis.hgetall(key)  # type: ignore[misc]
        turns = sorted(
            (ContextTurn.from_json(v) for k, v in raw.items() if k != COMPLETE.encode()),
            key=lambda t: t.created_at,
        )
        old = [t.request_id for t in turns[: -self._settings.history.context_max_turns]]
        if old:
            await self._redis.hdel(key, *old)  # type: ignore[misc]

    def _redis_failed(self, what: str, exc: RedisError) -> None:
        self.redis_failures += 1
        log.warning(
            "context_cache_unavailable", action=what, error=f"{exc.__class__.__name__}: {exc}"
        )
