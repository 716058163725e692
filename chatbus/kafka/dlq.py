"""Dead-letter routing: a message a consumer cannot process goes to ``chat.dlq`` with the reason."""

from __future__ import annotations

import base64

from aiokafka.structs import ConsumerRecord

from chatbus.kafka.publisher import EventPublisher
from chatbus.logging import get_logger
from schemas.events import DeadLetter
from schemas.topics import TopicName

log = get_logger(__name__)


def dead_letter_for(record: ConsumerRecord[bytes, bytes], *, error: str,
                    consumer: str) -> DeadLetter:
    return DeadLetter(
        original_topic=record.topic,
        original_partition=record.partition,
        original_offset=record.offset,
        original_key_b64=base64.b64encode(record.key).decode() if record.key else None,
        original_value_b64=base64.b64encode(record.value or b"").decode(),
        error=error,
        consumer=consumer,
    )


async def send_to_dlq(publisher: EventPublisher, record: ConsumerRecord[bytes, bytes], *,
                      error: str, consumer: str) -> None:
    """Publish the dead letter and wait for the broker's ack before the caller commits."""
    letter = dead_letter_for(record, error=error, consumer=consumer)
    await publisher.publish(TopicName.DLQ, letter, key=record.key)
    log.warning("dead_lettered", topic=record.topic, partition=record.partition,
                offset=record.offset, error=error, consumer=consumer)
