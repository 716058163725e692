"""The usage ledger: one row per answered request, written with the reader's offsets.

:func:`record` writes a batch of completions *and* the offsets after them in one PostgreSQL
transaction, so after a crash the reader resumes exactly where its last transaction ended
(:func:`stored_offsets`): no completion is dropped, none is counted twice. A request's row is
keyed by its ``request_id``, so a completion that reaches the log twice (a worker's failover)
still counts once, and a key's month (``usage_monthly``) grows by the rows actually inserted,
in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from schemas.events import Completion

if TYPE_CHECKING:
    import psycopg

Position = tuple[str, int]  # topic, partition

_FIELDS = (
    ("request_id", "text"),
    ("user_name", "text"),
    ("key_id", "text"),
    ("model", "text"),
    ("prompt_tokens", "int"),
    ("completion_tokens", "int"),
    ("total_tokens", "int"),
    ("finish_reason", "text"),
    ("error_code", "text"),
    ("queue_wait_ms", "float8"),
    ("time_to_first_token_ms", "float8"),
    ("total_ms", "float8"),
    ("worker_id", "text"),
    ("completed_at", "timestamptz"),
    ("topic", "text"),
    ("partition", "int"),
    ("offset", "int8"),
)
_NAMES = ", ".join(f'"{name}"' for name, _ in _FIELDS)
_ARRAYS = ", ".join(f"%s::{kind}[]" for _, kind in _FIELDS)
INSERT = (
    f"INSERT INTO usage_ledger ({_NAMES}) SELECT * FROM unnest({_ARRAYS})"  # noqa: S608 - ours
    " ON CONFLICT (request_id) DO NOTHING"
    " RETURNING key_id, completed_at, prompt_tokens, completion_tokens, total_tokens"
)
ADD_MONTH = (
    "INSERT INTO usage_monthly AS m (key_id, month, requests, prompt_tokens, completion_tokens,"
    " total_tokens) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (key_id, month) DO UPDATE SET"
    " requests = m.requests + excluded.requests,"
    " prompt_tokens = m.prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = m.completion_tokens + excluded.completion_tokens,"
    " total_tokens = m.total_tokens + excluded.total_tokens"
)
SAVE_OFFSET = (
    "INSERT INTO consumer_offsets (group_id, topic, partition, next_offset, updated_at)"
    " VALUES (%s, %s, %s, %s, now()) ON CONFLICT (group_id, topic, partition) DO UPDATE SET"
    " next_offset = excluded.next_offset, updated_at = now()"
)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """What the ledger keeps of one completion, and where it was read."""

    request_id: str
    user: str
    key_id: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    finish_reason: str
    error_code: str | None
    queue_wait_ms: float
    time_to_first_token_ms: float | None
    total_ms: float
    worker_id: str
    completed_at: datetime
    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, completion: Completion, topic: str, partition: int, offset: int) -> LedgerRow:
        usage = completion.usage
        return cls(
            request_id=completion.request_id,
            user=completion.user_id,
            key_id=_text(completion.key_id),
            model=_text(completion.model),
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens or usage.prompt_tokens + usage.completion_tokens,
            finish_reason=completion.finish_reason,
            error_code=_text(completion.error.code) if completion.error else None,
            queue_wait_ms=completion.timings.queue_wait_ms,
            time_to_first_token_ms=completion.timings.time_to_first_token_ms,
            total_ms=completion.timings.total_ms,
            worker_id=_text(completion.worker_id),
            completed_at=completion.created_at,
            topic=topic,
            partition=partition,
            offset=offset,
        )


def _text(value: str) -> str:
    """PostgreSQL's text holds no NUL character; an event's free text may."""
    return value.replace("\x00", "")


def _columns(rows: Sequence[LedgerRow]) -> list[list[Any]]:
    return [[getattr(row, _attribute(name)) for row in rows] for name, _ in _FIELDS]


def _attribute(column: str) -> str:
    return "user" if column == "user_name" else column


def month_of(moment: datetime) -> datetime:
    """The first instant of ``moment``'s calendar month (UTC)."""
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def record(
    conn: psycopg.AsyncConnection[Any],
    group: str,
    rows: Sequence[LedgerRow],
    offsets: Mapping[Position, int],
) -> int:
    """Insert ``rows`` (those already there are left as they are), add the new ones to their
    keys' months, and save ``offsets`` (the next offset to read of each partition), in one
    transaction; returns how many rows were new."""
    async with conn.transaction():
        new: list[tuple[Any, ...]] = []
        if rows:
            cursor = await conn.execute(INSERT, _columns(rows))
            new = list(await cursor.fetchall())
        months: dict[tuple[str, Any], list[int]] = {}
        for key_id, completed_at, prompt, completion, total in new:
            month = month_of(completed_at.astimezone(UTC)).date()
            counts = months.setdefault((key_id, month), [0, 0, 0, 0])
            for i, value in enumerate((1, prompt, completion, total)):
                counts[i] += value
        for (key_id, month), counts in sorted(months.items()):
            await conn.execute(ADD_MONTH, (key_id, month, *counts))
        for (topic, partition), next_offset in sorted(offsets.items()):
            await conn.execute(SAVE_OFFSET, (group, topic, partition, next_offset))
    return len(new)


async def stored_offsets(
    conn: psycopg.AsyncConnection[Any], group: str, positions: Iterable[Position]
) -> dict[Position, int]:
    """The next offset to read of each of ``positions`` that the ledger has written before."""
    wanted = sorted(set(positions))
    if not wanted:
        return {}
    cursor = await conn.execute(
        "SELECT topic, partition, next_offset FROM consumer_offsets WHERE group_id = %s"
        " AND (topic, partition) IN (SELECT * FROM unnest(%s::text[], %s::int[]))",
        (group, [t for t, _ in wanted], [p for _, p in wanted]),
    )
    found = {(str(t), int(p)): int(o) for t, p, o in await cursor.fetchall()}
    await conn.commit()  # end the read's transaction: nothing waits on it
    return found
