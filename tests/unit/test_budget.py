"""Monthly budgets as the gateway enforces them, and the breaker that keeps a PostgreSQL outage
from costing every request a wait (pure logic: a pool of our own that answers or fails)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from chatbus.accounts.database import Breaker
from chatbus.api_keys import Principal
from chatbus.errors import ServiceUnavailable
from producers.gateway.budget import BudgetBook, seconds_to_next_month
from producers.gateway.errors import APIError


class Ledger:
    """A pool whose connections answer the month-to-date query with ``used`` (or fail)."""

    def __init__(self, used: int) -> None:
        self.used = used
        self.down = False
        self.queries = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Ledger]:
        self.queries += 1
        if self.down:
            raise psycopg.OperationalError("connection refused")
        yield self

    async def execute(self, query: str, params: Any) -> Ledger:
        assert "usage_monthly" in query
        return self

    async def fetchone(self) -> tuple[int]:
        return (self.used,)


def alice(budget: int | None) -> Principal:
    return Principal(key_id="key-a", user="alice", monthly_token_budget=budget)


async def test_a_key_with_budget_left_is_told_how_much_and_a_spent_one_is_refused() -> None:
    ledger = Ledger(used=900)
    book = BudgetBook(ledger, cache_s=0)
    headers: dict[str, str] = {}
    await book.admit(alice(1000), headers)
    assert headers["x-chatbus-budget-remaining-tokens"] == "100"
    assert headers["x-chatbus-budget-limit-tokens"] == "1000"
    ledger.used = 1000
    with pytest.raises(APIError) as refused:
        await book.admit(alice(1000), {})
    assert refused.value.status == 429
    assert refused.value.body.error.code == "insufficient_quota"
    assert refused.value.body.error.type == "insufficient_quota"
    assert refused.value.headers["x-should-retry"] == "false"  # the openai SDK must not retry


async def test_a_key_without_budget_never_asks_the_ledger() -> None:
    ledger = Ledger(used=10**9)
    headers: dict[str, str] = {}
    await BudgetBook(ledger, cache_s=0).admit(alice(None), headers)
    assert ledger.queries == 0 and headers == {}


async def test_postgres_down_the_last_figure_read_is_used_and_a_key_never_read_is_admitted() -> (
    None
):
    ledger = Ledger(used=400)
    book = BudgetBook(ledger, cache_s=0)
    await book.admit(alice(1000), {})
    ledger.down = True
    headers: dict[str, str] = {}
    await book.admit(alice(1000), headers)
    assert headers["x-chatbus-budget-remaining-tokens"] == "600"
    other = Principal(key_id="key-b", user="bob", monthly_token_budget=5)
    headers = {}
    await book.admit(other, headers)  # never read: admitted, the ledger still counts it
    assert "x-chatbus-budget-remaining-tokens" not in headers
    asked = ledger.queries
    await book.admit(alice(1000), {})
    assert ledger.queries == asked  # the breaker is open: no wait on a dead database


async def test_the_cached_month_is_not_carried_into_the_next_month() -> None:
    now = [datetime(2026, 11, 30, 23, 59, tzinfo=UTC)]
    ledger = Ledger(used=1000)
    book = BudgetBook(ledger, cache_s=3600, wall=lambda: now[0])
    with pytest.raises(APIError):
        await book.admit(alice(1000), {})
    now[0] = datetime(2026, 12, 1, 0, 1, tzinfo=UTC)
    ledger.used = 0
    await book.admit(alice(1000), {})  # a new month: read again, not the cached 1000


def test_the_budget_resets_at_the_next_utc_month() -> None:
    assert seconds_to_next_month(datetime(2026, 12, 31, 23, 0, tzinfo=UTC)) == 3600
    assert seconds_to_next_month(datetime(2026, 11, 30, 12, 0, tzinfo=UTC)) == 12 * 3600


def test_the_breaker_doubles_its_pause_and_ignores_failures_while_open() -> None:
    breaker = Breaker(first_s=60, max_s=600)
    breaker.check()  # closed
    breaker.failed()
    with pytest.raises(ServiceUnavailable):
        breaker.check()
    until = breaker._until
    breaker.failed()  # refused while open: changes nothing
    assert breaker._until == until and breaker._failures == 1
    breaker.succeeded()
    breaker.check()
