"""Per-key rate limits in the real Redis: 429 with Retry-After and OpenAI's x-ratelimit headers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from chatbus.settings import Settings
from tests.integration.gateway_fixtures import api_key, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.model]

HELLO = [{"role": "user", "content": "hi"}]


@asynccontextmanager
async def keyed_gateway(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway on ``settings`` and a client of it with a fresh key (its limits start full)."""
    async with (
        api_key(settings, f"rl-{uuid.uuid4().hex[:8]}") as key,
        running_gateway(settings) as gateway,
        httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        yield http


async def test_over_the_requests_per_minute_is_429_with_headers(
    bus: Settings, demo_model_path: Path
) -> None:
    settings = bus.replace(**{"model_path": demo_model_path, "gateway_requests_per_minute": 2})
    async with keyed_gateway(settings) as http:
        # requests count on admission, before parsing: invalid ones are cheap to send
        bad = {"model": settings.model.name, "messages": HELLO, "temperature": 9}
        statuses = []
        for _ in range(6):  # 3 fill a window; more only if a minute boundary passed between
            response = await http.post("/v1/chat/completions", json=bad)
            statuses.append(response.status_code)
            if response.status_code == 429:
                break
    assert statuses[-1] == 429, statuses
    assert set(statuses[:-1]) == {400}
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.json()["error"]["type"] == "requests"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-limit-requests"] == "2"
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    assert response.headers["x-request-id"]


async def test_a_request_reserving_more_tokens_than_the_key_has_left_is_429(
    bus: Settings, demo_model_path: Path
) -> None:
    settings = bus.replace(**{"model_path": demo_model_path, "gateway_tokens_per_minute": 50})
    async with keyed_gateway(settings) as http:
        response = await http.post(
            "/v1/chat/completions",
            json={"model": settings.model.name, "messages": HELLO, "max_tokens": 100},
        )
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "tokens"
    assert "retry-after" in response.headers
    assert response.headers["x-ratelimit-limit-tokens"] == "50"
    assert response.headers["x-ratelimit-remaining-tokens"] == "50"  # nothing was reserved
    assert response.headers["x-ratelimit-remaining-requests"] == str(
        settings.gateway.requests_per_minute - 1
    )
