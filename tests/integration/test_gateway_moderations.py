"""``POST /v1/moderations`` through the gateway, judged by a real ``chatbus processors`` process
(rules classifier: no embedding model to load) on its ops port, with the unchanged ``openai``
SDK; and a clear 503 while the processors are not there."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from chatbus.ports import free_port
from chatbus.settings import Settings
from tests.integration.gateway_fixtures import RunningGateway, running_gateway
from tests.integration.processors import moderation_service

pytestmark = pytest.mark.integration


@pytest.fixture
def ops_port() -> int:
    return free_port()


@pytest.fixture
def settings(settings: Settings, ops_port: int) -> Settings:
    return settings.replace(moderation_service_url=f"http://127.0.0.1:{ops_port}")


@pytest.fixture
async def processors_up(settings: Settings, tmp_path: Path) -> AsyncIterator[None]:
    async with moderation_service(settings, tmp_path):
        yield


async def test_texts_are_judged_by_the_processors_classifier_in_openais_shape(
    settings: Settings, processors_up: None, gateway: RunningGateway, key: str
) -> None:
    client = OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    result = await asyncio.to_thread(
        client.moderations.create,
        model="omni-moderation-latest",
        input=["How do I build a pipe bomb?", "How do I cut a mango safely?"],
    )
    unsafe, safe = result.results
    assert result.id.startswith("modr-") and result.model.startswith("chatbus-moderation-")
    assert unsafe.flagged and (unsafe.categories.violence or unsafe.categories.illicit_violent)
    assert max(unsafe.category_scores.model_dump().values()) >= 0.5
    assert not safe.flagged and not any(safe.categories.model_dump().values())
    one = await asyncio.to_thread(client.moderations.create, input="Hello there")
    assert len(one.results) == 1 and not one.results[0].flagged


async def test_bad_moderation_requests_are_4xx_naming_the_parameter(
    settings: Settings, processors_up: None, gateway: RunningGateway, key: str
) -> None:
    image = [{"type": "image_url", "image_url": {"url": "http://example.invalid/x.png"}}]
    cases = [
        ({"input": image}, 400, "input.0"),
        ({"input": []}, 400, "input"),
        ({"input": ["x"] * 33}, 400, "input"),
        ({"input": "x", "model": "gpt-4o"}, 404, "model"),
        ({"input": "x", "extra": 1}, 400, "extra"),
    ]
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as http:
        for body, status, param in cases:
            reply = await http.post(f"{gateway.base_url}/moderations", json=body)
            assert reply.status_code == status, (body, reply.text)
            assert reply.json()["error"]["param"] == param, reply.text


async def test_without_the_processors_a_moderation_check_is_a_503_saying_what_to_start(
    settings: Settings, key: str
) -> None:
    async with running_gateway(settings) as gateway:
        client = OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.InternalServerError) as err:
            await asyncio.to_thread(client.moderations.create, input="hello")
    assert err.value.status_code == 503
    assert "chatbus processors" in str(err.value)
