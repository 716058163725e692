"""Usage through the gateway, as a client meets it: answers are counted by the ledger from the
completions themselves, a key whose monthly budget is spent gets OpenAI's 429
``insufficient_quota`` (the official SDK raises it and does not retry), every answer says what is
left, and ``GET /v1/usage`` gives the caller's own usage by day and model, page by page."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import openai
import pytest

from chatbus.accounts.database import connect
from chatbus.accounts.usage import report
from chatbus.api_keys import create_key
from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from stream_processors.ledger.reader import LedgerReader
from tests.integration.gateway_fixtures import delete_keys_of, running_gateway
from tests.integration.tcp_proxy import TcpProxy

pytestmark = pytest.mark.integration


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[LedgerReader]:
    async with LedgerReader(settings) as reader:
        yield reader


def _rows(settings: Settings, key_id: str) -> list[tuple[str, int, int, str]]:
    with connect(settings) as conn:
        return [
            (str(r[0]), int(r[1]), int(r[2]), str(r[3]))
            for r in conn.execute(
                "SELECT model, prompt_tokens, completion_tokens, finish_reason FROM usage_ledger"
                " WHERE key_id = %s ORDER BY completed_at",
                (key_id,),
            ).fetchall()
        ]


def _forget(settings: Settings, key_id: str) -> None:
    with connect(settings) as conn:
        conn.execute("DELETE FROM usage_ledger WHERE key_id = %s", (key_id,))
        conn.execute("DELETE FROM usage_monthly WHERE key_id = %s", (key_id,))


async def test_a_spent_monthly_budget_is_refused_with_insufficient_quota_and_usage_is_listed(
    settings: Settings, worker: InferenceWorker, ledger: LedgerReader
) -> None:
    settings = settings.replace(**{"postgres_usage_cache_s": 0.0})
    user = f"budget-{uuid.uuid4().hex[:8]}"
    key, principal = await asyncio.to_thread(create_key, settings, user, monthly_token_budget=60)
    other, _ = await asyncio.to_thread(create_key, settings, user + "-other")
    started = int(time.time())
    try:
        async with running_gateway(settings) as gateway:
            client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=2)
            answered = 0
            with pytest.raises(openai.RateLimitError) as refused:
                for _ in range(10):
                    raw = await client.chat.completions.with_raw_response.create(
                        model=settings.model.name,
                        messages=[{"role": "user", "content": "Count to five."}],
                        max_tokens=8,
                        temperature=0,
                    )
                    answered += 1
                    left = int(raw.headers["x-chatbus-budget-remaining-tokens"])
                    assert raw.headers["x-chatbus-budget-limit-tokens"] == "60"
                    assert left > 0
                    usage = raw.parse().usage
                    assert usage is not None

                    async def counted(n: int = answered) -> bool:
                        return len(_rows(settings, principal.key_id)) == n

                    await eventually(counted, timeout_s=30, what="the answer in the ledger")
            error = refused.value
            assert error.status_code == 429
            assert error.code == "insufficient_quota"
            assert error.response.headers["x-chatbus-budget-remaining-tokens"] == "0"
            assert error.response.headers["x-should-retry"] == "false"
            rows = _rows(settings, principal.key_id)
            assert len(rows) == answered >= 2
            used = sum(prompt + completion for _, prompt, completion, _ in rows)
            assert used >= 60

            async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                page = await _usage(http, key, start_time=started)
                [bucket] = page["data"]
                [result] = bucket["results"]
                assert result["model"] == settings.model.name
                assert result["num_model_requests"] == answered
                assert result["input_tokens"] + result["output_tokens"] == used
                assert result["api_key_id"] == principal.key_id
                assert not page["has_more"]
                # someone else's key sees none of it
                theirs = await _usage(http, other, start_time=started)
                assert [b["results"] for b in theirs["data"]] == [[]]
                # three days back, two buckets a page: two pages, today's usage on the second
                first = await _usage(http, key, start_time=started - 2 * 86400, limit=2)
                assert first["has_more"] and [b["results"] for b in first["data"]] == [[], []]
                second = await _usage(
                    http, key, start_time=started - 2 * 86400, limit=2, page=first["next_page"]
                )
                assert not second["has_more"]
                assert second["data"][0]["results"][0]["num_model_requests"] == answered
                bad = await http.get(
                    "/v1/usage",
                    params={"start_time": started, "end_time": started - 10},
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert bad.status_code == 400 and bad.json()["error"]["param"] == "end_time"
        now = datetime.now(UTC)
        by_key = {
            row.group["key"]: row
            for row in report(settings, datetime.fromtimestamp(started, UTC), now, ("user", "key"))
        }
        assert by_key[principal.key_id].requests == answered
        assert by_key[principal.key_id].total_tokens == used
    finally:
        await delete_keys_of(settings, user)
        await delete_keys_of(settings, user + "-other")
        _forget(settings, principal.key_id)


async def _usage(http: httpx.AsyncClient, key: str, **params: str | int) -> dict[str, Any]:
    response = await http.get(
        "/v1/usage", params=params, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_answer_whose_client_went_away_is_counted_as_generated(
    settings: Settings, worker: InferenceWorker, ledger: LedgerReader
) -> None:
    settings = settings.replace(**{"gateway_resume_grace_s": 0.0})  # cancelled at once
    user = f"leaver-{uuid.uuid4().hex[:8]}"
    key, principal = await asyncio.to_thread(create_key, settings, user)
    body = {
        "model": settings.model.name,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 1800,
        "temperature": 0,
        "stream": True,
    }
    try:
        async with running_gateway(settings) as gateway:
            async with (
                httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
                http.stream(
                    "POST",
                    "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {key}"},
                    json=body,
                ) as response,
            ):
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    if line.startswith("data: {"):
                        break  # the client goes away after its first chunk

            async def counted() -> list[tuple[str, int, int, str]]:
                return _rows(settings, principal.key_id)

            [(_, prompt, completion, finish)] = await eventually(
                counted, timeout_s=60, what="the abandoned answer in the ledger"
            )
        assert prompt > 0
        assert finish == "cancelled"
        assert 1 <= completion < 1800  # what was generated before the cancel, not max_tokens
    finally:
        await delete_keys_of(settings, user)
        _forget(settings, principal.key_id)


async def test_postgres_down_chat_keeps_answering_on_what_the_gateway_holds(
    settings: Settings, worker: InferenceWorker
) -> None:
    """A key verified a moment ago, and its budget as last read, carry the gateway through a
    PostgreSQL outage; a key it never saw gets a 503 that says what is wrong, never a 401."""
    user = f"outage-{uuid.uuid4().hex[:8]}"
    key, _ = await asyncio.to_thread(create_key, settings, user, monthly_token_budget=10_000)
    stranger, _ = await asyncio.to_thread(create_key, settings, user + "-new")
    body = {
        "model": settings.model.name,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 4,
    }
    try:
        async with TcpProxy(settings.local.postgres_port) as proxy:
            through = settings.replace(
                **{
                    "postgres_url": f"postgresql://chatbus@127.0.0.1:{proxy.port}/chatbus",
                    "gateway_key_cache_s": 0.2,  # so the outage is met by an expired entry
                    "postgres_usage_cache_s": 0.0,
                }
            )
            async with (
                running_gateway(through) as gateway,
                httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
            ):
                auth = {"Authorization": f"Bearer {key}"}
                before = await http.post("/v1/chat/completions", headers=auth, json=body)
                assert before.status_code == 200, before.text
                left = before.headers["x-chatbus-budget-remaining-tokens"]
                await proxy.cut()
                during = [
                    await http.post("/v1/chat/completions", headers=auth, json=body)
                    for _ in range(3)
                ]
                assert [r.status_code for r in during] == [200, 200, 200]
                assert {r.headers["x-chatbus-budget-remaining-tokens"] for r in during} == {left}
                unknown = await http.get(
                    "/v1/models", headers={"Authorization": f"Bearer {stranger}"}
                )
                assert unknown.status_code == 503
                assert "PostgreSQL" in unknown.json()["error"]["message"]
                await proxy.restore()

                async def known_again() -> bool:
                    response = await http.get(
                        "/v1/models", headers={"Authorization": f"Bearer {stranger}"}
                    )
                    return response.status_code == 200

                await eventually(known_again, timeout_s=30, what="PostgreSQL back for the gateway")
    finally:
        await delete_keys_of(settings, user)
        await delete_keys_of(settings, user + "-new")
