"""The archiver against the real broker and the real S3 endpoint: every offset once, redacted."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from chatbus.health import Health
from chatbus.kafka.lag import group_offsets, log_offsets
from chatbus.kafka.publisher import EventPublisher
from chatbus.kafka.topic_setup import ensure_topics
from chatbus.object_store import ObjectStore
from chatbus.polling import eventually, poll_until
from chatbus.settings import Settings
from infra.local import manager
from schemas.archive import ManifestEntry, PendingRange, manifest_prefix, parse_object_key
from schemas.events import (
    ChatMessage,
    ChatRequest,
    Completion,
    Rating,
    ReplyTo,
    TokenChunk,
    Usage,
)
from schemas.topics import TopicName
from stream_processors.archiver.archiver import Archiver
from stream_processors.archiver.verify import broker_positions, verify_archive
from tests.integration.private_stack import private_settings
from tests.integration.processors import start_cli

pytestmark = pytest.mark.integration


@pytest.fixture
def archive_settings(bus: Settings) -> Iterator[Settings]:
    """The test's topics, an archive prefix of its own (deleted afterwards), quick flushes."""
    settings = bus.replace(
        **{
            "archive_prefix": f"test-{uuid.uuid4().hex[:10]}",
            "archive_flush_s": 0.3,
            "session_timeout_ms": 6000,
        }
    )
    yield settings
    ObjectStore(settings).delete_prefix(settings.archive.prefix + "/")


def _objects(settings: Settings) -> dict[str, list[dict[str, object]]]:
    """Every archive object's records, by key (manifest and pending files left out)."""
    store = ObjectStore(settings)
    out = {}
    for key, _ in store.list(settings.archive.prefix + "/topic="):
        body = store.get(key)
        assert body is not None
        out[key] = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    return out


def _completion(i: int, text: str = "fine") -> Completion:
    return Completion(
        request_id=f"req-{i}",
        conversation_id=f"conv-{i % 7}",
        model="m",
        text=text,
        finish_reason="stop",
        usage=Usage(prompt_tokens=3, completion_tokens=5, total_tokens=8),
    )


async def test_every_event_is_archived_once_in_the_documented_layout_and_redacted(
    archive_settings: Settings,
) -> None:
    settings = archive_settings
    request = ChatRequest(
        model="m",
        reply_to=ReplyTo(partition=0),
        messages=[
            ChatMessage(role="user", content="write to ada@example.com about card 4111111111111111")
        ],
    )
    async with EventPublisher(settings) as publisher:
        await publisher.publish(TopicName.REQUESTS, request, key=request.conversation_id)
        for i in range(40):
            await publisher.publish(TopicName.COMPLETIONS, _completion(i), key=f"conv-{i % 7}")
        await publisher.publish(
            TopicName.TOKENS,
            TokenChunk(
                request_id="req-1", conversation_id="conv-1", seq=0, text="call 415-555-0100"
            ),
            key="req-1",
        )
        streamed = ["pay with ", "4111", " 1111", " 1111", " 1111", " ok"]  # as a worker streams
        for seq, text in enumerate(streamed):
            await publisher.publish(
                TopicName.TOKENS,
                TokenChunk(
                    request_id="req-2",
                    conversation_id="conv-2",
                    seq=seq,
                    text=text,
                    token_ids=[seq],
                    finish_reason="stop" if seq == len(streamed) - 1 else None,
                ),
                key="req-2",
            )
        rating = Rating(
            request_id=request.request_id,
            conversation_id=request.conversation_id,
            user_id="u",
            model="m",
            rating="down",
            category="incorrect",
            comment="wrong, write to ada@example.com",
        )
        await publisher.publish(TopicName.FEEDBACK, rating, key=request.conversation_id)
        await publisher.producer.send_and_wait(
            settings.topic(TopicName.DLQ), b"\xffnot json", key=b"k"
        )
        deep = b'{"type": "chat.dead_letter", "x": ' + b"[" * 300 + b"]" * 300 + b"}"
        await publisher.producer.send_and_wait(settings.topic(TopicName.DLQ), deep, key=b"d")

    health = Health("archiver")
    async with Archiver(settings, health=health) as archiver:
        await eventually(
            lambda: _archived_count(archiver, 51), timeout_s=60, what="51 records archived"
        )
        assert health.readiness()[0]

    objects = _objects(settings)
    records = [r for rs in objects.values() for r in rs]
    assert len(records) == 51
    coordinates = Counter(
        (r["kafka_topic"], r["kafka_partition"], r["kafka_offset"]) for r in records
    )
    assert max(coordinates.values()) == 1
    for key in objects:
        parts = parse_object_key(key)
        assert parts is not None and key.startswith(f"{settings.archive.prefix}/topic=")
    by_topic = Counter(r["kafka_topic"] for r in records)
    assert by_topic == {
        "chat.completions": 40,
        "chat.requests": 1,
        "chat.tokens": 7,
        "chat.feedback": 1,
        "chat.dlq": 2,
    }
    archived_rating = next(r for r in records if r["kafka_topic"] == "chat.feedback")
    assert (archived_rating["type"], archived_rating["rating"]) == ("chat.rating", "down")
    assert archived_rating["comment"] == "wrong, write to [REDACTED:email]"
    archived_request = next(r for r in records if r["kafka_topic"] == "chat.requests")
    assert archived_request["request_id"] == request.request_id
    assert archived_request["messages"][0]["content"] == (  # type: ignore[index]
        "write to [REDACTED:email] about card [REDACTED:payment_card]"
    )
    assert archived_request["kafka_headers"]["event-type"] == "chat.request"  # type: ignore[index]
    chunks = [r for r in records if r["kafka_topic"] == "chat.tokens"]
    chunk = next(r for r in chunks if r["request_id"] == "req-1")
    assert chunk["text"] == "call [REDACTED:phone]"
    card = sorted(
        (r for r in chunks if r["request_id"] == "req-2"), key=lambda r: int(str(r["seq"]))
    )
    assert "".join(str(r["text"]) for r in card) == (
        "pay with " + "[REDACTED:payment_card]" * 4 + " ok"
    )
    assert [r["token_ids"] for r in card] == [[0], [], [], [], [], [5]]
    dlq = {r["kafka_key"]: r for r in records if r["kafka_topic"] == "chat.dlq"}
    garbage, too_deep = dlq["k"], dlq["d"]
    assert garbage["invalid"] and garbage["raw_b64"] == "/25vdCBqc29u"
    # parsed as an event, but nested deeper than the JSON writer goes: archived raw, not a crash
    assert too_deep["invalid"] == "TypeError: Recursion limit reached" and too_deep["raw_b64"]

    report = verify_archive(settings, broker=await broker_positions(settings))
    assert report.ok, report.as_dict()
    assert report.records == 51


async def _archived_count(archiver: Archiver, wanted: int) -> bool:
    return archiver.archived_records >= wanted


def _start_archiver(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = (
        os.environ
        | settings.replace(
            archive_flush_bytes=1024,  # a flush every few records: kills land in one
            archive_flush_s=0.2,
            session_timeout_ms=6000,
            log_json=False,
        ).as_env()
    )
    return start_cli("archiver", env, log)


def _manifest(settings: Settings) -> list[ManifestEntry]:
    store = ObjectStore(settings)
    out = []
    for key, _ in store.list(manifest_prefix(settings.archive.prefix)):
        raw = store.get(key)
        if raw is not None:
            out.append(ManifestEntry.model_validate_json(raw))
    return out


def _unfinished_flushes(settings: Settings, committed: dict[TopicPartition, int]) -> int:
    """Pending ranges whose offsets were not committed: a flush the kill interrupted."""
    store = ObjectStore(settings)
    count = 0
    for key, _ in store.list(f"{settings.archive.prefix}/_pending/"):
        raw = store.get(key)
        assert raw is not None
        pending = PendingRange.model_validate_json(raw)
        tp = TopicPartition(settings.topic(pending.topic), pending.partition)
        if committed.get(tp, 0) <= pending.first_offset:
            count += 1
    return count


async def test_sigkill_in_the_middle_of_a_flush_then_restart_archives_every_offset_once(
    archive_settings: Settings, tmp_path: Path
) -> None:
    settings = archive_settings
    async with EventPublisher(settings) as publisher:
        for i in range(1500):
            await publisher.send(
                TopicName.COMPLETIONS, _completion(i, "x" * 200), key=f"conv-{i % 7}"
            )
        await publisher.producer.flush()
    topic = settings.topic(TopicName.COMPLETIONS)
    group = settings.topic(settings.archive.group)
    _, ends = await log_offsets(settings, [topic])
    total = sum(ends.values())
    assert total == 1500

    kills, interrupted = 0, 0
    while kills < 6 and (kills < 2 or not interrupted):
        before = len(_manifest(settings))
        proc = _start_archiver(settings, tmp_path / "archiver.log")

        def three_more_or_exited(proc: subprocess.Popen[bytes] = proc, b: int = before) -> bool:
            return len(_manifest(settings)) >= b + 3 or proc.poll() is not None

        try:
            poll_until(
                three_more_or_exited,
                timeout_s=90,
                interval=0.02,
                what="three more objects archived",
            )
            assert proc.poll() is None, (tmp_path / "archiver.log").read_text()[-3000:]
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        kills += 1
        interrupted += _unfinished_flushes(settings, await group_offsets(settings, group))
    assert interrupted, "no kill landed between a pending range and its commit"

    proc = _start_archiver(settings, tmp_path / "archiver.log")
    try:

        async def done() -> bool:
            committed = await group_offsets(settings, group)
            return all(committed.get(tp) == end for tp, end in ends.items())

        await eventually(done, timeout_s=120, interval=0.2, what="every offset committed")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0, (tmp_path / "archiver.log").read_text()[-3000:]

    seen = Counter(
        (r["kafka_partition"], r["kafka_offset"])
        for records in _objects(settings).values()
        for r in records
    )
    expected = {(tp.partition, offset) for tp, end in ends.items() for offset in range(end)}
    assert set(seen) == expected
    assert [c for c in seen.values() if c != 1] == []
    report = verify_archive(settings, broker=await broker_positions(settings))
    assert report.ok, report.as_dict()
    assert report.records == total


async def test_an_archive_lost_with_the_local_object_store_is_rebuilt_from_kafka(
    tmp_path: Path,
) -> None:
    """moto keeps objects in memory, Kafka keeps its log on disk: after the local S3 restarts
    empty, the archiver finds no trace of partitions its group committed and archives them again
    from the log's start."""
    settings = private_settings(tmp_path / "state", archive_flush_s=0.3, session_timeout_ms=6000)
    try:
        await asyncio.to_thread(manager.up, settings, ["kafka", "s3"])
        await ensure_topics(settings)
        async with EventPublisher(settings) as publisher:
            for i in range(30):
                await publisher.publish(TopicName.COMPLETIONS, _completion(i), key=f"conv-{i}")
        async with Archiver(settings) as archiver:
            await eventually(
                lambda: _archived_count(archiver, 30), timeout_s=60, what="30 records archived"
            )
        before = _lines(settings)
        assert len(before) == 30

        await asyncio.to_thread(manager.down, settings, ["s3"])
        await asyncio.to_thread(manager.up, settings, ["s3"])  # empty again
        assert _objects(settings) == {}
        async with Archiver(settings) as archiver:
            await eventually(
                lambda: _archived_count(archiver, 30),
                timeout_s=60,
                what="the 30 records archived again",
            )
        assert _lines(settings) == before  # offset for offset, line for line
        report = verify_archive(settings, broker=await broker_positions(settings))
        assert report.ok and report.records == 30, report.as_dict()
    finally:
        await asyncio.to_thread(manager.down, settings)


def _lines(settings: Settings) -> list[dict[str, object]]:
    records = [r for rs in _objects(settings).values() for r in rs]
    return sorted(records, key=lambda r: (r["kafka_partition"], r["kafka_offset"]))
