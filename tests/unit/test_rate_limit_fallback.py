"""Rate limits while Redis is out of reach: counted in the gateway's memory, still enforced.

A real redis-py client pointed at a port nobody listens on: every call fails the way an outage
does (connection refused), with nothing faked.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from chatbus.ports import free_port
from producers.gateway.metrics import FALLBACKS
from producers.gateway.rate_limit import RateLimiter


def fallbacks() -> float:
    return FALLBACKS.labels("redis", "rate_limit")._value.get()


async def test_without_redis_the_limits_are_counted_in_memory_and_still_refuse() -> None:
    redis = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5)
    limiter = RateLimiter(
        redis, prefix="t.", requests_per_minute=2, tokens_per_minute=100, clock=lambda: 600.0
    )
    before = fallbacks()
    try:
        first = await limiter.admit("key-1", "requests", 1)
        second = await limiter.admit("key-1", "requests", 1)
        third = await limiter.admit("key-1", "requests", 1)
        other_key = await limiter.admit("key-2", "requests", 1)
        tokens = await limiter.admit("key-1", "tokens", 90)
        await limiter.settle("key-1", tokens.window, reserved=90, actual=20)  # 70 back
        more = await limiter.admit("key-1", "tokens", 75)
    finally:
        await redis.aclose()
    assert (first.allowed, second.allowed, third.allowed) == (True, True, False)
    assert third.quota.remaining == 0 and third.retry_after_s == 60
    assert other_key.allowed  # per key, as in Redis
    assert more.allowed and more.quota.used == 95  # the settled reservation counted
    assert fallbacks() - before == 7
