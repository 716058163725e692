"""Dead-letter routing: a message a consumer cannot process goes to ``chat.dlq`` with the reason.

:func:`send_to_dlq` is the one way there for every consumer (worker, moderation, history): it
waits for the broker's ack (so the caller may commit after it) and counts
``chatbus_dead_letters_total{consumer, topic}``. :func:`reject_request` adds what a request's
consumer owes its requester: an ``invalid_request`` chunk on the reply partition, when the
message says where that is.
"""

from __future__ import annotations

import base64
import json
from typing import Protocol

from chatbus.kafka.publisher import EventPublisher
from chatbus.logging import get_logger
from chatbus.metrics import DEAD_LETTERS
from schemas.events import DeadLetter, ErrorInfo, ReplyTo, TokenChunk
from schemas.topics import TopicName

log = get_logger(__name__)

__all__ = ["Consumed", "dead_letter_for", "reject_request", "reply_address", "send_to_dlq"]


class Consumed(Protocol):
    """What a dead letter keeps of a consumed message (an aiokafka record, a Faust message)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def dead_letter_for(record: Consumed, *, error: str, consumer: str) -> DeadLetter:
    return DeadLetter(
        original_topic=record.topic,
        original_partition=record.partition,
        original_offset=record.offset,
        original_key_b64=base64.b64encode(record.key).decode() if record.key else None,
        original_value_b64=base64.b64encode(record.value or b"").decode(),
        error=error,
        consumer=consumer,
    )


async def send_to_dlq(
    publisher: EventPublisher,
    record: Consumed,
    *,
    error: str,
    consumer: str,
    member: str | None = None,
) -> None:
    """Publish the dead letter and wait for the broker's ack before the caller commits.

    ``consumer`` names the component (the metric's label); ``member``, when given, the instance
    (the letter says ``consumer:member``, so an operator finds the process's log).
    """
    who = f"{consumer}:{member}" if member else consumer
    letter = dead_letter_for(record, error=error, consumer=who)
    await publisher.publish(TopicName.DLQ, letter, key=record.key)
    DEAD_LETTERS.labels(consumer, record.topic).inc()
    log.warning(
        "dead_lettered",
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        error=error,
        consumer=who,
    )


async def reject_request(
    publisher: EventPublisher,
    record: Consumed,
    *,
    error: str,
    consumer: str,
    worker_id: str,
    member: str | None = None,
) -> None:
    """Dead-letter an invalid request; when its requester can be told, end its stream with the
    reason (an ``invalid_request`` chunk from ``worker_id`` on its reply partition)."""
    await send_to_dlq(publisher, record, error=error, consumer=consumer, member=member)
    reply = reply_address(record.value)
    if reply is None:
        return
    request_id, conversation_id, reply_to = reply
    chunk = TokenChunk(
        request_id=request_id,
        conversation_id=conversation_id,
        seq=0,
        finish_reason="error",
        worker_id=worker_id,
        error=ErrorInfo(code="invalid_request", message=error),
    )
    await publisher.publish(TopicName.TOKENS, chunk, partition=reply_to.partition)


def reply_address(value: bytes | None) -> tuple[str, str, ReplyTo] | None:
    """request_id, conversation_id and reply_to of a message that failed validation, when they
    are readable (None: nobody to tell)."""
    try:
        raw = json.loads(value or b"")
        reply_to = ReplyTo.model_validate(raw["reply_to"])
        request_id, conversation_id = str(raw["request_id"]), str(raw["conversation_id"])
        TokenChunk(request_id=request_id, conversation_id=conversation_id, seq=0)
    except Exception:  # noqa: BLE001 - anything unusable means: nobody to tell
        return None
    return request_id, conversation_id, reply_to
