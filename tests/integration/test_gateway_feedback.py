"""Feedback: a user rates their own answers up or down, and the rating reaches every consumer.

Real Kafka, FerretDB and Redis: a worker on the demo model and a gateway in-process, the
processors (history) as a subprocess. An answer streamed through the unchanged ``openai``
package is rated with ``POST /v1/feedback``: the rating goes on ``chat.feedback`` with the model
that answered, the history agent stores it with the turn, a second rating replaces the first,
the conversation shows it, and nobody can rate another user's answer. The Python SDK rates an
answer it streamed straight from the bus the same way.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from pymongo import MongoClient

from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from producers.sdk import ChatClient
from schemas.events import Rating, SamplingParams
from schemas.topics import TopicName
from tests.integration.gateway_fixtures import (
    RunningGateway,
    api_key,
    running_gateway,
    running_worker,
)
from tests.integration.processors import STARTUP_S, Processors
from tests.integration.raw_kafka import read_events

pytestmark = pytest.mark.integration


@pytest.fixture
async def gateway(history_settings: Settings) -> AsyncIterator[RunningGateway]:
    async with running_gateway(history_settings) as running:
        yield running


@pytest.fixture
async def worker(history_settings: Settings) -> AsyncIterator[InferenceWorker]:
    async with running_worker(history_settings, "feedback-test-worker") as running:
        yield running


@pytest.fixture
async def alice(history_settings: Settings) -> AsyncIterator[str]:
    async with api_key(history_settings, f"alice-{uuid.uuid4().hex[:6]}") as key:
        yield key


@pytest.fixture
async def bob(history_settings: Settings) -> AsyncIterator[str]:
    async with api_key(history_settings, f"bob-{uuid.uuid4().hex[:6]}") as key:
        yield key


async def _turn(settings: Settings, request_id: str) -> dict[str, Any] | None:
    def read() -> dict[str, Any] | None:
        client: MongoClient[dict[str, Any]] = MongoClient(settings.mongo.url.get_secret_value())
        try:
            return client[settings.mongo.db]["turns"].find_one({"_id": request_id})
        finally:
            client.close()

    return await asyncio.to_thread(read)


async def _rated(settings: Settings, request_id: str, rating: str) -> dict[str, Any] | None:
    turn = await _turn(settings, request_id)
    stored = (turn or {}).get("rating") or {}
    return stored if stored.get("rating") == rating else None


async def test_a_user_rates_their_answer_and_a_second_rating_replaces_the_first(
    history_settings: Settings,
    processors: Processors,
    worker: InferenceWorker,
    gateway: RunningGateway,
    alice: str,
    bob: str,
) -> None:
    model = history_settings.model.name
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=alice, max_retries=0)
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Say something kind."}],
        max_tokens=8,
        temperature=0,
        stream=True,
    )
    completion_id = ""
    async for chunk in stream:
        completion_id = chunk.id
    await client.close()
    request_id = "req-" + completion_id.removeprefix("chatcmpl-")

    async with httpx.AsyncClient(base_url=gateway.url, timeout=STARTUP_S + 30) as http:
        as_alice = {"Authorization": f"Bearer {alice}"}

        async def rate_up() -> dict[str, Any] | None:
            answer = await http.post(
                "/v1/feedback", headers=as_alice, json={"id": completion_id, "rating": "up"}
            )
            if answer.status_code == 404:  # the history agent has not recorded the turn yet
                assert answer.json()["error"]["code"] == "answer_not_found"
                return None
            assert answer.status_code == 200, answer.text
            return answer.json()  # type: ignore[no-any-return]

        receipt = await eventually(rate_up, timeout_s=60, interval=0.3, what="the rating")
        assert receipt["object"] == "feedback" and receipt["status"] == "received"
        assert (receipt["request_id"], receipt["rating"], receipt["model"]) == (
            request_id,
            "up",
            model,
        )
        await eventually(
            lambda: _rated(history_settings, request_id, "up"), timeout_s=60, what="up stored"
        )

        # a second rating, by the response-id spelling of the same answer, replaces the first
        second = await http.post(
            "/v1/feedback",
            headers=as_alice,
            json={
                "id": "resp_" + completion_id.removeprefix("chatcmpl-"),
                "rating": "down",
                "category": "incorrect",
                "comment": "That is not kind at all.",
            },
        )
        assert second.status_code == 200, second.text
        stored = await eventually(
            lambda: _rated(history_settings, request_id, "down"), timeout_s=60, what="down stored"
        )
        assert (stored["category"], stored["comment"]) == ("incorrect", "That is not kind at all.")
        turn = await _turn(history_settings, request_id)
        assert turn is not None
        conversation = await http.get(
            f"/v1/conversations/{turn['conversation_id']}", headers=as_alice
        )
        assert conversation.status_code == 200, conversation.text
        [shown] = [t for t in conversation.json()["turns"] if t["request_id"] == request_id]
        assert shown["rating"] == {
            "rating": "down",
            "category": "incorrect",
            "comment": "That is not kind at all.",
        }

        # nobody rates another user's answer; bad bodies name the parameter
        stolen = await http.post(
            "/v1/feedback",
            headers={"Authorization": f"Bearer {bob}"},
            json={"id": completion_id, "rating": "down"},
        )
        assert stolen.status_code == 404 and stolen.json()["error"]["param"] == "id"
        for body, param in (
            ({"id": completion_id, "rating": "sideways"}, "rating"),
            ({"id": completion_id, "rating": "up", "category": "meh"}, "category"),
            ({"id": "x y", "rating": "up"}, "id"),
            ({"rating": "up"}, "id"),
        ):
            bad = await http.post("/v1/feedback", headers=as_alice, json=body)
            assert bad.status_code == 400, (body, bad.text)
            assert bad.json()["error"]["param"] == param, (body, bad.text)
    assert (await _rated(history_settings, request_id, "down")) is not None  # bob changed nothing

    ratings = [
        e
        for e in await read_events(history_settings, TopicName.FEEDBACK, 2)
        if isinstance(e, Rating)
    ]
    assert [(r.rating, r.model, r.user_id) for r in ratings] == [
        ("up", model, ratings[0].user_id),
        ("down", model, ratings[0].user_id),
    ]
    assert all(r.request_id == request_id for r in ratings)


async def test_the_sdk_rates_an_answer_it_streamed_from_the_bus(
    history_settings: Settings, processors: Processors, worker: InferenceWorker
) -> None:
    async with ChatClient(history_settings) as client:
        request = await client.send(
            [{"role": "user", "content": "Hello"}],
            model=history_settings.model.name,
            sampling=SamplingParams(temperature=0, max_tokens=6),
            user_id="sdk-user",
        )
        async for _ in client.chunks(request.request_id, timeout_s=STARTUP_S):
            pass

        async def answered() -> bool:
            turn = await _turn(history_settings, request.request_id)
            return bool(turn and turn.get("answer") is not None)

        await eventually(answered, timeout_s=60, what="the answer recorded")
        rating = await client.feedback(request, "up", category="helpful", comment="Nice.")
    assert (rating.model, rating.user_id) == (history_settings.model.name, "sdk-user")
    stored = await eventually(
        lambda: _rated(history_settings, request.request_id, "up"), timeout_s=60, what="stored"
    )
    assert (stored["category"], stored["comment"]) == ("helpful", "Nice.")
