"""Conversations through the gateway: the official openai SDK continues one by id, each user
sees only their own, and another user's conversation is a 404 exactly like a missing one.

Real Kafka, FerretDB, Redis and demo model: a gateway served in-process, an in-process worker,
the processors (history) as a subprocess.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from openai import OpenAI

from chatbus.history import context_key
from chatbus.history.erase import erase_user_history
from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.worker import InferenceWorker
from tests.integration.gateway_fixtures import RunningGateway, api_key, running_gateway
from tests.integration.processors import STARTUP_S, delete_internal_topics, stop_processors
from tests.integration.test_history import Processors

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture
async def worker(history_settings: Settings) -> AsyncIterator[InferenceWorker]:
    engine = TransformersEngine(
        history_settings.resolved_model_path,
        model_name=history_settings.model.name,
        device="cpu",
        max_batch=history_settings.worker.max_inflight,
    )
    async with InferenceWorker(history_settings, engine, worker_id="gw-conv-worker") as running:
        yield running


@pytest.fixture
async def processors(history_settings: Settings, tmp_path: Path) -> AsyncIterator[Processors]:
    running = Processors(history_settings, tmp_path)
    try:
        yield running
    finally:
        stop_processors(running.proc)
        print(running.log_tail())
        await delete_internal_topics(history_settings)


@pytest.fixture
async def gateway(history_settings: Settings) -> AsyncIterator[RunningGateway]:
    async with running_gateway(history_settings) as running:
        yield running


@pytest.fixture
async def alice(history_settings: Settings) -> AsyncIterator[tuple[str, str]]:
    user = f"alice-{uuid.uuid4().hex[:6]}"
    async with api_key(history_settings, user) as key:
        yield user, key


@pytest.fixture
async def bob(history_settings: Settings) -> AsyncIterator[tuple[str, str]]:
    user = f"bob-{uuid.uuid4().hex[:6]}"
    async with api_key(history_settings, user) as key:
        yield user, key


def chat(client: OpenAI, model: str, content: str, **extra: Any) -> tuple[str, Any]:
    """One non-streaming answer; returns the x-conversation-id header and the completion."""
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": content}],
        max_tokens=8,
        temperature=0,
        extra_body=extra or None,
    )
    return raw.headers["x-conversation-id"], raw.parse()


async def test_list_get_continue_and_delete_own_conversations_and_nobody_elses(
    history_settings: Settings,
    worker: InferenceWorker,
    processors: Processors,
    gateway: RunningGateway,
    alice: tuple[str, str],
    bob: tuple[str, str],
) -> None:
    model = history_settings.model.name
    alice_user, alice_key = alice
    _, bob_key = bob
    sdk = OpenAI(base_url=gateway.base_url, api_key=alice_key, max_retries=0)

    conversation, first = await asyncio.to_thread(chat, sdk, model, "Hello there")
    assert conversation.startswith("conv-")
    again, second = await asyncio.to_thread(
        chat, sdk, model, "Tell me more", conversation_id=conversation
    )
    assert again == conversation
    # the second prompt holds the first turn: far more tokens than its own short message
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens

    as_alice = {"Authorization": f"Bearer {alice_key}"}
    as_bob = {"Authorization": f"Bearer {bob_key}"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:

        async def turns_recorded() -> dict[str, Any] | None:
            response = await http.get(f"/v1/conversations/{conversation}", headers=as_alice)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            done = [t for t in body["turns"] if t["answer"] is not None and t["messages"]]
            return body if len(done) == 2 else None

        detail = await eventually(
            turns_recorded, timeout_s=STARTUP_S, what="both turns in the conversation"
        )
        assert detail["title"] == "Hello there"
        assert [t["messages"][0]["content"] for t in detail["turns"]] == [
            "Hello there",
            "Tell me more",
        ]
        assert [t["answer"] for t in detail["turns"]] == [
            first.choices[0].message.content,
            second.choices[0].message.content,
        ]

        listed = await http.get("/v1/conversations", headers=as_alice)
        assert listed.status_code == 200
        assert [c["id"] for c in listed.json()["data"]] == [conversation]
        assert listed.json()["data"][0]["turn_count"] == 2

        created = await http.post("/v1/conversations", headers=as_alice, json={"title": "Later"})
        assert created.status_code == 200, created.text
        empty = created.json()["id"]
        assert created.headers["x-conversation-id"] == empty
        listed = (await http.get("/v1/conversations", headers=as_alice)).json()["data"]
        assert [c["id"] for c in listed] == [empty, conversation]  # newest first

        # Bob: not his, so it does not exist — for reading, deleting and continuing alike
        missing = f"conv-{uuid.uuid4().hex}"
        for target in (conversation, missing):
            for method in ("GET", "DELETE"):
                response = await http.request(method, f"/v1/conversations/{target}", headers=as_bob)
                assert response.status_code == 404, (method, target, response.text)
                assert response.json()["error"]["code"] == "conversation_not_found"
        assert (await http.get("/v1/conversations", headers=as_bob)).json()["data"] == []
        assert (await http.get("/v1/conversations")).status_code == 401

        bob_sdk = OpenAI(base_url=gateway.base_url, api_key=bob_key, max_retries=0)
        with pytest.raises(openai.NotFoundError) as refused:
            await asyncio.to_thread(chat, bob_sdk, model, "let me in", conversation_id=conversation)
        assert refused.value.code == "conversation_not_found"

        # Alice deletes it: gone from MongoDB and from the context cache
        deleted = await http.delete(f"/v1/conversations/{conversation}", headers=as_alice)
        assert deleted.status_code == 200
        assert deleted.json() == {
            "id": conversation,
            "object": "conversation.deleted",
            "deleted": True,
        }
        assert (
            await http.get(f"/v1/conversations/{conversation}", headers=as_alice)
        ).status_code == 404
        cache = redis.Redis.from_url(history_settings.redis.url)
        try:
            assert cache.exists(context_key(history_settings, conversation)) == 0
        finally:
            cache.close()
        with pytest.raises(openai.NotFoundError):
            await asyncio.to_thread(chat, sdk, model, "still there?", conversation_id=conversation)

        # everything of a user (what `chatbus users delete` does besides the keys)
        assert await erase_user_history(history_settings, alice_user) == [empty]
        assert (await http.get("/v1/conversations", headers=as_alice)).json()["data"] == []


async def test_a_streamed_answer_names_its_conversation(
    history_settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    alice: tuple[str, str],
) -> None:
    _, key = alice
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": history_settings.model.name,
                "stream": True,
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hi"}],
            },
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-conversation-id"].startswith("conv-")
        assert [line async for line in response.aiter_lines() if line][-1] == "data: [DONE]"
