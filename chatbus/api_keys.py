"""API keys: created once, stored only as a SHA-256 hash in MongoDB, each mapped to a user.

A key looks like ``cb-<43 url-safe characters>`` and is shown once, at creation. The collection
``api_keys`` holds ``{_id: key_id, hash, user, created_at}`` with a unique index on ``hash``.
Lookups are cached in-process for ``gateway_key_cache_s``; pymongo errors become
:class:`ServiceUnavailable` (a 503, never a 401).

It lives in the core because two sides use it: the gateway verifies keys on every request
(:mod:`producers.gateway.admission`), the command line creates, lists and revokes them.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pymongo import AsyncMongoClient, MongoClient

from chatbus.errors import ChatbusError, ServiceUnavailable
from chatbus.logging import get_logger
from chatbus.settings import Settings
from chatbus.stores import Document, async_mongo_client, mongo_client, mongo_errors

log = get_logger(__name__)

KEY_PREFIX = "cb-"
COLLECTION = "api_keys"
_WHAT = "read or write API keys"
_USER = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")  # the bus's Id pattern (ChatRequest.user_id)


class InvalidUserName(ChatbusError):
    """A user name the bus cannot carry."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from."""

    key_id: str
    user: str


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(settings: Settings, user: str) -> tuple[str, Principal]:
    """Create a key for ``user`` (synchronous, for the CLI); returns the key and its record."""
    if not _USER.match(user):
        raise InvalidUserName(f"user {user!r} must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    key = new_key()
    principal = Principal(key_id=f"key-{secrets.token_hex(8)}", user=user)
    client, collection = _sync_collection(settings)
    try:
        with mongo_errors(_WHAT):
            collection.create_index("hash", unique=True)
            collection.insert_one(
                {
                    "_id": principal.key_id,
                    "hash": hash_key(key),
                    "user": user,
                    "created_at": datetime.now(UTC),
                }
            )
    finally:
        client.close()
    return key, principal


def _sync_collection(settings: Settings) -> tuple[MongoClient[Document], Any]:
    client = mongo_client(settings)
    return client, client[settings.mongo.db][COLLECTION]


def list_keys(settings: Settings, user: str | None = None) -> list[dict[str, Any]]:
    """The keys (id, user, created_at — never the hash) of ``user``, or of everyone."""
    client, collection = _sync_collection(settings)
    try:
        with mongo_errors(_WHAT):
            found = collection.find({"user": user} if user else {}, {"hash": 0})
            return sorted(found, key=lambda doc: (doc.get("user", ""), doc.get("created_at")))
    finally:
        client.close()


def revoke_key(settings: Settings, key_id: str) -> bool:
    """Delete key ``key_id``; False when there is no such key. Gateways that verified it stop
    accepting it within ``gateway_key_cache_s``."""
    client, collection = _sync_collection(settings)
    try:
        with mongo_errors(_WHAT):
            return bool(collection.delete_one({"_id": key_id}).deleted_count)
    finally:
        client.close()


class KeyVerifier(Protocol):
    """What the gateway needs of the key store: who owns a key (None: not a key we know)."""

    async def verify(self, key: str) -> Principal | None: ...


class ApiKeyStore:
    """Verifies bearer keys against MongoDB, with a short in-process cache of good ones.

    While MongoDB is out of reach, a key verified within ``CHATBUS_GATEWAY_KEY_STALE_S`` keeps
    working (logged): chat does not stop with the document store. A key never seen, or seen
    longer ago, gets the 503. The trade is written down: a key revoked during an outage works
    until MongoDB answers again, for at most that long.
    """

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._client: AsyncMongoClient[Document] = async_mongo_client(settings)
        self._collection = self._client[settings.mongo.db][COLLECTION]
        self._ttl = settings.gateway.key_cache_s
        self._stale_s = settings.gateway.key_stale_s
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def start(self) -> None:
        with mongo_errors(_WHAT):
            await self._collection.create_index("hash", unique=True)

    async def stop(self) -> None:
        await self._client.close()

    async def verify(self, key: str) -> Principal | None:
        """The key's owner, or None for a key we do not know."""
        digest = hash_key(key)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            with mongo_errors(_WHAT):
                doc = await self._collection.find_one({"hash": digest})
        except ServiceUnavailable:
            if cached is not None and cached[1] - self._ttl + self._stale_s > now:
                log.warning("api_key_verified_from_cache", user=cached[0].user)
                return cached[0]
            raise
        if doc is None:
            self._cache.pop(digest, None)
            return None
        principal = Principal(key_id=str(doc["_id"]), user=str(doc["user"]))
        if self._ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, now + self._ttl)
        return principal

    async def delete_user(self, user: str) -> int:
        """Remove every key of ``user`` (tests and admin tools); returns how many."""
        with mongo_errors(_WHAT):
            result = await self._collection.delete_many({"user": user})
        self._cache = {h: v for h, v in self._cache.items() if v[0].user != user}
        return int(result.deleted_count)
