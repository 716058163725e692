"""API keys in PostgreSQL, as users and operators meet them: rotating keys (list, revoke: refused
at once by a gateway that cached it), expiry, per-key minute limits, and moving keys that an
older chatbus kept in MongoDB."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from chatbus.api_keys import create_key, import_from_mongo, list_keys, revoke_key, set_limits
from chatbus.polling import eventually
from chatbus.settings import Settings
from tests.conftest import mongo_database
from tests.integration.gateway_fixtures import delete_keys_of, running_gateway

pytestmark = pytest.mark.integration


async def test_a_revoked_key_is_refused_at_once_though_cached_and_the_other_key_keeps_working(
    settings: Settings,
) -> None:
    settings = settings.replace(**{"gateway_key_cache_s": 300.0})  # cached for five minutes
    user = f"rotating-{uuid.uuid4().hex[:8]}"
    old, old_principal = await asyncio.to_thread(create_key, settings, user)
    new, new_principal = await asyncio.to_thread(create_key, settings, user)
    try:
        listed = await asyncio.to_thread(list_keys, settings, user)
        assert {k.key_id for k in listed} == {old_principal.key_id, new_principal.key_id}
        assert {(k.user, k.state) for k in listed} == {(user, "active")}
        async with (
            running_gateway(settings) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):

            async def status(key: str) -> int:
                response = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
                return response.status_code

            assert (await status(old), await status(new)) == (200, 200)  # both cached now
            assert await asyncio.to_thread(revoke_key, settings, old_principal.key_id)

            async def old_refused() -> bool:
                return await status(old) == 401

            # NOTIFY reaches the gateway's listener in milliseconds, not after the cache's 300 s
            await eventually(old_refused, timeout_s=2.0, interval=0.01, what="revoked key refused")
            assert await status(new) == 200
        assert not await asyncio.to_thread(revoke_key, settings, old_principal.key_id)
        states = {k.key_id: k.state for k in await asyncio.to_thread(list_keys, settings, user)}
        assert states == {old_principal.key_id: "revoked", new_principal.key_id: "active"}
    finally:
        await delete_keys_of(settings, user)


async def test_an_expired_key_is_refused_and_listed_as_expired(settings: Settings) -> None:
    settings = settings.replace(**{"gateway_key_cache_s": 300.0})
    user = f"expiring-{uuid.uuid4().hex[:8]}"
    soon = datetime.now(UTC) + timedelta(seconds=2)
    key, principal = await asyncio.to_thread(create_key, settings, user, expires_at=soon)
    try:
        async with (
            running_gateway(settings) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            auth = {"Authorization": f"Bearer {key}"}
            assert (await http.get("/v1/models", headers=auth)).status_code == 200

            async def refused() -> httpx.Response | None:
                response = await http.get("/v1/models", headers=auth)
                return response if response.status_code == 401 else None

            response = await eventually(refused, timeout_s=10, interval=0.05, what="expiry")
            assert datetime.now(UTC) >= soon
            assert response.json()["error"]["code"] == "invalid_api_key"
        [record] = await asyncio.to_thread(list_keys, settings, user)
        assert (record.key_id, record.state) == (principal.key_id, "expired")
    finally:
        await delete_keys_of(settings, user)


async def test_a_keys_own_requests_per_minute_replace_the_gateway_default(
    settings: Settings,
) -> None:
    user = f"limited-{uuid.uuid4().hex[:8]}"
    key, principal = await asyncio.to_thread(create_key, settings, user, requests_per_minute=2)
    try:
        async with (
            running_gateway(settings) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            auth = {"Authorization": f"Bearer {key}"}
            # /v1/appeals is admitted (counted) like a chat request, and answers fast
            body = {"id": "chatcmpl-00"}
            codes = [
                (await http.post("/v1/appeals", headers=auth, json=body)).status_code
                for _ in range(3)
            ]
            assert codes[:2] == [404, 404] and codes[2] == 429
            assert await asyncio.to_thread(
                set_limits, settings, principal.key_id, requests_per_minute=100
            )

            async def admitted() -> bool:
                response = await http.post("/v1/appeals", headers=auth, json=body)
                return response.status_code == 404

            await eventually(admitted, timeout_s=2.0, interval=0.01, what="the new limit in force")
    finally:
        await delete_keys_of(settings, user)


async def test_keys_kept_in_mongodb_by_an_older_chatbus_move_to_postgres_once(
    settings: Settings,
) -> None:
    user = f"moved-{uuid.uuid4().hex[:8]}"
    key = f"cb-{uuid.uuid4().hex}"
    key_id = f"key-{uuid.uuid4().hex[:16]}"
    settings = settings.replace(**{"mongo_db": f"keys_{uuid.uuid4().hex[:10]}"})
    with mongo_database(settings) as db:
        db["api_keys"].insert_one(
            {
                "_id": key_id,
                "hash": hashlib.sha256(key.encode()).hexdigest(),
                "user": user,
                "created_at": datetime(2026, 1, 2, tzinfo=UTC),
            }
        )
    try:
        copied, present = await asyncio.to_thread(import_from_mongo, settings)
        assert (copied, present) == (1, 0)
        assert await asyncio.to_thread(import_from_mongo, settings) == (0, 1)  # once only
        [record] = await asyncio.to_thread(list_keys, settings, user)
        assert (record.key_id, record.state, record.created_at.year) == (key_id, "active", 2026)
        async with (
            running_gateway(settings) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=30) as http,
        ):
            response = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
    finally:
        await delete_keys_of(settings, user)
        with mongo_database(settings) as db:
            db.client.drop_database(settings.mongo.db)
