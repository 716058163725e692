"""API keys while PostgreSQL is out of reach: a key verified recently keeps working for
``CHATBUS_GATEWAY_KEY_STALE_S``; a key never seen, or seen longer ago, is a 503.

A real psycopg pool pointed at a port nobody listens on: every lookup fails as in an outage.
"""

from __future__ import annotations

import pytest

from chatbus.api_keys import ApiKeyStore, Principal, hash_key
from chatbus.errors import ServiceUnavailable
from chatbus.ports import free_port
from chatbus.settings import Settings


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_recently_verified_key_outlives_a_postgres_outage_for_the_stale_window() -> None:
    settings = Settings(
        postgres_url=f"postgresql://chatbus@127.0.0.1:{free_port()}/chatbus",
        gateway_key_cache_s=30,
        gateway_key_stale_s=600,
    )
    clock = Clock()
    store = ApiKeyStore(settings, clock=clock)
    await store.start()
    alice = Principal(key_id="k1", user="alice")
    store._cache[hash_key("cb-alice")] = (alice, clock.now + 30)  # verified just now
    try:
        clock.now += 300  # the cache entry expired; PostgreSQL cannot be asked
        assert await store.verify("cb-alice") == alice
        with pytest.raises(ServiceUnavailable):
            await store.verify("cb-never-seen")
        clock.now += 400  # past the stale window: refused too
        with pytest.raises(ServiceUnavailable):
            await store.verify("cb-alice")
    finally:
        await store.stop()
