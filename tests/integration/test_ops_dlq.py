"""Reprocessing the dead-letter queue: list why letters are there, republish what is valid now,
skip (and name) what is not, and never republish the same letter twice."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys

import pytest

from chatbus.cli.ops.dlq import REPLAY_HEADER, replay
from chatbus.kafka.factories import make_consumer, partitions_of
from chatbus.kafka.publisher import EventPublisher
from chatbus.settings import Settings
from schemas.events import ChatMessage, ChatRequest, DeadLetter, ReplyTo, parse_event
from schemas.topics import TopicName
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def _letter(
    settings: Settings, value: bytes, *, consumer: str, error: str, offset: int
) -> DeadLetter:
    return DeadLetter(
        original_topic=settings.topic(TopicName.REQUESTS),
        original_partition=0,
        original_offset=offset,
        original_key_b64=base64.b64encode(b"conv-1").decode(),
        original_value_b64=base64.b64encode(value).decode(),
        error=error,
        consumer=consumer,
    )


async def _requests_on_the_bus(settings: Settings) -> list[tuple[bytes, dict[str, bytes]]]:
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = await partitions_of(consumer, settings.topic(TopicName.REQUESTS))
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out = []
        for tp in tps:
            while await consumer.position(tp) < ends[tp]:
                for record in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, []):
                    out.append((record.value, dict(record.headers)))
        return out
    finally:
        await consumer.stop()


async def test_replay_republishes_what_is_valid_now_once_and_skips_the_rest(bus: Settings) -> None:
    request = ChatRequest(
        model="m",
        reply_to=ReplyTo(partition=0),
        conversation_id="conv-1",
        messages=[ChatMessage(role="user", content="hello again")],
    )
    async with EventPublisher(bus) as publisher:
        for letter in (
            _letter(
                bus,
                request.model_dump_json().encode(),
                consumer="history",
                error="MongoDB unavailable: timed out",
                offset=7,
            ),
            _letter(bus, b"{not json", consumer="history", error="invalid event", offset=8),
            _letter(
                bus,
                request.model_dump_json().encode(),
                consumer="inference",
                error="model_not_found",
                offset=9,
            ),
        ):
            await publisher.publish(TopicName.DLQ, letter, key=b"conv-1")

    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "chatbus.cli", "ops", "dlq", "list"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env=os.environ | bus.as_env(),
    )
    assert listed.returncode == 0, listed.stderr
    assert "3 dead letter(s)" in listed.stdout
    assert "history" in listed.stdout and "MongoDB unavailable" in listed.stdout

    dry = await replay(bus, consumer="history", dry_run=True)
    assert len(dry.sent) == 1 and await _requests_on_the_bus(bus) == []

    done = await replay(bus, consumer="history")
    assert len(done.sent) == 1 and done.filtered == 1
    assert len(done.skipped) == 1 and "still invalid" in done.skipped[0]
    republished = await _requests_on_the_bus(bus)
    assert len(republished) == 1
    value, headers = republished[0]
    assert parse_event(value) == request
    assert headers[REPLAY_HEADER] == b"0:0"

    again = await replay(bus, consumer="history")
    assert again.sent == [] and len(await _requests_on_the_bus(bus)) == 1
    other = await replay(bus, consumer="inference", dry_run=True)  # its own position
    assert len(other.sent) == 1
    assert json.loads(value)["request_id"] == request.request_id
