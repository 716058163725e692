"""Output moderation mid-stream on the real broker: a violating answer is stopped through
``chat.control`` with reason ``content_filter``, and the verdict names the stage ``output``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.structs import TopicPartition

from chatbus.kafka import EventPublisher, decode_event, make_consumer
from chatbus.settings import Settings
from schemas.events import CancelRequest, ModerationVerdict, TokenChunk
from schemas.topics import TopicName
from tests.integration.test_moderation_processor import (
    _delete_internal_topics,
    start_processor,
    stop_processor,
)

pytestmark = [pytest.mark.integration, pytest.mark.model]

VIOLATION = "I am going to kill you and your whole family tonight, you will die."


async def first_event(settings: Settings, topic: str, kind: type, timeout_s: float) -> object:
    consumer = make_consumer(settings, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        name = settings.topic(topic)
        consumer.assign([TopicPartition(name, p) for p in range(settings.topic_partitions)]
                        if topic != TopicName.CONTROL else [TopicPartition(name, 0)])

        async def find() -> object:
            async for record in consumer:
                event = decode_event(record.topic, record.value)
                if isinstance(event, kind):
                    return event

        return await asyncio.wait_for(find(), timeout_s)
    finally:
        await consumer.stop()


async def test_a_violating_answer_is_stopped_mid_stream(bus: Settings, tmp_path: Path) -> None:
    proc = start_processor(bus, tmp_path, CHATBUS_MODERATION_OUTPUT_WINDOW_CHARS="24",
                           CHATBUS_MODERATION_OUTPUT_OVERLAP_CHARS="12")
    try:
        async with EventPublisher(bus) as publisher:
            benign = "Here is a friendly answer about gardening and tomatoes. "
            words = (benign + VIOLATION + " And more text follows after that.").split(" ")
            for seq, word in enumerate(words):  # as a worker streams an answer, chunk by chunk
                chunk = TokenChunk(request_id="req-out-1", conversation_id="conv-out-1",
                                   seq=seq, text=word + " ", token_ids=[seq])
                await publisher.publish(TopicName.TOKENS, chunk, partition=0)
        cancel = await first_event(bus, TopicName.CONTROL, CancelRequest, timeout_s=150)
        assert isinstance(cancel, CancelRequest)
        assert cancel.request_id == "req-out-1" and cancel.reason == "content_filter"
        verdict = await first_event(bus, TopicName.MODERATION, ModerationVerdict, timeout_s=30)
        assert isinstance(verdict, ModerationVerdict)
        assert verdict.stage == "output" and verdict.flagged
        assert verdict.action == "stop_generation"
        assert any(hit for c, hit in verdict.categories.items()
                   if c.startswith(("violence", "harassment")))
    finally:
        stop_processor(proc)
        await _delete_internal_topics(bus)
