"""The history repository on the real FerretDB and the context cache on the real Redis."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from chatbus.history import ContextStore, ContextTurn, HistoryRepository, context_key
from chatbus.history.repository import ConversationOwnedByOther
from chatbus.settings import Settings
from schemas.events import ChatMessage, ChatRequest, Completion, ModerationVerdict, ReplyTo
from tests.conftest import mongo_database

pytestmark = [pytest.mark.integration]


@pytest.fixture
def settings(local_services: Settings) -> Iterator[Settings]:
    settings = local_services.replace(
        **{
            "mongo_db": f"hstore_{uuid.uuid4().hex[:10]}",
            "topic_prefix": f"t{uuid.uuid4().hex[:8]}.",
        }
    )
    yield settings
    with mongo_database(settings) as db:
        db.client.drop_database(db.name)


@pytest.fixture
def repository(settings: Settings) -> Iterator[HistoryRepository]:
    repo = HistoryRepository(settings)
    repo.ensure_indexes()
    yield repo
    repo.close()


@pytest.fixture
async def store(settings: Settings, repository: HistoryRepository) -> AsyncIterator[ContextStore]:
    context = ContextStore(settings, repository)
    yield context
    await context.close()


def turn_events(
    n: int, conversation: str = "conv-a", user: str = "dora", *, use_history: bool = True
) -> tuple[ChatRequest, Completion, ModerationVerdict]:
    request = ChatRequest(
        request_id=f"req-{n}",
        conversation_id=conversation,
        user_id=user,
        model="m",
        messages=[ChatMessage(role="user", content=f"q{n}")],
        reply_to=ReplyTo(partition=0),
        use_history=use_history,
    )
    completion = Completion(
        request_id=request.request_id,
        conversation_id=conversation,
        user_id=user,
        model="m",
        text=f"a{n}",
        finish_reason="stop",
    )
    verdict = ModerationVerdict(
        request_id=request.request_id,
        conversation_id=conversation,
        user_id=user,
        stage="input",
        flagged=False,
    )
    return request, completion, verdict


def snapshot(settings: Settings) -> dict[str, Any]:
    with mongo_database(settings) as db:
        return {
            "conversations": list(db["conversations"].find().sort("_id")),
            "turns": list(db["turns"].find().sort("_id")),
        }


def test_replaying_every_event_in_any_order_changes_nothing(
    repository: HistoryRepository, settings: Settings
) -> None:
    events = [turn_events(1, use_history=False), turn_events(2)]
    request1, completion1, verdict1 = events[0]
    request2, completion2, verdict2 = events[1]
    # the answer before its question, the verdict in between
    repository.record_completion(completion1)
    repository.record_verdict(verdict1)
    repository.record_request(request1)
    repository.record_request(request2)
    repository.record_completion(completion2)
    repository.record_verdict(verdict2)
    first = snapshot(settings)
    for request, completion, verdict in events:  # a replay after a crash
        repository.record_request(request)
        repository.record_verdict(verdict)
        repository.record_completion(completion)
    assert snapshot(settings) == first
    (conversation,) = first["conversations"]
    assert (conversation["turn_ids"], conversation["title"]) == (["req-1", "req-2"], "q1")
    assert [t["answer"] for t in first["turns"]] == ["a1", "a2"]
    assert [t["created_us"] for t in first["turns"]] == [
        int(r.created_at.timestamp() * 1_000_000) for r in (request1, request2)
    ]
    assert [t.request_id for t in repository.context_turns("conv-a")] == ["req-1", "req-2"]


def test_a_nul_character_in_any_text_is_stored_and_found_as_a_replacement_character(
    repository: HistoryRepository, settings: Settings
) -> None:
    """PostgreSQL under FerretDB cannot hold U+0000: one in a message made every write of its
    turn fail, and the history agent retried it for ever (make fuzz found it)."""
    request, completion, verdict = turn_events(1, conversation="conv-nul")
    request = request.model_copy(
        update={"messages": [ChatMessage(role="user", content="before\x00after")]}
    )
    completion = completion.model_copy(update={"text": "an answer\x00with a NUL"})
    repository.record_request(request)
    repository.record_completion(completion)
    repository.record_verdict(verdict)
    (turn,) = snapshot(settings)["turns"]
    assert turn["messages"][0]["content"] == "before\ufffdafter"
    assert turn["answer"] == "an answer\ufffdwith a NUL"
    assert [t.answer for t in repository.context_turns("conv-nul")] == [turn["answer"]]
    assert repository.claim_conversation("dora", "conv-titled", title="p\x00\u00d8")
    titles = {c.id: c.title for c in repository.list_conversations("dora")}
    assert titles == {"conv-nul": "before\ufffdafter", "conv-titled": "p\ufffd\u00d8"}


def test_a_conversation_belongs_to_its_first_user(repository: HistoryRepository) -> None:
    request, _, _ = turn_events(1)
    repository.record_request(request)
    intruder = request.model_copy(update={"request_id": "req-x", "user_id": "eve"})
    with pytest.raises(ConversationOwnedByOther):
        repository.record_request(intruder)
    assert repository.get_conversation("eve", "conv-a") is None
    assert not repository.delete_conversation("eve", "conv-a")
    assert repository.list_conversations("eve") == []
    assert repository.delete_conversation("dora", "conv-a")
    assert repository.get_conversation("dora", "conv-a") is None


async def test_a_partial_cache_merges_with_mongodb_and_is_then_complete(
    repository: HistoryRepository, store: ContextStore, settings: Settings
) -> None:
    request1, completion1, _ = turn_events(1, use_history=False)
    repository.record_request(request1)
    repository.record_completion(completion1)
    # the worker's turn 2 reached Redis; the processor has not recorded it yet
    turn2 = ContextTurn(
        request_id="req-2",
        created_at=completion1.created_at.timestamp() + 1,
        messages=(ChatMessage(role="user", content="q2"),),
        answer="a2",
        finish_reason="stop",
        use_history=True,
    )
    await store.append("conv-a", turn2, newest=True)
    turns = await store.load("conv-a", exclude="req-3")
    assert [t.request_id for t in turns] == ["req-1", "req-2"]
    assert store.mongo_reads == 1
    assert [t.request_id for t in await store.load("conv-a")] == ["req-1", "req-2"]
    assert store.mongo_reads == 1  # served by the now complete cache

    await store.forget("conv-a")
    client = aioredis.from_url(settings.redis.url)
    try:
        assert await client.exists(context_key(settings, "conv-a")) == 0
    finally:
        await client.aclose()


async def test_without_redis_the_context_comes_from_mongodb(
    repository: HistoryRepository, settings: Settings
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = settings.replace(**{"redis_url": f"redis://127.0.0.1:{port}/0"})
    store = ContextStore(down, repository)
    try:
        request1, completion1, _ = turn_events(1, use_history=False)
        repository.record_request(request1)
        repository.record_completion(completion1)
        assert [t.answer for t in await store.load("conv-a")] == ["a1"]
        await store.append(
            "conv-a",
            ContextTurn.from_document(
                {
                    "_id": "req-9",
                    "messages": [{"role": "user", "content": "q"}],
                    "answer": "a",
                    "finish_reason": "stop",
                }
            ),
            newest=True,
        )  # no error: just skipped
        assert store.redis_failures >= 2 and store.mongo_reads == 1
    finally:
        await store.close()
