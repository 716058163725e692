"""Connections to ``CHATBUS_POSTGRES_URL``, and PostgreSQL's errors in ours.

As :mod:`chatbus.stores` does for Redis and MongoDB: one timeout policy (a server that has not
answered within :data:`CONNECT_TIMEOUT_S` is down for this call) and psycopg's operational errors
translated, here only, into a retriable :class:`~chatbus.errors.ServiceUnavailable` that says what
to do (:func:`postgres_errors`). A constraint violation is an answer, not an outage: it passes
through.
"""

from __future__ import annotations

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
