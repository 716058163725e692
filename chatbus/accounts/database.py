"""Connections to ``CHATBUS_POSTGRES_URL``, and PostgreSQL's errors in ours.

As :mod:`chatbus.stores` does for Redis and MongoDB: one timeout policy (a server that has not
answered within :data:`CONNECT_TIMEOUT_S` is down for this call) and psycopg's operational errors
translated, here only, into a retriable :class:`~chatbus.errors.ServiceUnavailable` that says what
to do (:func:`postgres_errors`). A constraint violation is an answer, not an outage: it passes
through.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from chatbus.errors import ServiceUnavailable
from chatbus.settings import Settings

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

CONNECT_TIMEOUT_S = 3
STATEMENT_TIMEOUT_MS = 10_000


def url(settings: Settings) -> str:
    return settings.postgres.url.get_secret_value()


def _options() -> str:
    return f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection[tuple]:  # type: ignore[type-arg]
    """A synchronous connection (the command line, migrations, tests)."""
    import psycopg

    with postgres_errors("connect"):
        return psycopg.connect(
            url(settings),
            connect_timeout=CONNECT_TIMEOUT_S,
            options=_options(),
            autocommit=autocommit,
        )


async def async_connect(
    settings: Settings, *, autocommit: bool = False
) -> psycopg.AsyncConnection[tuple]:  # type: ignore[type-arg]
    """One asyncio connection (a consumer that owns its transaction)."""
    import psycopg

    with postgres_errors("connect"):
        return await psycopg.AsyncConnection.connect(
            url(settings),
            connect_timeout=CONNECT_TIMEOUT_S,
            options=_options(),
            autocommit=autocommit,
        )


def async_pool(settings: Settings, *, name: str, max_size: int = 4) -> AsyncConnectionPool:
    """A small asyncio pool (opened by the caller: ``await pool.open(wait=False)``); a
    connection is waited for at most :data:`CONNECT_TIMEOUT_S`."""
    from psycopg_pool import AsyncConnectionPool

    return AsyncConnectionPool(
        url(settings),
        min_size=1,
        max_size=max_size,
        name=name,
        timeout=CONNECT_TIMEOUT_S,
        kwargs={
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": _options(),
            "autocommit": True,
        },
        open=False,
    )


@contextmanager
def postgres_errors(what: str) -> Iterator[None]:
    """Turn psycopg's connection and server-state errors inside the block into
    :class:`ServiceUnavailable` naming ``what`` was being done."""
    import psycopg
    from psycopg_pool import PoolTimeout

    try:
        yield
    except (psycopg.OperationalError, psycopg.errors.AdminShutdown, PoolTimeout) as exc:
        raise ServiceUnavailable(
            f"cannot reach PostgreSQL to {what} ({exc.__class__.__name__}: "
            f"{str(exc).strip()[:300]}); start it with `make up` or set CHATBUS_POSTGRES_URL"
        ) from exc
    except psycopg.errors.UndefinedTable as exc:
        raise ServiceUnavailable(
            f"PostgreSQL has no chatbus schema yet ({exc}); run `chatbus db upgrade`"
        ) from exc


class Breaker:
    """After PostgreSQL failed, answer from what is held for a while instead of asking again:
    2 s, doubling per failure in a row up to 30 s, so an outage costs a caller one wait for a
    connection, not one per request."""

    def __init__(self, first_s: float = 2.0, max_s: float = 30.0) -> None:
        self._first_s, self._max_s = first_s, max_s
        self._failures = 0
        self._until = float("-inf")

    def check(self) -> None:
        """Raise :class:`ServiceUnavailable` while PostgreSQL is presumed down."""
        if time.monotonic() < self._until:
            raise ServiceUnavailable(
                "PostgreSQL failed a moment ago; not asking again yet (CHATBUS_POSTGRES_URL)"
            )

    def failed(self) -> None:
        """A call failed (one refused by :meth:`check` while open changes nothing)."""
        if time.monotonic() < self._until:
            return
        delay = min(self._max_s, self._first_s * 2**self._failures)
        self._failures += 1
        self._until = max(self._until, time.monotonic() + delay)

    def succeeded(self) -> None:
        self._failures = 0
        self._until = float("-inf")
