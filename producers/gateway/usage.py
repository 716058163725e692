"""``GET /v1/usage``: the caller's own key's usage, from the ledger, by UTC day and model.

Shaped like OpenAI's usage API (``/v1/organization/usage/completions``): a page of daily
``bucket`` objects, each with one result per model (``input_tokens``, ``output_tokens``,
``num_model_requests``); ``start_time`` and ``end_time`` are Unix seconds, ``limit`` buckets per
page (default 7, at most 31), and ``page`` is the ``next_page`` cursor of the page before.
Empty days are buckets with no results, as OpenAI's are.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from chatbus.accounts.database import postgres_errors
from chatbus.accounts.usage import daily_by_model
from producers.gateway.admission import authenticate
from producers.gateway.errors import APIError
from producers.gateway.routes import runtime_of

router = APIRouter()
DAY = timedelta(days=1)
MAX_DAYS = 366


class UsageResult(BaseModel):
    object: Literal["organization.usage.completions.result"] = (
        "organization.usage.completions.result"
    )
    model: str
    input_tokens: int
    output_tokens: int
    num_model_requests: int
    api_key_id: str


class UsageBucket(BaseModel):
    object: Literal["bucket"] = "bucket"
    start_time: int
    end_time: int
    results: list[UsageResult]


class UsagePage(BaseModel):
    object: Literal["page"] = "page"
    data: list[UsageBucket]
    has_more: bool
    next_page: str | None


def _day_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _cursor_day(page: str, first: datetime, last: datetime) -> datetime:
    try:
        day = datetime.combine(
            date.fromisoformat(page.removeprefix("day_")), datetime.min.time(), UTC
        )
    except ValueError:
        raise APIError(
            400,
            f"page {page!r} is not a cursor this API returned (next_page).",
            param="page",
            code="invalid_page",
        ) from None
    if not first <= day < last:
        raise APIError(
            400,
            f"page {page!r} is outside [start_time, end_time).",
            param="page",
            code="invalid_page",
        )
    return day


@router.get("/v1/usage")
async def get_usage(
    request: Request,
    start_time: int = Query(ge=0, le=32503680000, description="Unix seconds, inclusive."),
    end_time: int | None = Query(
        None, ge=0, le=32503680000, description="Unix seconds, exclusive (default: now)."
    ),
    limit: int = Query(7, ge=1, le=31, description="Daily buckets per page."),
    page: str | None = Query(None, max_length=64, description="next_page of the page before."),
) -> UsagePage:
    runtime = runtime_of(request)
    principal = await authenticate(request, runtime.keys)
    start = datetime.fromtimestamp(start_time, UTC)
    end = datetime.fromtimestamp(end_time if end_time is not None else time.time(), UTC)
    if end <= start:
        raise APIError(
            400, "end_time must be after start_time.", param="end_time", code="invalid_time_range"
        )
    first, last = _day_start(start), _day_start(end - timedelta(microseconds=1)) + DAY
    if (last - first).days > MAX_DAYS:
        raise APIError(
            400,
            f"A range spans at most {MAX_DAYS} days.",
            param="start_time",
            code="invalid_time_range",
        )
    day = _cursor_day(page, first, last) if page else first
    page_end = min(last, day + limit * DAY)
    with postgres_errors("read your usage"):
        async with runtime.keys.pool.connection() as conn:
            totals = await daily_by_model(
                conn, principal.key_id, max(start, day), min(end, page_end)
            )
    buckets: list[UsageBucket] = []
    while day < page_end:
        results = [
            UsageResult(
                model=t.model,
                input_tokens=t.prompt_tokens,
                output_tokens=t.completion_tokens,
                num_model_requests=t.requests,
                api_key_id=principal.key_id,
            )
            for t in totals
            if t.day == day.date()
        ]
        buckets.append(
            UsageBucket(
                start_time=int(max(start, day).timestamp()),
                end_time=int(min(end, day + DAY).timestamp()),
                results=results,
            )
        )
        day += DAY
    more = page_end < last
    return UsagePage(
        data=buckets,
        has_more=more,
        next_page=f"day_{page_end.date().isoformat()}" if more else None,
    )
