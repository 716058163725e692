"""An inference worker on the real broker, serving the real demo model.

A request goes onto ``chat.requests``; its chunks come back in order on the requester's reply
partition, and the completion on ``chat.completions`` carries the same text, usage and timings.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from chatbus.kafka import make_consumer
from chatbus.kafka.lag import group_lag
from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.worker import InferenceWorker
from producers.sdk import ChatClient, ChatError
from schemas.events import ChatRequest, Completion, DeadLetter, SamplingParams, TokenChunk
from schemas.topics import TopicName
from tests.integration.gateway_fixtures import running_worker
from tests.integration.raw_kafka import read_events, send_raw

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture
async def worker(bus: Settings, demo_model_path: Path) -> AsyncIterator[InferenceWorker]:
    settings = bus.replace(**{"model_path": demo_model_path, "max_inflight": 4})
    async with running_worker(settings, "test-worker") as running:
        yield running


@pytest.fixture
async def client(bus: Settings) -> AsyncIterator[ChatClient]:
    async with ChatClient(bus, reply_partition=1) as chat:
        yield chat


async def test_a_request_streams_ordered_chunks_whose_text_is_the_completion(
    bus: Settings, worker: InferenceWorker, client: ChatClient
) -> None:
    request = await client.send(
        [{"role": "user", "content": "Hello there"}],
        model=bus.model.name,
        sampling=SamplingParams(temperature=0, max_tokens=24),
    )
    chunks = [c async for c in client.chunks(request.request_id, timeout_s=60)]

    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert chunks[-1].finish_reason in {"stop", "length"}
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert len(chunks) > 1, "tokens arrive in several chunks, not all at the end"
    streamed_ids = [t for c in chunks for t in c.token_ids]

    (completion,) = await read_events(bus, TopicName.COMPLETIONS, 1)
    assert isinstance(completion, Completion)
    assert completion.request_id == request.request_id
    assert completion.text == "".join(c.text for c in chunks)
    assert completion.finish_reason == chunks[-1].finish_reason
    assert completion.usage.completion_tokens == len(streamed_ids) > 0
    assert completion.usage.prompt_tokens > 0
    if completion.finish_reason == "length":
        assert completion.usage.completion_tokens == 24
    timings = completion.timings
    assert timings.time_to_first_token_ms is not None
    assert 0 < timings.time_to_first_token_ms <= timings.total_ms
    assert timings.inter_token_mean_ms is not None and timings.inter_token_p99_ms is not None
    assert completion.worker_id == "test-worker"


async def test_a_malformed_message_goes_to_the_dlq_and_the_worker_keeps_serving(
    bus: Settings, worker: InferenceWorker, client: ChatClient
) -> None:
    await send_raw(bus, TopicName.REQUESTS, b"{this is not json", key=b"conv-x")

    (letter,) = await read_events(bus, TopicName.DLQ, 1)
    assert isinstance(letter, DeadLetter)
    assert letter.original_topic == bus.topic(TopicName.REQUESTS)
    assert "Invalid JSON" in letter.error
    assert letter.consumer.startswith("inference:")

    answer = [
        c
        async for c in client.stream(
            [{"role": "user", "content": "still there?"}],
            model=bus.model.name,
            sampling=SamplingParams(max_tokens=4),
        )
    ]
    assert answer[-1].finish_reason in {"stop", "length"}


async def test_bad_sampling_parameters_end_the_stream_with_an_error_naming_them(
    bus: Settings, worker: InferenceWorker, client: ChatClient
) -> None:
    valid = ChatRequest(
        model=bus.model.name, messages=[{"role": "user", "content": "hi"}], reply_to=client.reply_to
    )
    raw = valid.model_dump(mode="json")
    raw["sampling"]["temperature"] = 9.5
    client.watch(valid.request_id)
    await send_raw(
        bus, TopicName.REQUESTS, json.dumps(raw).encode(), key=valid.conversation_id.encode()
    )

    with pytest.raises(ChatError) as err:
        async for _ in client.chunks(valid.request_id, timeout_s=60):
            pass
    assert err.value.info.code == "invalid_request"
    assert "sampling.temperature" in err.value.info.message

    (letter,) = await read_events(bus, TopicName.DLQ, 1)
    assert "sampling.temperature" in letter.error  # type: ignore[attr-defined]


async def test_an_unknown_model_gets_a_clear_error(
    bus: Settings, worker: InferenceWorker, client: ChatClient
) -> None:
    with pytest.raises(ChatError) as err:
        async for _ in client.stream([{"role": "user", "content": "hi"}], model="gpt-nope"):
            pass
    assert err.value.info.code == "model_not_found"
    assert "gpt-nope" in err.value.info.message and bus.model.name in err.value.info.message


async def test_a_prompt_longer_than_the_context_is_refused(
    bus: Settings, worker: InferenceWorker, client: ChatClient
) -> None:
    long_prompt = "word " * 5000
    with pytest.raises(ChatError) as err:
        async for _ in client.stream(
            [{"role": "user", "content": long_prompt}], model=bus.model.name
        ):
            pass
    assert err.value.info.code == "context_length_exceeded"
    assert err.value.info.param == "messages"


async def test_cancel_from_the_control_topic_ends_the_stream_as_cancelled(
    bus: Settings, worker: InferenceWorker, client: ChatClient
) -> None:
    request = await client.send(
        [{"role": "user", "content": "talk for a long time"}],
        model=bus.model.name,
        sampling=SamplingParams(max_tokens=2000, temperature=0),
    )
    chunks: list[TokenChunk] = []
    async for chunk in client.chunks(request.request_id, timeout_s=60):
        chunks.append(chunk)
        if len(chunks) == 1:
            await client.cancel(request.request_id)
    assert chunks[-1].finish_reason == "cancelled"
    assert sum(len(c.token_ids) for c in chunks) < 2000

    async def slot_freed() -> bool:
        return worker.inflight == 0

    await eventually(slot_freed, timeout_s=10, what="the cancelled request's slot to free")


async def test_more_requests_than_slots_wait_on_the_bus_not_in_the_worker(
    bus: Settings, demo_model_path: Path
) -> None:
    settings = bus.replace(**{"max_inflight": 2})
    engine = TransformersEngine(
        demo_model_path, model_name=settings.model.name, device="cpu", max_batch=2
    )
    async with (
        InferenceWorker(settings, engine, worker_id="small") as worker,
        ChatClient(bus) as client,
    ):
        requests = [
            await client.send(
                [{"role": "user", "content": f"question {i}"}],
                model=bus.model.name,
                sampling=SamplingParams(temperature=0, max_tokens=16),
            )
            for i in range(6)
        ]

        async def finish(request_id: str) -> str | None:
            return [c async for c in client.chunks(request_id, timeout_s=60)][-1].finish_reason

        reasons = await asyncio.gather(*(finish(r.request_id) for r in requests))
        assert set(reasons) <= {"stop", "length"}
        assert worker.peak_inflight == 2
        assert worker.admission_pauses >= 1


def conversation_on(partition: int, partitions: int) -> str:
    """A conversation id whose requests the default partitioner puts on ``partition``."""
    choose = DefaultPartitioner()
    every = list(range(partitions))
    return next(
        conversation
        for conversation in (f"conv-rebalance-{uuid.uuid4().hex[:12]}" for _ in range(10_000))
        if choose(conversation.encode(), every, every) == partition
    )


async def long_streams_on_every_partition(
    bus: Settings, client: ChatClient, tokens: int
) -> tuple[list[AsyncIterator[TokenChunk]], list[list[TokenChunk]]]:
    """One greedy ``tokens``-long request per partition; returns once every stream is under way
    (each stream, and its chunks received so far)."""
    partitions = bus.kafka.topic_partitions
    requests = [
        await client.send(
            [{"role": "user", "content": f"a long story {p}"}],
            model=bus.model.name,
            sampling=SamplingParams(temperature=0, max_tokens=tokens),
            conversation_id=conversation_on(p, partitions),
        )
        for p in range(partitions)
    ]
    streams = [client.chunks(r.request_id, timeout_s=120) for r in requests]
    return streams, [[await anext(stream)] for stream in streams]


async def test_a_member_joining_mid_stream_moves_no_stream_the_worker_is_serving(
    bus: Settings, worker: InferenceWorker, client: ChatClient
) -> None:
    """Eager rebalancing revokes every partition; the streams of the partitions the worker gets
    back go on where they were (held while the group decided), and those of the partitions
    another member took go on here too, under their leases: nothing is served twice, each token
    arrives once."""
    partitions = bus.kafka.topic_partitions
    tokens = 600
    streams, received = await long_streams_on_every_partition(bus, client, tokens)

    other = make_consumer(bus, group_id=worker.group, client_id="rebalance-test-member")
    other.subscribe(topics=[bus.topic(TopicName.REQUESTS)])
    await other.start()
    try:

        async def took_some() -> bool:
            return bool(other.assignment())

        await eventually(took_some, timeout_s=60, interval=0.05, what="the second member's share")
        taken = {tp.partition for tp in other.assignment()}
    finally:
        await other.stop()  # it leaves: the worker gets its partitions back

    for chunks, stream in zip(received, streams, strict=True):
        chunks.extend([c async for c in stream])
    for chunks in received:
        assert [c.seq for c in chunks] == list(range(len(chunks))), "each seq once, in order"
        assert chunks[-1].finish_reason == "length"
        assert sum(len(c.token_ids) for c in chunks) == tokens, "no token lost or repeated"
    assert 0 < len(taken) < partitions
    assert worker.held_kept >= partitions - len(taken), "the streams it kept went on"
    assert worker.held_moved == len(taken), "those that moved went on here, under their lease"
    assert worker.held_handed_off == 0 and worker.resumed == 0, "none was served again"


async def test_a_worker_joining_mid_stream_watches_the_moved_streams_and_commits_them(
    bus: Settings, demo_model_path: Path, worker: InferenceWorker, client: ChatClient
) -> None:
    """A second worker (a scale-up, a restarted replica) that takes a partition whose stream the
    first worker serves does not serve it again: it watches the stream's lease until the first
    worker has answered it, then counts its record done, so the group's lag drains to 0."""
    tokens = 400
    streams, received = await long_streams_on_every_partition(bus, client, tokens)

    settings = bus.replace(**{"model_path": demo_model_path, "max_inflight": 4})
    async with running_worker(settings, "newcomer") as newcomer:

        async def took_some() -> bool:
            return bool(newcomer.assignment)

        await eventually(took_some, timeout_s=60, interval=0.05, what="the newcomer's share")
        for chunks, stream in zip(received, streams, strict=True):
            chunks.extend([c async for c in stream])

        async def no_lag() -> bool:
            rows = await group_lag(bus, [worker.group])
            return bool(rows) and sum(r.lag for r in rows) == 0

        await eventually(no_lag, timeout_s=30, interval=0.2, what="the group's lag back to 0")
        assert newcomer.watched >= 1 and newcomer.resumed == 0 and newcomer.completed == 0
    for chunks in received:
        assert [c.seq for c in chunks] == list(range(len(chunks))), "each seq once, in order"
        assert sum(len(c.token_ids) for c in chunks) == tokens, "no token lost or repeated"
        assert {c.worker_id for c in chunks} == {"test-worker"}, "served where it started"
    assert worker.held_moved >= 1 and worker.held_handed_off == 0
