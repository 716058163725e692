"""Conversations through the gateway: the official openai SDK continues one by id, each user
sees only their own, and another user's conversation is a 404 exactly like a missing one.

Real Kafka, FerretDB, Redis and demo model: a gateway served in-process, an in-process worker,
the processors (history) as a subprocess.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
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
from inference_consumers.worker import InferenceWorker
from tests.integration.gateway_fixtures import (
    RunningGateway,
    api_key,
    running_gateway,
    running_worker,
)
from tests.integration.processors import (
    STARTUP_S,
    Processors,
)

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture
async def worker(history_settings: Settings) -> AsyncIterator[InferenceWorker]:
    async with running_worker(history_settings, "gw-conv-worker") as running:
        yield running


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


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def claimed(http: httpx.AsyncClient, key: str, conversation: str) -> dict[str, Any]:
    """The conversation as its owner reads it, once the gateway's claim has landed."""

    async def readable() -> dict[str, Any] | None:
        response = await http.get(f"/v1/conversations/{conversation}", headers=bearer(key))
        return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]

    return await eventually(readable, timeout_s=30, what=f"{conversation} claimed")


async def test_a_conversation_continues_by_id_and_both_turns_are_recorded(
    history_settings: Settings,
    worker: InferenceWorker,
    processors: Processors,
    gateway: RunningGateway,
    alice: tuple[str, str],
) -> None:
    model = history_settings.model.name
    sdk = OpenAI(base_url=gateway.base_url, api_key=alice[1], max_retries=0)
    conversation, first = await asyncio.to_thread(chat, sdk, model, "Hello there")
    assert conversation.startswith("conv-")
    again, second = await asyncio.to_thread(
        chat, sdk, model, "Tell me more", conversation_id=conversation
    )
    assert again == conversation
    # the second prompt holds the first turn: far more tokens than its own short message
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens

    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:

        async def turns_recorded() -> dict[str, Any] | None:
            body = await claimed(http, alice[1], conversation)
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
        listed = await http.get("/v1/conversations", headers=bearer(alice[1]))
        assert listed.status_code == 200
        assert [(c["id"], c["turn_count"]) for c in listed.json()["data"]] == [(conversation, 2)]


async def test_a_created_conversation_is_listed_first(
    history_settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    alice: tuple[str, str],
) -> None:
    sdk = OpenAI(base_url=gateway.base_url, api_key=alice[1], max_retries=0)
    conversation, _ = await asyncio.to_thread(chat, sdk, history_settings.model.name, "Hi")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        await claimed(http, alice[1], conversation)
        created = await http.post(
            "/v1/conversations", headers=bearer(alice[1]), json={"title": "Later"}
        )
        assert created.status_code == 200, created.text
        empty = created.json()["id"]
        assert created.headers["x-conversation-id"] == empty
        listed = (await http.get("/v1/conversations", headers=bearer(alice[1]))).json()["data"]
    assert [c["id"] for c in listed] == [empty, conversation]


async def test_another_users_conversation_is_a_404_exactly_like_a_missing_one(
    history_settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    alice: tuple[str, str],
    bob: tuple[str, str],
) -> None:
    model = history_settings.model.name
    sdk = OpenAI(base_url=gateway.base_url, api_key=alice[1], max_retries=0)
    conversation, _ = await asyncio.to_thread(chat, sdk, model, "Hello there")
    missing = f"conv-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        await claimed(http, alice[1], conversation)
        for target in (conversation, missing):
            for method in ("GET", "DELETE"):
                response = await http.request(
                    method, f"/v1/conversations/{target}", headers=bearer(bob[1])
                )
                assert response.status_code == 404, (method, target, response.text)
                assert response.json()["error"]["code"] == "conversation_not_found"
        assert (await http.get("/v1/conversations", headers=bearer(bob[1]))).json()["data"] == []
        assert (await http.get("/v1/conversations")).status_code == 401
        await claimed(http, alice[1], conversation)  # bob's DELETE left it alone

    bob_sdk = OpenAI(base_url=gateway.base_url, api_key=bob[1], max_retries=0)
    with pytest.raises(openai.NotFoundError) as refused:
        await asyncio.to_thread(chat, bob_sdk, model, "let me in", conversation_id=conversation)
    assert refused.value.code == "conversation_not_found"


async def test_a_deleted_conversation_is_gone_from_the_store_and_the_context_cache(
    history_settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    alice: tuple[str, str],
) -> None:
    model = history_settings.model.name
    sdk = OpenAI(base_url=gateway.base_url, api_key=alice[1], max_retries=0)
    conversation, _ = await asyncio.to_thread(chat, sdk, model, "Hello there")
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        await claimed(http, alice[1], conversation)
        deleted = await http.delete(f"/v1/conversations/{conversation}", headers=bearer(alice[1]))
        assert deleted.status_code == 200
        assert deleted.json() == {
            "id": conversation,
            "object": "conversation.deleted",
            "deleted": True,
        }
        gone = await http.get(f"/v1/conversations/{conversation}", headers=bearer(alice[1]))
        assert gone.status_code == 404
    cache = redis.Redis.from_url(history_settings.redis.url)
    try:
        assert cache.exists(context_key(history_settings, conversation)) == 0
    finally:
        cache.close()
    with pytest.raises(openai.NotFoundError):
        await asyncio.to_thread(chat, sdk, model, "still there?", conversation_id=conversation)


async def test_erasing_a_user_removes_all_their_conversations(
    history_settings: Settings,
    gateway: RunningGateway,
    alice: tuple[str, str],
) -> None:
    """What `chatbus users delete` does besides revoking the keys."""
    user, key = alice
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        made = []
        for title in ("one", "two"):
            created = await http.post(
                "/v1/conversations", headers=bearer(key), json={"title": title}
            )
            made.append(created.json()["id"])
        assert sorted(await erase_user_history(history_settings, user)) == sorted(made)
        assert (await http.get("/v1/conversations", headers=bearer(key))).json()["data"] == []


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
