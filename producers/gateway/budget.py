"""Monthly token budgets: a key whose budget is spent is refused with OpenAI's 429
``insufficient_quota``; every answer to a key with a budget says what is left.

What a key used this month comes from the usage ledger's monthly rollup in PostgreSQL (one row
per key and month, kept in the ledger's own transaction), cached for
``CHATBUS_POSTGRES_USAGE_CACHE_S``. So a budget is enforced as the ledger counts: exactly, and a
few seconds behind the answers (a request already admitted is never cut). While PostgreSQL is
out of reach, the last figure read is used, however old, and a key never read is admitted: chat
keeps answering within what was cached, and the ledger catches up afterwards.

Headers: ``x-chatbus-budget-limit-tokens``, ``x-chatbus-budget-remaining-tokens`` and
``x-chatbus-budget-reset`` (seconds until the next month, UTC).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from chatbus.accounts.database import Breaker, postgres_errors
from chatbus.accounts.usage import month_to_date
from chatbus.api_keys import Principal
from chatbus.errors import ServiceUnavailable
from chatbus.logging import get_logger
from producers.gateway import metrics
from producers.gateway.errors import APIError

log = get_logger(__name__)


def seconds_to_next_month(now: datetime) -> int:
    start = now.astimezone(UTC)
    if start.month == 12:
        following = start.replace(year=start.year + 1, month=1)
    else:
        following = start.replace(month=start.month + 1)
    following = following.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return max(1, int((following - start).total_seconds()))


class BudgetBook:
    """Month-to-date usage per key, read from the ledger and cached briefly."""

    def __init__(
        self,
        pool: Any,
        *,
        cache_s: float,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._cache_s = cache_s
        self._clock = clock
        self._wall = wall
        self._used: dict[str, tuple[int, float, datetime]] = {}  # key → used, read at, month
        self._breaker = Breaker()

    async def used(self, key_id: str) -> int | None:
        """Tokens ``key_id`` used this month (None: unknown, PostgreSQL never answered)."""
        now, wall = self._clock(), self._wall()
        cached = self._used.get(key_id)
        same_month = cached is not None and (cached[2].year, cached[2].month) == (
            wall.year,
            wall.month,
        )
        if cached is not None and same_month and now - cached[1] < self._cache_s:
            return cached[0]
        try:
            self._breaker.check()
            with postgres_errors("read the key's usage this month"):
                async with self._pool.connection() as conn:
                    used = await month_to_date(conn, key_id, wall)
        except ServiceUnavailable as exc:
            self._breaker.failed()
            metrics.FALLBACKS.labels("postgres", "budget").inc()
            log.warning("budget_from_cache", key_id=key_id, error=str(exc))
            return cached[0] if cached is not None and same_month else None
        self._breaker.succeeded()
        if len(self._used) > 10_000:
            self._used.clear()
        self._used[key_id] = (used, now, wall)
        return used

    async def admit(self, principal: Principal, headers: dict[str, str]) -> None:
        """Refuse a key whose monthly budget is spent; say what is left either way."""
        budget = principal.monthly_token_budget
        if budget is None:
            return
        used = await self.used(principal.key_id)
        reset = seconds_to_next_month(self._wall())
        headers["x-chatbus-budget-limit-tokens"] = str(budget)
        headers["x-chatbus-budget-reset"] = f"{reset}s"
        if used is None:
            return  # never read, PostgreSQL down: admitted (the ledger still counts it)
        remaining = max(0, budget - used)
        headers["x-chatbus-budget-remaining-tokens"] = str(remaining)
        if remaining <= 0:
            metrics.RATE_LIMITED.labels("budget").inc()
            raise APIError(
                429,
                f"You exceeded your current quota: this key's monthly budget of {budget} tokens "
                f"is spent ({used} used this month, UTC). It renews in {reset // 3600} h; ask "
                "an operator to raise it (`chatbus keys limits KEY_ID --monthly-tokens N`).",
                type="insufficient_quota",
                code="insufficient_quota",
                headers={"x-should-retry": "false"},
            )
