"""Rotating API keys: list a user's keys (never their secrets), revoke one, and the gateway
refuses it while the user's other key keeps working."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from chatbus.api_keys import create_key, list_keys, revoke_key
from chatbus.settings import Settings
from tests.integration.gateway_fixtures import delete_keys_of, running_gateway

pytestmark = pytest.mark.integration


async def test_a_revoked_key_is_refused_and_the_other_key_keeps_working(settings: Settings) -> None:
    settings = settings.replace(**{"gateway_key_cache_s": 0.0})
    user = f"rotating-{uuid.uuid4().hex[:8]}"
    old, old_principal = await asyncio.to_thread(create_key, settings, user)
    new, new_principal = await asyncio.to_thread(create_key, settings, user)
    try:
        listed = await asyncio.to_thread(list_keys, settings, user)
        assert {doc["_id"] for doc in listed} == {old_principal.key_id, new_principal.key_id}
        assert all("hash" not in doc and doc["user"] == user for doc in listed)
        async with (
            running_gateway(settings) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):

            async def status(key: str) -> int:
                response = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
                return response.status_code

            assert (await status(old), await status(new)) == (200, 200)
            assert await asyncio.to_thread(revoke_key, settings, old_principal.key_id)
            assert (await status(old), await status(new)) == (401, 200)
        assert not await asyncio.to_thread(revoke_key, settings, old_principal.key_id)
        assert [doc["_id"] for doc in await asyncio.to_thread(list_keys, settings, user)] == [
            new_principal.key_id
        ]
    finally:
        await delete_keys_of(settings, user)
