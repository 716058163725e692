"""What the usage ledger says: a key's month so far, totals by day and model, and reports.

Days and months are UTC. A request counts on the day its completion was published
(``completed_at``), with what was really generated: a cancelled, cut or refused answer counts its
tokens so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from chatbus.accounts.database import connect, postgres_errors
from chatbus.accounts.ledger import month_of
from chatbus.settings import Settings

_WHAT = "read the usage ledger"
GROUPINGS = ("user", "key", "model", "day")
_COLUMN = {
    "user": "user_name",
    "key": "key_id",
    "model": "model",
    "day": "(completed_at AT TIME ZONE 'UTC')::date",
}


@dataclass(frozen=True, slots=True)
class DayModelTotal:
    """One (day, model) bucket of one key's usage."""

    day: date
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


async def month_to_date(conn: Any, key_id: str, now: datetime | None = None) -> int:
    """Tokens ``key_id`` used this calendar month (UTC), from the ledger's monthly rollup."""
    month = month_of((now or datetime.now(UTC)).astimezone(UTC)).date()
    cursor = await conn.execute(
        "SELECT total_tokens FROM usage_monthly WHERE key_id = %s AND month = %s",
        (key_id, month),
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def daily_by_model(
    conn: Any, key_id: str, start: datetime, end: datetime
) -> list[DayModelTotal]:
    """``key_id``'s totals per (UTC day, model) of completions in [start, end), in order."""
    day = _COLUMN["day"]
    cursor = await conn.execute(
        f"SELECT {day}, model, count(*), coalesce(sum(prompt_tokens), 0),"  # noqa: S608 - ours
        " coalesce(sum(completion_tokens), 0) FROM usage_ledger"
        " WHERE key_id = %s AND completed_at >= %s AND completed_at < %s"
        " GROUP BY 1, 2 ORDER BY 1, 2",
        (key_id, start, end),
    )
    return [
        DayModelTotal(r[0], r[1], int(r[2]), int(r[3]), int(r[4])) for r in await cursor.fetchall()
    ]


@dataclass(frozen=True, slots=True)
class ReportRow:
    group: dict[str, str]
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def report(
    settings: Settings, start: datetime, end: datetime, by: tuple[str, ...]
) -> list[ReportRow]:
    """Totals of every completion in [start, end), grouped by ``by`` (of :data:`GROUPINGS`)."""
    unknown = [g for g in by if g not in GROUPINGS]
    if unknown:
        raise ValueError(f"cannot group by {unknown}; choose from {', '.join(GROUPINGS)}")
    columns = [_COLUMN[g] for g in by]
    select = "".join(f"{c}::text, " for c in columns)
    group = (" GROUP BY " + ", ".join(str(i + 1) for i in range(len(by)))) if by else ""
    order = (" ORDER BY " + ", ".join(str(i + 1) for i in range(len(by)))) if by else ""
    with postgres_errors(_WHAT), connect(settings) as conn:
        rows = conn.execute(
            f"SELECT {select}count(*), coalesce(sum(prompt_tokens), 0),"  # noqa: S608 - ours
            " coalesce(sum(completion_tokens), 0) FROM usage_ledger"
            f" WHERE completed_at >= %s AND completed_at < %s{group}{order}",
            (start, end),
        ).fetchall()
    n = len(by)
    return [
        ReportRow(dict(zip(by, map(str, row[:n]), strict=True)), *map(int, row[n:])) for row in rows
    ]


@dataclass(frozen=True, slots=True)
class RequestUsage:
    """One request as the ledger, or the archive, counts it."""

    request_id: str
    completed_at: datetime
    model: str
    user: str
    key_id: str
    prompt_tokens: int
    completion_tokens: int

    def counted(self) -> tuple[str, str, str, int, int]:
        """What must agree between the ledger and the archive."""
        return (self.model, self.user, self.key_id, self.prompt_tokens, self.completion_tokens)


def requests_between(settings: Settings, start: datetime, end: datetime) -> list[RequestUsage]:
    """Every request of the ledger completed in [start, end)."""
    with postgres_errors(_WHAT), connect(settings) as conn:
        rows = conn.execute(
            "SELECT request_id, completed_at, model, user_name, key_id, prompt_tokens,"
            " completion_tokens FROM usage_ledger WHERE completed_at >= %s AND completed_at < %s",
            (start, end),
        ).fetchall()
    return [RequestUsage(*row) for row in rows]


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The ledger against the archive over one window."""

    ledger: int
    archive: int
    only_in_ledger: list[str]
    only_in_archive: list[str]
    different: list[str]
    ledger_tokens: int
    archive_tokens: int

    @property
    def matches(self) -> bool:
        return not (self.only_in_ledger or self.only_in_archive or self.different)


def reconcile(ledger: list[RequestUsage], archive: list[RequestUsage]) -> Reconciliation:
    """Request by request: the same requests, each with the same model, user, key and tokens."""
    mine = {r.request_id: r for r in ledger}
    theirs = {r.request_id: r for r in archive}
    both = mine.keys() & theirs.keys()
    return Reconciliation(
        ledger=len(mine),
        archive=len(theirs),
        only_in_ledger=sorted(mine.keys() - theirs.keys()),
        only_in_archive=sorted(theirs.keys() - mine.keys()),
        different=sorted(r for r in both if mine[r].counted() != theirs[r].counted()),
        ledger_tokens=sum(r.prompt_tokens + r.completion_tokens for r in mine.values()),
        archive_tokens=sum(r.prompt_tokens + r.completion_tokens for r in theirs.values()),
    )


def parse_moment(text: str, *, end_of_day: bool = False) -> datetime:
    """``2026-11-30`` (a UTC day; its end when ``end_of_day``), an ISO time, or ``now``."""
    if text == "now":
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (2026-11-30), an ISO time or 'now'") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if end_of_day and len(text) == 10:
        moment += timedelta(days=1)
    return moment
