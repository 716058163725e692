"""Reply routing that scales: each gateway leases its own partition of chat.tokens in Redis."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis.asyncio as aioredis
from aiokafka.structs import TopicPartition

from chatbus.kafka import decode_event, make_consumer
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from producers.gateway.reply_lease import NoFreePartition, ReplyPartitionLease
from schemas.events import TokenChunk
from schemas.topics import TopicName
from tests.integration.gateway_fixtures import RunningGateway, api_key, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.model]


async def request_ids_on(settings: Settings, partition: int, end: int) -> set[str]:
    """The request_ids of every chunk on one partition of chat.tokens, up to offset ``end``."""
    consumer = make_consumer(settings, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(settings.topic(TopicName.TOKENS), partition)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        seen: set[str] = set()
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            for record in batch.get(tp, []):
                event = decode_event(record.topic, record.value, ("chat.token",))
                assert isinstance(event, TokenChunk)
                seen.add(event.request_id)
        return seen
    finally:
        await consumer.stop()


async def end_offsets(settings: Settings) -> dict[int, int]:
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        tps = [
            TopicPartition(settings.topic(TopicName.TOKENS), p)
            for p in range(settings.kafka.topic_partitions)
        ]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def ask(gateway: RunningGateway, key: str, settings: Settings, text: str) -> str:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        response = await http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={
                "model": settings.model.name,
                "max_tokens": 8,
                "temperature": 0,
                "messages": [{"role": "user", "content": text}],
            },
        )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "chatcmpl-" + response.headers["x-request-id"][4:]
    return response.headers["x-request-id"]


async def test_two_gateways_hold_different_partitions_and_see_only_their_streams(
    settings: Settings, worker: InferenceWorker
) -> None:
    async with (
        api_key(settings, f"two-{uuid.uuid4().hex[:8]}") as key,
        running_gateway(settings) as first,
        running_gateway(settings) as second,
    ):
        partitions = {first.runtime.reply_partition, second.runtime.reply_partition}
        assert partitions == {0, 1}  # the bus fixture's chat.tokens has two partitions

        ids = await asyncio.gather(
            *(
                ask(gw, key, settings, f"question {i}")
                for i, gw in enumerate([first, second, first, second])
            )
        )

        ends = await end_offsets(settings)
        for gw, mine in ((first, {ids[0], ids[2]}), (second, {ids[1], ids[3]})):
            partition = gw.runtime.reply_partition
            assert partition is not None
            assert await request_ids_on(settings, partition, ends[partition]) == mine


async def test_a_gateway_finds_no_free_partition_and_says_what_to_do(settings: Settings) -> None:
    redis = aioredis.from_url(settings.redis.url)
    leases = [ReplyPartitionLease(settings, redis, owner=f"gw-{i}") for i in range(3)]
    try:
        taken = {await leases[0].acquire({0, 1}), await leases[1].acquire({0, 1})}
        assert taken == {0, 1}
        with pytest.raises(NoFreePartition) as err:
            await leases[2].acquire({0, 1})
        assert "CHATBUS_TOPIC_PARTITIONS" in str(err.value)
        await leases[0].release()  # a stopped gateway frees its partition at once
        assert await leases[2].acquire({0, 1}) in taken
    finally:
        for lease in leases:
            await lease.release()
        await redis.aclose()
