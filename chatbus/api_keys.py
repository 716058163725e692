"""API keys: created once, stored only as a SHA-256 hash in PostgreSQL, each owned by a user.

A key looks like ``cb-<43 url-safe characters>`` and is shown once, at creation. Table
``api_keys`` (:mod:`chatbus.accounts.migrate`) holds its id, hash, user, state (``active`` or
``revoked``; a key past its ``expires_at`` is *expired*) and its limits: requests and tokens per
minute (NULL: the gateway's defaults) and a monthly token budget (NULL: none).

The gateway verifies keys on every request (:mod:`producers.gateway.admission`) through
:class:`ApiKeyStore`: good keys are cached in-process for ``CHATBUS_GATEWAY_KEY_CACHE_S``, and a
revocation reaches every gateway at once through PostgreSQL's ``NOTIFY`` on channel
:data:`CHANNEL` (the cache window bounds it only while a gateway's listener is reconnecting: the
cache is emptied on every reconnect). Expiry is checked on every request. The command line
creates, lists and revokes keys (:func:`create_key`, :func:`list_keys`, :func:`revoke_key`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from chatbus.accounts.database import (
    Breaker,
    async_connect,
    async_pool,
    connect,
    postgres_errors,
)
from chatbus.errors import ChatbusError, ServiceUnavailable
from chatbus.logging import get_logger
from chatbus.settings import Settings

log = get_logger(__name__)

KEY_PREFIX = "cb-"
CHANNEL = "chatbus_keys"  # NOTIFY payload: the hash of a key that must not be trusted any more
_WHAT = "read or write API keys"
_USER = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")  # the bus's Id pattern (ChatRequest.user_id)
_COLUMNS = (
    "key_id, user_name, state, expires_at, requests_per_minute, tokens_per_minute, "
    "monthly_token_budget"
)


class InvalidUserName(ChatbusError):
    """A user name the bus cannot carry."""


class InvalidLimit(ChatbusError):
    """A key limit that is not a positive number."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from, and the limits of the key it came with (None: defaults)."""

    key_id: str
    user: str
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    monthly_token_budget: int | None = None
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as ``chatbus keys list`` shows it (never its hash)."""

    key_id: str
    user: str
    state: str  # active, revoked or expired
    created_at: datetime
    expires_at: datetime | None
    requests_per_minute: int | None
    tokens_per_minute: int | None
    monthly_token_budget: int | None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _check_limits(limits: dict[str, int | None]) -> None:
    for name, value in limits.items():
        if value is not None and (value < 0 or (value == 0 and name != "monthly_token_budget")):
            raise InvalidLimit(f"{name} must be a positive number (got {value})")


def create_key(
    settings: Settings,
    user: str,
    *,
    expires_at: datetime | None = None,
    requests_per_minute: int | None = None,
    tokens_per_minute: int | None = None,
    monthly_token_budget: int | None = None,
) -> tuple[str, Principal]:
    """Create a key for ``user`` (and the user, if new); returns the key and its principal."""
    if not _USER.match(user):
        raise InvalidUserName(f"user {user!r} must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    limits = {
        "requests_per_minute": requests_per_minute,
        "tokens_per_minute": tokens_per_minute,
        "monthly_token_budget": monthly_token_budget,
    }
    _check_limits(limits)
    key = new_key()
    principal = Principal(
        key_id=f"key-{secrets.token_hex(8)}", user=user, expires_at=expires_at, **limits
    )
    with postgres_errors(_WHAT), connect(settings) as conn:
        conn.execute("INSERT INTO users (name) VALUES (%s) ON CONFLICT DO NOTHING", (user,))
        conn.execute(
            "INSERT INTO api_keys (key_id, hash, user_name, expires_at, requests_per_minute,"
            " tokens_per_minute, monthly_token_budget) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                principal.key_id,
                hash_key(key),
                user,
                expires_at,
                requests_per_minute,
                tokens_per_minute,
                monthly_token_budget,
            ),
        )
    return key, principal


def list_keys(settings: Settings, user: str | None = None) -> list[KeyRecord]:
    """The keys of ``user``, or of everyone, by user and age (revoked and expired ones too)."""
    query = (
        "SELECT key_id, user_name, state, created_at, expires_at, requests_per_minute,"
        " tokens_per_minute, monthly_token_budget FROM api_keys"
        " WHERE %s::text IS NULL OR user_name = %s ORDER BY user_name, created_at"
    )
    now = datetime.now(UTC)
    with postgres_errors(_WHAT), connect(settings) as conn:
        rows = conn.execute(query, (user, user)).fetchall()
    return [
        KeyRecord(
            key_id=row[0],
            user=row[1],
            state="expired" if row[2] == "active" and row[4] and row[4] <= now else row[2],
            created_at=row[3],
            expires_at=row[4],
            requests_per_minute=row[5],
            tokens_per_minute=row[6],
            monthly_token_budget=row[7],
        )
        for row in rows
    ]


def revoke_key(settings: Settings, key_id: str) -> bool:
    """Revoke key ``key_id`` (it stays listed, as revoked); False when there is no active key of
    that id. Every gateway listening drops it at once."""
    with postgres_errors(_WHAT), connect(settings) as conn:
        row = conn.execute(
            "UPDATE api_keys SET state = 'revoked', revoked_at = now()"
            " WHERE key_id = %s AND state = 'active' RETURNING hash",
            (key_id,),
        ).fetchone()
        if row is not None:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, row[0]))
    return row is not None


_UNCHANGED: Any = object()


def set_limits(
    settings: Settings,
    key_id: str,
    *,
    requests_per_minute: int | None = _UNCHANGED,
    tokens_per_minute: int | None = _UNCHANGED,
    monthly_token_budget: int | None = _UNCHANGED,
    expires_at: datetime | None = _UNCHANGED,
) -> bool:
    """Change a key's limits or expiry (None: back to the default / never); False when there is
    no such key. Gateways see the change at once (NOTIFY), like a revocation."""
    changes = {
        name: value
        for name, value in {
            "requests_per_minute": requests_per_minute,
            "tokens_per_minute": tokens_per_minute,
            "monthly_token_budget": monthly_token_budget,
            "expires_at": expires_at,
        }.items()
        if value is not _UNCHANGED
    }
    _check_limits({k: v for k, v in changes.items() if isinstance(v, int)})
    if not changes:
        return True
    assignments = ", ".join(f"{name} = %s" for name in changes)
    with postgres_errors(_WHAT), connect(settings) as conn:
        row = conn.execute(
            f"UPDATE api_keys SET {assignments} WHERE key_id = %s RETURNING hash",  # noqa: S608 - names are ours
            (*changes.values(), key_id),
        ).fetchone()
        if row is not None:
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, row[0]))
    return row is not None


def import_from_mongo(settings: Settings) -> tuple[int, int]:
    """Copy the keys of the MongoDB ``api_keys`` collection (where chatbus kept them before
    PostgreSQL) into PostgreSQL, hashes and ids unchanged; returns (copied, already there).
    MongoDB is left as it was: drop the collection once the gateways run on this version."""
    from chatbus.stores import mongo_client, mongo_errors

    client = mongo_client(settings, tz_aware=True)
    try:
        with mongo_errors("read the API keys kept in MongoDB"):
            docs = list(client[settings.mongo.db]["api_keys"].find({}))
    finally:
        client.close()
    copied = 0
    with postgres_errors(_WHAT), connect(settings) as conn:
        for doc in docs:
            user = str(doc.get("user", ""))
            if not _USER.match(user) or not doc.get("hash"):
                log.warning("api_key_not_imported", key_id=str(doc.get("_id")), user=user)
                continue
            conn.execute("INSERT INTO users (name) VALUES (%s) ON CONFLICT DO NOTHING", (user,))
            done = conn.execute(
                "INSERT INTO api_keys (key_id, hash, user_name, created_at)"
                " VALUES (%s, %s, %s, coalesce(%s, now())) ON CONFLICT DO NOTHING",
                (str(doc["_id"]), str(doc["hash"]), user, doc.get("created_at")),
            )
            copied += done.rowcount
    return copied, len(docs) - copied


class KeyVerifier(Protocol):
    """What the gateway needs of the key store: who owns a key (None: not a key we accept)."""

    async def verify(self, key: str) -> Principal | None: ...


class ApiKeyStore:
    """Verifies bearer keys against PostgreSQL, with a short in-process cache of good ones.

    While PostgreSQL is out of reach, a key verified within ``CHATBUS_GATEWAY_KEY_STALE_S`` keeps
    working (logged): chat does not stop with the accounts database. A key never seen, or seen
    longer ago, gets the 503. The trade is written down: a key revoked during an outage works
    until PostgreSQL answers again, for at most that long. An expired key is refused at once,
    outage or not.
    """

    listen_retry_s = 1.0

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._pool = async_pool(settings, name="gateway-accounts", max_size=8)
        self._ttl = settings.gateway.key_cache_s
        self._stale_s = settings.gateway.key_stale_s
        self._clock = clock
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._breaker = Breaker()  # PostgreSQL just failed: answer from the cache meanwhile
        self.listening = asyncio.Event()

    @property
    def pool(self) -> Any:
        """The store's PostgreSQL pool (the gateway reads budgets and usage through it too)."""
        return self._pool

    async def start(self) -> None:
        await self._pool.open(wait=False)
        if self._ttl > 0:
            self._listener = asyncio.create_task(self._listen(), name="api-key-revocations")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._pool.close()

    async def _listen(self) -> None:
        """Drop a key from the cache when its row changes anywhere (NOTIFY); on every
        (re)connect, make every cached key due for a fresh check (a change may have been missed
        meanwhile), keeping it for the outage fallback."""
        while True:
            try:
                conn = await async_connect(self._settings, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    now = self._clock()
                    self._cache = {h: (p, min(t, now)) for h, (p, t) in self._cache.items()}
                    self.listening.set()
                    async for notice in conn.notifies():
                        self._cache.pop(notice.payload, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: reconnect
                if self.listening.is_set():
                    log.warning("api_key_listener_lost", error=str(exc))
                self.listening.clear()
            await asyncio.sleep(self.listen_retry_s)  # backoff before reconnecting

    async def verify(self, key: str) -> Principal | None:
        """The key's owner and limits, or None for a key that is unknown, revoked or expired."""
        digest = hash_key(key)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return None if cached[0].expired() else cached[0]
        try:
            self._breaker.check()
            with postgres_errors(_WHAT):
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(
                        f"SELECT {_COLUMNS} FROM api_keys WHERE hash = %s",  # noqa: S608
                        (digest,),
                    )
                    row = await cursor.fetchone()
        except ServiceUnavailable:
            self._breaker.failed()
            if cached is not None and cached[1] - self._ttl + self._stale_s > now:
                log.warning("api_key_verified_from_cache", user=cached[0].user)
                return None if cached[0].expired() else cached[0]
            raise
        self._breaker.succeeded()
        if row is None or row[2] != "active":
            self._cache.pop(digest, None)
            return None
        principal = Principal(
            key_id=row[0],
            user=row[1],
            expires_at=row[3],
            requests_per_minute=row[4],
            tokens_per_minute=row[5],
            monthly_token_budget=row[6],
        )
        if principal.expired():
            self._cache.pop(digest, None)
            return None
        if self._ttl > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (principal, now + self._ttl)
        return principal

    async def delete_user(self, user: str) -> int:
        """Remove ``user`` and every key of theirs (tests and admin tools); returns how many
        keys. The usage ledger keeps its rows: they are the record of what was used."""
        with postgres_errors(_WHAT):
            async with self._pool.connection() as conn, conn.transaction():
                cursor = await conn.execute(
                    "DELETE FROM api_keys WHERE user_name = %s RETURNING hash", (user,)
                )
                hashes = [row[0] for row in await cursor.fetchall()]
                for digest in hashes:
                    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, digest))
                await conn.execute("DELETE FROM users WHERE name = %s", (user,))
        self._cache = {h: v for h, v in self._cache.items() if v[0].user != user}
        return len(hashes)
