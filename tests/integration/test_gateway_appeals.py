"""Appeals: a user marks a moderation refusal of their own request as wrong.

Real Kafka, FerretDB and Redis: a gateway in-process, the processors (rules classifier, history)
as a subprocess, no worker (a refused request never reaches one). The refusal names its category
in plain words; ``POST /v1/appeals`` puts an appeal on ``chat.feedback``, the history agent
stores it with the turn; nobody can appeal another user's refusal or an unknown request.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from chatbus.polling import eventually
from chatbus.settings import Settings
from tests.integration.gateway_fixtures import RunningGateway, api_key, running_gateway
from tests.integration.processors import STARTUP_S, Processors

pytestmark = pytest.mark.integration

UNSAFE = "Tell me how to build a pipe bomb for my garage."


@pytest.fixture
async def gateway(history_settings: Settings) -> AsyncIterator[RunningGateway]:
    # one request waits for the processors to start: a retry would be a second violation
    patient = history_settings.replace(request_timeout_s=STARTUP_S)
    async with running_gateway(patient) as running:
        yield running


async def _key(settings: Settings, name: str) -> AsyncIterator[str]:
    async with api_key(settings, f"{name}-{uuid.uuid4().hex[:6]}") as key:
        yield key


@pytest.fixture
async def alice(history_settings: Settings) -> AsyncIterator[str]:
    async for key in _key(history_settings, "alice"):
        yield key


@pytest.fixture
async def bob(history_settings: Settings) -> AsyncIterator[str]:
    async for key in _key(history_settings, "bob"):
        yield key


def _turn(settings: Settings, request_id: str) -> dict[str, Any] | None:
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo.url.get_secret_value())
    try:
        return client[settings.mongo.db]["turns"].find_one({"_id": request_id})
    finally:
        client.close()


async def test_a_refusal_can_be_appealed_by_its_user_and_is_stored_with_the_turn(
    history_settings: Settings,
    processors: Processors,
    gateway: RunningGateway,
    alice: str,
    bob: str,
) -> None:
    model = history_settings.model.name
    async with httpx.AsyncClient(base_url=gateway.url, timeout=STARTUP_S + 30) as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {alice}"},
            json={"model": model, "messages": [{"role": "user", "content": UNSAFE}]},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "content_policy_violation"
        assert error["message"].startswith("I can't help with this because it asks how to make")
        request_id = response.headers["x-request-id"]
        assert request_id.startswith("req-")

        async def appealed() -> dict[str, Any] | None:
            answer = await http.post(
                "/v1/appeals",
                headers={"Authorization": f"Bearer {alice}"},
                json={"id": request_id, "comment": "I asked about fireworks safety."},
            )
            if answer.status_code == 404:  # the history agent has not recorded the turn yet
                return None
            assert answer.status_code == 200, answer.text
            return answer.json()  # type: ignore[no-any-return]

        receipt = await eventually(
            appealed, timeout_s=60, interval=0.5, what="the appeal to be accepted"
        )
        assert receipt["object"] == "appeal" and receipt["status"] == "received"
        assert receipt["request_id"] == request_id and receipt["stage"] == "input"
        assert "illicit/violent" in receipt["categories"]

        stolen = await http.post(
            "/v1/appeals", headers={"Authorization": f"Bearer {bob}"}, json={"id": request_id}
        )
        assert stolen.status_code == 404 and stolen.json()["error"]["param"] == "id"
        unknown = await http.post(
            "/v1/appeals",
            headers={"Authorization": f"Bearer {alice}"},
            json={"id": "chatcmpl-0123456789abcdef"},
        )
        assert unknown.status_code == 404
        malformed = await http.post(
            "/v1/appeals", headers={"Authorization": f"Bearer {alice}"}, json={"id": "x y"}
        )
        assert malformed.status_code == 400 and malformed.json()["error"]["param"] == "id"

    async def stored() -> dict[str, Any] | None:
        turn = await _async_turn(history_settings, request_id)
        return None if turn is None else turn.get("appeal")

    appeal = await eventually(
        stored, timeout_s=60, interval=0.5, what="the appeal stored with the turn"
    )
    assert appeal["comment"] == "I asked about fireworks safety."
    assert appeal["stage"] == "input" and "illicit/violent" in appeal["categories"]


async def _async_turn(settings: Settings, request_id: str) -> dict[str, Any] | None:
    return await asyncio.to_thread(_turn, settings, request_id)
