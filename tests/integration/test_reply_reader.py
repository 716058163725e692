"""A worker that takes over streams reads back what each one already streamed: one read of the
reply partitions serves every request that asks at once, and each gets its own chunks."""

from __future__ import annotations

import asyncio

from chatbus.kafka import EventPublisher
from chatbus.settings import Settings
from inference_consumers.resume import ReplyReader
from schemas.events import TokenChunk
from schemas.topics import TopicName


def chunk(request_id: str, seq: int, text: str, *, last: bool = False) -> TokenChunk:
    return TokenChunk(
        request_id=request_id,
        conversation_id=f"conv-{request_id}",
        seq=seq,
        text=text,
        token_ids=[100 + seq],
        finish_reason="stop" if last else None,
    )


async def test_requests_that_ask_at_once_share_one_read_and_get_their_own_chunks(
    bus: Settings,
) -> None:
    async with EventPublisher(bus) as publisher:
        for seq in range(3):  # two streams interleaved on partition 0, one on partition 1
            await publisher.publish(TopicName.TOKENS, chunk("a", seq, f"a{seq} "), partition=0)
            await publisher.publish(TopicName.TOKENS, chunk("b", seq, f"b{seq} "), partition=0)
        await publisher.publish(TopicName.TOKENS, chunk("b", 4, "after a hole "), partition=0)
        await publisher.publish(TopicName.TOKENS, chunk("c", 0, "c0 "), partition=1)
        await publisher.publish(TopicName.TOKENS, chunk("c", 1, "c1", last=True), partition=1)
    reader = ReplyReader(bus)
    await reader.start()
    try:
        since_ms = 0
        a, b, c, nothing = await asyncio.gather(
            reader.published_so_far(0, "a", since_ms),
            reader.published_so_far(0, "b", since_ms),
            reader.published_so_far(1, "c", since_ms),
            reader.published_so_far(1, "never-streamed", since_ms),
        )
        assert reader.reads == 1
        assert (a.text, a.next_seq, a.token_ids) == ("a0 a1 a2 ", 3, [100, 101, 102])
        assert a.finish_reason is None
        assert (b.text, b.next_seq) == ("b0 b1 b2 ", 3)  # seq 4 is past a missing seq 3
        assert (c.text, c.next_seq, c.finish_reason) == ("c0 c1", 2, "stop")
        assert (nothing.text, nothing.next_seq) == ("", 0)
        again = await reader.published_so_far(0, "a", since_ms)  # a later ask reads again
        assert reader.reads == 2 and again == a
    finally:
        await reader.stop()
