"""Streams that survive a reconnect: where each answer begins on the bus, and who follows it.

When an answer's first chunk arrives, the gateway records its :class:`StreamOrigin` (its reply
partition and first offset, its user, and what its events are built from) in Redis, so that any
gateway, this one after a restart included, can replay its chunks from the bus
(:func:`~producers.replay.replay_chunks`) and rebuild the same events, numbered the same way.

A client that goes away does not end its answer at once: a reload, a dropped connection or a
gateway that dies should be able to pick it up. Whoever follows an answer (a stream, a resumed
stream, a background response) marks it followed in Redis at least every third of
``CHATBUS_GATEWAY_RESUME_GRACE_S``, for that long; an answer its client left is cancelled on the
bus only when nobody followed it for the whole grace period after the client left. A grace of 0
cancels at once, as before resuming existed.
"""

from __future__ import annotations

import abc
import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

from chatbus.errors import ChatbusError
from chatbus.logging import get_logger
from chatbus.stores import redis_errors
from producers.replay import ReplyPosition
from schemas.events import TokenChunk

log = get_logger(__name__)

Cancel = Callable[[str], Awaitable[None]]
OnCancelled = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class StreamOrigin:
    """What it takes to rebuild an answer's stream elsewhere."""

    request_id: str
    user_id: str
    position: ReplyPosition
    model: str
    created: int
    prompt_tokens: int
    include_usage: bool = False
    owner: str = ""  # the gateway that follows it (its reply-lease owner)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> StreamOrigin:
        data = json.loads(raw)
        data["position"] = ReplyPosition(**data["position"])
        return cls(**data)


class StreamDirectory(abc.ABC):
    """Where answers begin, and whether someone follows them now."""

    @abc.abstractmethod
    async def record(self, origin: StreamOrigin) -> None:
        """Remember ``origin`` (for as long as the chunks are worth replaying)."""

    @abc.abstractmethod
    async def find(self, request_id: str) -> StreamOrigin | None:
        """The origin of ``request_id``, or None (unknown, or forgotten)."""

    @abc.abstractmethod
    async def mark_followed(self, request_id: str, for_s: float) -> None:
        """Someone follows ``request_id``: say so for ``for_s`` seconds."""

    @abc.abstractmethod
    async def followed(self, request_id: str) -> bool:
        """Whether a mark of :meth:`mark_followed` is still alive."""

    async def owner_alive(self, origin: StreamOrigin) -> bool:
        """Whether the gateway that began ``origin`` still runs (True when unknown)."""
        return True


class RedisStreamDirectory(StreamDirectory):
    """The directory in Redis: one key per answer (``EX ttl``), one per follow mark (``PX``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        ttl_s: int,
        lease_key: Callable[[int], str] | None = None,
    ) -> None:
        self._redis = redis
        self._prefix = f"chatbus:{prefix}stream"
        self._ttl_s = ttl_s
        self._lease_key = lease_key  # the reply-lease key of a partition: who holds it

    async def record(self, origin: StreamOrigin) -> None:
        with redis_errors("record where a stream begins"):
            await self._redis.set(
                f"{self._prefix}:{origin.request_id}", origin.to_json(), ex=self._ttl_s
            )

    async def find(self, request_id: str) -> StreamOrigin | None:
        with redis_errors("find where a stream begins"):
            raw = await self._redis.get(f"{self._prefix}:{request_id}")
        return None if raw is None else StreamOrigin.from_json(raw)

    async def mark_followed(self, request_id: str, for_s: float) -> None:
        with redis_errors("mark a stream followed"):
            await self._redis.set(
                f"{self._prefix}-followed:{request_id}", "1", px=max(1, int(for_s * 1000))
            )

    async def followed(self, request_id: str) -> bool:
        with redis_errors("ask whether a stream is followed"):
            return bool(await self._redis.exists(f"{self._prefix}-followed:{request_id}"))

    async def owner_alive(self, origin: StreamOrigin) -> bool:
        """The owner still holds the lease on the stream's reply partition: it runs."""
        if not origin.owner or self._lease_key is None:
            return True
        with redis_errors("ask whether a gateway runs"):
            holder = await self._redis.get(self._lease_key(origin.position.partition))
        if isinstance(holder, bytes):
            holder = holder.decode()
        return holder == origin.owner


class StreamKeeper:
    """Keeps answers resumable for the serving layer: records their origins, marks the ones it
    follows, and cancels an abandoned one only when nobody took it up within the grace period.

    Redis trouble never fails an answer: a record or a mark that cannot be written is logged
    (that answer may not resume), and an abandoned answer whose followers cannot be asked about
    is cancelled (a worker slot is not held for nobody).
    """

    def __init__(
        self,
        directory: StreamDirectory,
        *,
        grace_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.directory = directory
        self.grace_s = grace_s
        self._every_s = max(grace_s / 3, 0.05)
        self._clock = clock
        self._sleep = sleep

    async def record(self, origin: StreamOrigin) -> None:
        try:
            await self.directory.record(origin)
        except ChatbusError as exc:
            log.warning("stream_origin_not_recorded", request_id=origin.request_id, error=str(exc))

    async def find(self, user_id: str, request_id: str) -> StreamOrigin | None:
        """The user's answer ``request_id``; None when unknown or someone else's."""
        origin = await self.directory.find(request_id)
        return origin if origin is not None and origin.user_id == user_id else None

    async def follow(
        self, request_id: str, chunks: AsyncIterator[TokenChunk]
    ) -> AsyncIterator[TokenChunk]:
        """``chunks`` as they come, marking ``request_id`` followed while they do."""
        marked = float("-inf")
        async for chunk in chunks:
            now = self._clock()
            if self.grace_s > 0 and now - marked >= self._every_s:
                marked = now
                await self._mark(request_id)
            yield chunk

    async def _mark(self, request_id: str) -> None:
        try:
            await self.directory.mark_followed(request_id, self.grace_s)
        except ChatbusError as exc:
            log.warning("stream_mark_failed", request_id=request_id, error=str(exc))

    async def abandon(self, request_id: str, cancel: Cancel, on_cancelled: OnCancelled) -> None:
        """The client of ``request_id`` left: cancel it, unless someone follows it within the
        grace period (a resumed stream marks it). Our own last mark is at most ``grace_s`` old
        then, so a mark alive after ``grace_s`` is someone else's."""
        if self.grace_s > 0:
            await self._sleep(self.grace_s + min(0.25, self.grace_s / 4))
            try:
                if await self.directory.followed(request_id):
                    log.info("abandoned_stream_resumed", request_id=request_id)
                    return
            except ChatbusError as exc:
                log.warning("stream_followers_unknown", request_id=request_id, error=str(exc))
        await cancel(request_id)
        await on_cancelled()
