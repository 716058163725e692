"""Conversation history on the real Kafka, FerretDB and Redis, with the real demo model.

The worker runs in-process; the processors (Faust app, ``chatbus processors``) run as a
subprocess with the test's topic prefix and its own MongoDB database, stopped by PID. The
prompt a worker built is checked through ``usage.prompt_tokens`` of the answer's last chunk,
compared with the model's own chat template applied to the expected conversation.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from chatbus.history import HistoryRepository, context_key
from chatbus.kafka import EventPublisher
from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.request_stream import with_default_system
from inference_consumers.worker import InferenceWorker
from infra.local.redis import find_redis_server
from producers.sdk import ChatClient
from schemas.events import (
    ChatMessage,
    ChatRequest,
    Completion,
    DeadLetter,
    ReplyTo,
    SamplingParams,
    TokenChunk,
)
from schemas.topics import TopicName
from tests.conftest import mongo_database
from tests.integration.processors import (
    STARTUP_S,
    Processors,
    delete_internal_topics,
    stop_processors,
)
from tests.integration.raw_kafka import read_events, send_raw

pytestmark = [pytest.mark.integration, pytest.mark.model]

REPO = Path(__file__).resolve().parents[2]
# rules-only moderation: no model to load; debug logs for the restart test
GREEDY = SamplingParams(temperature=0, max_tokens=12)


# --- services of one test -------------------------------------------------------------------
@pytest.fixture
def repository(history_settings: Settings) -> Iterator[HistoryRepository]:
    repo = HistoryRepository(history_settings)
    yield repo
    repo.close()


@pytest.fixture
def engine(history_settings: Settings) -> TransformersEngine:
    return TransformersEngine(
        history_settings.resolved_model_path,
        model_name=history_settings.model.name,
        device="cpu",
        max_batch=history_settings.worker.max_inflight,
    )


@pytest.fixture
async def worker(
    history_settings: Settings, engine: TransformersEngine
) -> AsyncIterator[InferenceWorker]:
    async with InferenceWorker(history_settings, engine, worker_id="history-worker") as running:
        yield running


@pytest.fixture
async def client(history_settings: Settings) -> AsyncIterator[ChatClient]:
    async with ChatClient(history_settings, reply_partition=1) as chat:
        yield chat


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    try:
        yield server
    finally:
        server.stop()


class PrivateRedis:
    """A redis-server of this test alone, to stop and start at will."""

    def __init__(self, directory: Path) -> None:
        binary = find_redis_server()
        if binary is None:
            pytest.skip("redis-server is not installed")
        self._binary = binary
        self._dir = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self._dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ping = redis.Redis(port=self.port, socket_connect_timeout=0.5)

        def up() -> bool:
            try:
                return bool(ping.ping())
            except redis.RedisError:
                return False

        from chatbus.polling import poll_until

        poll_until(up, timeout_s=20, what="the private redis-server to answer")
        ping.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.proc = None


# --- helpers --------------------------------------------------------------------------------
async def answer(client: ChatClient, request: ChatRequest) -> tuple[str, TokenChunk]:
    chunks = [c async for c in client.chunks(request.request_id, timeout_s=120)]
    assert chunks[-1].finish_reason in {"stop", "length"}, chunks[-1]
    assert chunks[-1].usage is not None
    return "".join(c.text for c in chunks), chunks[-1]


async def ask(
    client: ChatClient,
    settings: Settings,
    content: str,
    *,
    user_id: str,
    follows: ChatRequest | None = None,
) -> tuple[ChatRequest, str, TokenChunk]:
    """Send ``content`` greedily as ``user_id`` (continuing ``follows``'s conversation with its
    history, when given) and wait for the answer: the request, its text and its last chunk."""
    request = await client.send(
        [{"role": "user", "content": content}],
        model=settings.model.name,
        sampling=GREEDY,
        conversation_id=follows.conversation_id if follows is not None else None,
        use_history=follows is not None,
        user_id=user_id,
    )
    text, last = await answer(client, request)
    return request, text, last


def prompt_tokens(engine: TransformersEngine, *messages: tuple[str, str]) -> int:
    """Tokens of the conversation rendered with the model's chat template and the default system
    prompt (what a worker builds)."""
    return len(
        engine.encode_chat(
            with_default_system(
                [{"role": r, "content": c} for r, c in messages],
                Settings().model.default_system_prompt,
            )
        )
    )


async def recorded_turns(
    repository: HistoryRepository, user: str, conversation_id: str, count: int
) -> list[dict[str, Any]] | None:
    """The conversation's turns once ``count`` of them have an answer and a question."""
    found = await asyncio.to_thread(repository.get_conversation, user, conversation_id)
    if found is None:
        return None
    turns = [t for t in found[1] if t.get("answer") is not None and t.get("messages")]
    return found[1] if len(turns) >= count else None


# --- tests ----------------------------------------------------------------------------------
async def test_a_two_turn_conversation_carries_context_right_away_and_is_recorded(
    history_settings: Settings,
    engine: TransformersEngine,
    worker: InferenceWorker,
    client: ChatClient,
    processors: Processors,
    repository: HistoryRepository,
) -> None:
    first, text1, last1 = await ask(client, history_settings, "Hello there", user_id="alice")
    # sent the moment the answer ended: the worker's own cache write makes it visible
    second, text2, last2 = await ask(
        client, history_settings, "Tell me more", user_id="alice", follows=first
    )

    assert last1.usage is not None and last2.usage is not None
    assert last1.usage.prompt_tokens == prompt_tokens(engine, ("user", "Hello there"))
    assert last2.usage.prompt_tokens == prompt_tokens(
        engine, ("user", "Hello there"), ("assistant", text1), ("user", "Tell me more")
    )

    turns = await eventually(
        lambda: recorded_turns(repository, "alice", first.conversation_id, 2),
        timeout_s=STARTUP_S,
        what="both turns in MongoDB",
    )
    assert [t["_id"] for t in turns] == [first.request_id, second.request_id]
    assert [t["answer"] for t in turns] == [text1, text2]
    assert turns[1]["use_history"] is True
    assert turns[1]["usage"]["prompt_tokens"] == last2.usage.prompt_tokens
    (conversation,) = await asyncio.to_thread(repository.list_conversations, "alice")
    assert (conversation.id, conversation.title) == (first.conversation_id, "Hello there")
    assert await eventually(
        lambda: _turn_count(repository, first.conversation_id, 2), timeout_s=30, what="turn_count 2"
    )
    verdicts = await eventually(
        lambda: _verdicts(repository, first.conversation_id),
        timeout_s=STARTUP_S,
        what="the input verdicts recorded",
    )
    assert verdicts == [("allow", False), ("allow", False)]

    # a cold cache: the third turn's context comes from MongoDB, all of it
    cache = redis.Redis.from_url(history_settings.redis.url)
    try:
        assert cache.delete(context_key(history_settings, first.conversation_id)) == 1
    finally:
        cache.close()
    _, _, last3 = await ask(client, history_settings, "Thanks", user_id="alice", follows=first)
    assert last3.usage is not None
    assert last3.usage.prompt_tokens == prompt_tokens(
        engine,
        ("user", "Hello there"),
        ("assistant", text1),
        ("user", "Tell me more"),
        ("assistant", text2),
        ("user", "Thanks"),
    )


async def _verdicts(
    repository: HistoryRepository, conversation_id: str
) -> list[tuple[str, bool]] | None:
    found = await asyncio.to_thread(repository.get_conversation, "alice", conversation_id)
    assert found is not None
    verdicts = [t.get("verdicts", {}).get("input") for t in found[1]]
    if not all(verdicts):
        return None
    return [(v["action"], v["flagged"]) for v in verdicts]


async def _turn_count(repository: HistoryRepository, conversation_id: str, n: int) -> bool:
    conversations = await asyncio.to_thread(repository.list_conversations, "alice")
    return any(c.id == conversation_id and c.turn_count == n for c in conversations)


async def test_with_redis_stopped_chat_still_answers_with_mongodb_context(
    history_settings: Settings,
    private_redis: PrivateRedis,
    tmp_path: Path,
    engine: TransformersEngine,
    repository: HistoryRepository,
) -> None:
    settings = history_settings.replace(**{"redis_url": private_redis.url})
    running = Processors(settings, tmp_path)
    try:
        async with (
            InferenceWorker(settings, engine, worker_id="no-redis-worker") as worker,
            ChatClient(settings, reply_partition=0) as client,
        ):
            first, text1, _ = await ask(client, settings, "Hello there", user_id="bob")
            await eventually(
                lambda: recorded_turns(repository, "bob", first.conversation_id, 1),
                timeout_s=STARTUP_S,
                what="the first turn in MongoDB",
            )
            private_redis.stop()

            _, _, last2 = await ask(client, settings, "Go on", user_id="bob", follows=first)
            assert last2.usage is not None
            assert last2.usage.prompt_tokens == prompt_tokens(
                engine, ("user", "Hello there"), ("assistant", text1), ("user", "Go on")
            )
            assert worker.context.redis_failures > 0
            assert worker.context.mongo_reads >= 1
            await eventually(
                lambda: recorded_turns(repository, "bob", first.conversation_id, 2),
                timeout_s=60,
                what="the second turn recorded without Redis",
            )
    finally:
        stop_processors(running.proc)
        print(running.log_tail())
        await delete_internal_topics(settings)


def synthetic_turn(settings: Settings, n: int) -> tuple[ChatRequest, Completion]:
    conversation = f"conv-restart-{n % 5}"
    request = ChatRequest(
        request_id=f"req-restart-{n:04d}",
        conversation_id=conversation,
        user_id="carol",
        model=settings.model.name,
        messages=[ChatMessage(role="user", content=f"question {n}")],
        reply_to=ReplyTo(partition=0),
        use_history=n >= 5,
    )
    completion = Completion(
        request_id=request.request_id,
        conversation_id=conversation,
        user_id="carol",
        model=settings.model.name,
        text=f"answer {n}",
        finish_reason="stop",
    )
    return request, completion


async def test_restarting_the_processor_mid_traffic_loses_and_duplicates_no_turn(
    history_settings: Settings, processors: Processors, repository: HistoryRepository
) -> None:
    total, before_kill = 60, 24

    async def publish(publisher: EventPublisher, numbers: range) -> None:
        for n in numbers:
            request, completion = synthetic_turn(history_settings, n)
            await publisher.publish(TopicName.REQUESTS, request)
            await publisher.publish(TopicName.COMPLETIONS, completion)

    def turns() -> list[dict[str, Any]]:
        with mongo_database(history_settings) as db:
            return list(db["turns"].find({"user_id": "carol"}))

    async def answered(n: int) -> bool:
        found = await asyncio.to_thread(turns)
        return sum(1 for t in found if t.get("answer") and t.get("messages")) >= n

    async with EventPublisher(history_settings) as publisher:
        await publish(publisher, range(before_kill))
        await eventually(
            lambda: answered(before_kill // 2), timeout_s=STARTUP_S, what="the first turns recorded"
        )
        processors.kill()  # SIGKILL: no clean shutdown, its last offsets not committed
        await publish(publisher, range(before_kill, total - 12))  # traffic during the outage
        processors.start()
        await publish(publisher, range(total - 12, total))
        await eventually(lambda: answered(total), timeout_s=STARTUP_S, what="every turn recorded")

    found = await asyncio.to_thread(turns)
    assert len(found) == total
    assert sorted(t["_id"] for t in found) == [f"req-restart-{n:04d}" for n in range(total)]
    conversations = await asyncio.to_thread(repository.list_conversations, "carol")
    assert {c.id: c.turn_count for c in conversations} == {
        f"conv-restart-{k}": total // 5 for k in range(5)
    }
    assert all(
        c.title == f"question {k}"
        for k, c in sorted((int(c.id.rsplit("-", 1)[1]), c) for c in conversations)
    )


async def test_a_malformed_event_goes_to_the_dlq_and_processing_continues(
    history_settings: Settings, processors: Processors, repository: HistoryRepository
) -> None:
    await send_raw(history_settings, TopicName.COMPLETIONS, b"{not json", key=b"conv-bad")
    request, completion = synthetic_turn(history_settings, 0)
    async with EventPublisher(history_settings) as publisher:
        await publisher.publish(TopicName.REQUESTS, request)
        await publisher.publish(TopicName.COMPLETIONS, completion)
        # another user's conversation: refused, not recorded
        intruder = request.model_copy(update={"request_id": "req-intruder", "user_id": "mallory"})
        await publisher.publish(TopicName.REQUESTS, intruder)

    letters = await read_events(history_settings, TopicName.DLQ, 2, timeout=STARTUP_S)
    by_topic = {
        letter.original_topic: letter
        for letter in letters
        if isinstance(letter, DeadLetter) and letter.consumer == "history"
    }
    assert "Invalid JSON" in by_topic[history_settings.topic(TopicName.COMPLETIONS)].error
    assert "another user" in by_topic[history_settings.topic(TopicName.REQUESTS)].error
    turns = await eventually(
        lambda: recorded_turns(repository, "carol", request.conversation_id, 1),
        timeout_s=60,
        what="the valid turn",
    )
    assert [t["_id"] for t in turns] == [request.request_id]
    assert (
        await asyncio.to_thread(repository.get_conversation, "mallory", request.conversation_id)
        is None
    )
