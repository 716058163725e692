"""Output moderation mid-stream on the real broker: a violating answer is stopped through
``chat.control`` with reason ``content_filter``, and the verdict names the stage ``output``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from chatbus.kafka import EventPublisher, decode_event
from chatbus.settings import Settings
from inference_consumers.engine.scripted import ScriptedEngine
from inference_consumers.worker import InferenceWorker
from producers.sdk import ChatClient
from schemas.events import CancelRequest, ModerationVerdict, SamplingParams, TokenChunk
from schemas.topics import TopicName
from tests.integration.processors import (
    delete_internal_topics,
    start_processors,
    stop_processors,
)
from tests.integration.raw_kafka import reading_from_start

pytestmark = [pytest.mark.integration, pytest.mark.model]

STEP_S = 0.005  # the scripted model decodes 200 tokens/s
VIOLATION = "I am going to kill you and your whole family tonight, you will die."


async def first_event(settings: Settings, topic: str, kind: type, timeout_s: float) -> object:
    async with reading_from_start(settings, topic) as consumer:

        async def find() -> object:
            async for record in consumer:
                event = decode_event(record.topic, record.value)
                if isinstance(event, kind):
                    return event
            raise AssertionError(f"{topic} ended without a {kind.__name__}")

        return await asyncio.wait_for(find(), timeout_s)


async def test_a_violating_answer_is_stopped_mid_stream(bus: Settings, tmp_path: Path) -> None:
    proc = start_processors(
        bus,
        tmp_path,
        CHATBUS_MODERATION_OUTPUT_WINDOW_CHARS="24",
        CHATBUS_MODERATION_OUTPUT_OVERLAP_CHARS="12",
    )
    try:
        async with EventPublisher(bus) as publisher:
            benign = "Here is a friendly answer about gardening and tomatoes. "
            words = (benign + VIOLATION + " And more text follows after that.").split(" ")
            for seq, word in enumerate(words):  # as a worker streams an answer, chunk by chunk
                chunk = TokenChunk(
                    request_id="req-out-1",
                    conversation_id="conv-out-1",
                    seq=seq,
                    text=word + " ",
                    token_ids=[seq],
                )
                await publisher.publish(TopicName.TOKENS, chunk, partition=0)
        cancel = await first_event(bus, TopicName.CONTROL, CancelRequest, timeout_s=150)
        assert isinstance(cancel, CancelRequest)
        assert cancel.request_id == "req-out-1" and cancel.reason == "content_filter"
        verdict = await first_event(bus, TopicName.MODERATION, ModerationVerdict, timeout_s=30)
        assert isinstance(verdict, ModerationVerdict)
        assert verdict.stage == "output" and verdict.flagged
        assert verdict.action == "stop_generation"
        assert any(
            hit for c, hit in verdict.categories.items() if c.startswith(("violence", "harassment"))
        )
    finally:
        stop_processors(proc)
        print((tmp_path / "processors.log").read_text(errors="replace")[-3000:])
        await delete_internal_topics(bus)


async def test_an_output_violation_cuts_the_stream_and_stops_generation(
    bus: Settings, tmp_path: Path
) -> None:
    benign = "Tomatoes like sun and water; prune them weekly and they thrive. " * 2
    tail = " Anyway, here is a long and harmless paragraph about gardening. " * 12
    engine = ScriptedEngine(benign + VIOLATION + tail, step_s=STEP_S)  # 200 tokens/s
    settings = bus.replace(**{"model_name": "scripted"})
    proc = start_processors(
        bus,
        tmp_path,
        CHATBUS_MODERATION_OUTPUT_WINDOW_CHARS="32",
        CHATBUS_MODERATION_OUTPUT_OVERLAP_CHARS="28",
        CHATBUS_MODERATION_CLASSIFIER="rules",
    )
    try:
        async with (
            InferenceWorker(settings, engine, worker_id="scripted"),
            ChatClient(bus) as client,
        ):
            # the processor is up once it has judged a request (its agents join together)
            await client.send([{"role": "user", "content": "warm up"}], model="none")
            await first_event(bus, TopicName.MODERATION, ModerationVerdict, timeout_s=150)
            chunks = [
                c
                async for c in client.stream(
                    [{"role": "user", "content": "tell me about tomatoes"}],
                    model="scripted",
                    sampling=SamplingParams(max_tokens=2000),
                )
            ]
        text = "".join(c.text for c in chunks)
        assert chunks[-1].finish_reason == "content_filter"
        assert text.startswith(benign) and VIOLATION[:20] in text
        offending_end = len((benign + "I am going to kill you").encode())
        past = len(text.encode()) - offending_end
        assert engine.generated < engine.script_tokens, "generation stopped early"
        print(
            f"tokens past the offending phrase: {past} (judged every 32 characters, "
            f"{1 / STEP_S:.0f} tokens/s)"
        )
        assert past < 48, f"{past} tokens reached the client after the offending phrase"
    finally:
        stop_processors(proc)
        print((tmp_path / "processors.log").read_text(errors="replace")[-3000:])
        await delete_internal_topics(bus)
