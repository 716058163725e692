"""The Redis and MongoDB clients of every chatbus component, and their errors in ours.

One factory per store, one timeout policy: a store that has not answered within
:data:`STORE_TIMEOUT_S` is down for this call; a cache with a fallback behind it (the context
cache falls back to MongoDB) gives up after :data:`CACHE_TIMEOUT_S`, so a hung Redis costs a chat
one second, not three. As :mod:`chatbus.object_store` does for S3, errors of redis-py and pymongo
are translated here, and only here, into a retriable :class:`~chatbus.errors.ServiceUnavailable`
that says what to do (:func:`redis_errors`, :func:`mongo_errors`). Callers that degrade instead of
failing (a cache miss, a lease that expires on its own) catch redis-py's errors themselves.

redis and pymongo are imported when a client is built: ``import chatbus.stores`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from chatbus.errors import ServiceUnavailable
from chatbus.settings import Settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from pymongo import AsyncMongoClient, MongoClient

STORE_TIMEOUT_S = 3.0
CACHE_TIMEOUT_S = 1.0

Document = dict[str, Any]


def redis_client(settings: Settings, *, timeout_s: float = STORE_TIMEOUT_S) -> aioredis.Redis:
    """An asyncio Redis client for ``CHATBUS_REDIS_URL`` (connects on first use)."""
    import redis.asyncio as aioredis

    return aioredis.from_url(
        settings.redis.url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )


def _mongo_options(timeout_s: float, tz_aware: bool) -> dict[str, Any]:
    ms = int(timeout_s * 1000)
    return {
        "serverSelectionTimeoutMS": ms,
        "connectTimeoutMS": ms,
        "tz_aware": tz_aware,
        "connect": False,
    }


def mongo_client(
    settings: Settings, *, timeout_s: float = STORE_TIMEOUT_S, tz_aware: bool = False
) -> MongoClient[Document]:
    """A pymongo client for ``CHATBUS_MONGO_URL`` (connects on first use; for threads)."""
    from pymongo import MongoClient

    return MongoClient(settings.mongo.url.get_secret_value(), **_mongo_options(timeout_s, tz_aware))


def async_mongo_client(
    settings: Settings, *, timeout_s: float = STORE_TIMEOUT_S, tz_aware: bool = False
) -> AsyncMongoClient[Document]:
    """The asyncio flavour of :func:`mongo_client`, with the same options."""
    from pymongo import AsyncMongoClient

    return AsyncMongoClient(
        settings.mongo.url.get_secret_value(), **_mongo_options(timeout_s, tz_aware)
    )


def _unavailable(store: str, setting: str, what: str, exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"cannot reach {store} to {what} ({exc.__class__.__name__}: {exc});"
        f" start it with `make up` or set {setting}"
    )


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Turn redis-py's errors inside the block into :class:`ServiceUnavailable` naming
    ``what`` was being done (``"lease a reply partition"``)."""
    from redis.exceptions import RedisError

    try:
        yield
    except RedisError as exc:
        raise _unavailable("Redis", "CHATBUS_REDIS_URL", what, exc) from exc


@contextmanager
def mongo_errors(what: str) -> Iterator[None]:
    """Turn pymongo's errors inside the block into :class:`ServiceUnavailable` naming ``what``
    was being done; a duplicate key is an answer, not an outage, and passes through."""
    from pymongo.errors import DuplicateKeyError, PyMongoError

    try:
        yield
    except DuplicateKeyError:
        raise
    except PyMongoError as exc:
        raise _unavailable("MongoDB", "CHATBUS_MONGO_URL", what, exc) from exc
