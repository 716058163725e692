"""Per-key requests and tokens per minute, in Redis (a fixed one-minute window).

Requests count on admission. Tokens are *reserved* on admission — the prompt's tokens plus the
request's ``max_tokens`` (or the default) — and *settled* when the answer ends: the reservation
is replaced by the actual prompt + completion tokens, so the window ends up holding real usage
while a burst of long requests cannot overshoot it. Each window's counters expire on their own.
Every admitted (or refused) request gets OpenAI's ``x-ratelimit-*`` headers.

Redis out of reach does not stop the chat: each gateway counts the same windows in its own
memory meanwhile (:class:`LocalWindows`; with N gateways a key may get up to N times its limit
for that while), logs it once a window and counts
``chatbus_gateway_store_fallbacks_total{store="redis"}``. After a failure it leaves Redis alone
for :data:`RETRY_REDIS_S` (no request pays the client's retries and timeouts twice), then
tries it again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import redis.asyncio as aioredis

from chatbus.errors import ServiceUnavailable
from chatbus.logging import get_logger
from chatbus.stores import redis_errors
from producers.gateway.metrics import FALLBACKS

log = get_logger(__name__)

WINDOW_S = 60
RETRY_REDIS_S = 5.0  # after Redis failed, how long the limits stay in memory before trying it

# KEYS[1]: counter; ARGV[1]: amount, ARGV[2]: limit, ARGV[3]: ttl seconds.
# Adds the amount unless that would pass the limit; returns {allowed, used}.
_ADMIT = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if used + amount > tonumber(ARGV[2]) then return {0, used} end
used = redis.call('INCRBY', KEYS[1], amount)
if used == amount then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
return {1, used}
"""

# Correct a reservation in its own window, if that window still exists.
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return 0
"""

Kind = Literal["requests", "tokens"]


@dataclass(frozen=True)
class Quota:
    """Where one counter stands after a decision."""

    kind: Kind
    limit: int
    used: int
    reset_s: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    def headers(self) -> dict[str, str]:
        return {
            f"x-ratelimit-limit-{self.kind}": str(self.limit),
            f"x-ratelimit-remaining-{self.kind}": str(self.remaining),
            f"x-ratelimit-reset-{self.kind}": f"{max(self.reset_s, 0.001):.3f}s",
        }


@dataclass(frozen=True)
class Decision:
    allowed: bool
    quota: Quota
    window: int

    @property
    def retry_after_s(self) -> int:
        return max(1, math.ceil(self.quota.reset_s))


class _RedisSkipped(ServiceUnavailable):
    """Redis is not even asked: it failed less than :data:`RETRY_REDIS_S` ago."""


class LocalWindows:
    """The fixed-window counters in this process's memory: the limits while Redis is down."""

    def __init__(self) -> None:
        self._used: dict[str, tuple[int, int]] = {}  # key → (window, used)

    def admit(self, key: str, window: int, amount: int, limit: int) -> tuple[bool, int]:
        _, used = self._used.get(key, (window, 0))
        if used + amount > limit:
            return False, used
        self._used[key] = (window, used + amount)
        if len(self._used) > 10_000:  # forget windows that are over
            self._used = {k: v for k, v in self._used.items() if v[0] >= window}
        return True, used + amount

    def settle(self, key: str, delta: int) -> None:
        if key in self._used:
            window, used = self._used[key]
            self._used[key] = (window, used + delta)


class RateLimiter:
    """Fixed-window counters per API key, in Redis; in memory while Redis is out of reach."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str,
        requests_per_minute: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}chatbus:ratelimit:"
        self._limits: dict[Kind, int] = {
            "requests": requests_per_minute,
            "tokens": tokens_per_minute,
        }
        self._clock = clock
        self._admit: Any = redis.register_script(_ADMIT)
        self._settle: Any = redis.register_script(_SETTLE)
        self._local = LocalWindows()
        self._warned_window = -1
        self._skip_redis_until = float("-inf")

    def _key(self, key_id: str, kind: Kind, window: int) -> str:
        return f"{self._prefix}{key_id}:{kind}:{window}"

    async def admit(
        self, key_id: str, kind: Kind, amount: int, limit: int | None = None
    ) -> Decision:
        """Count ``amount`` against ``kind`` for this key, or refuse it past the limit (the
        key's own ``limit``, else the gateway's default)."""
        now = self._clock()
        window = int(now // WINDOW_S)
        reset = (window + 1) * WINDOW_S - now
        limit = limit or self._limits[kind]
        key = self._key(key_id, kind, window)
        try:
            self._redis_or_skip()
            with redis_errors("check rate limits"):
                allowed, used = await self._admit(keys=[key], args=[amount, limit, WINDOW_S * 2])
        except ServiceUnavailable as exc:
            self._fell_back(window, exc)
            allowed, used = self._local.admit(key, window, amount, limit)
        return Decision(bool(allowed), Quota(kind, limit, int(used), reset), window)

    def _redis_or_skip(self) -> None:
        if time.monotonic() < self._skip_redis_until:
            raise _RedisSkipped("Redis failed a moment ago; rate limits are in memory")

    def _fell_back(self, window: int, exc: ServiceUnavailable) -> None:
        FALLBACKS.labels("redis", "rate_limit").inc()
        if not isinstance(exc, _RedisSkipped):
            self._skip_redis_until = time.monotonic() + RETRY_REDIS_S
        if window != self._warned_window:  # once a window, not once a request
            self._warned_window = window
            log.warning("rate_limits_in_memory", error=str(exc))

    async def settle(self, key_id: str, window: int, reserved: int, actual: int) -> None:
        """Replace a token reservation made in ``window`` by the tokens actually used."""
        if actual == reserved:
            return
        key = self._key(key_id, "tokens", window)
        try:
            self._redis_or_skip()
            with redis_errors("settle token usage"):
                await self._settle(keys=[key], args=[actual - reserved])
        except ServiceUnavailable as exc:
            self._fell_back(window, exc)
            self._local.settle(key, actual - reserved)
