"""Rebuild the archive from Kafka: move the archiver group back to the start of every log.

Object keys come from topics, partitions and offsets, so archiving the same log again writes the
same objects. This is what an object store that lost everything needs — the local one (moto
keeps its objects in memory) after every restart, or a bucket emptied by mistake — as long as
Kafka still holds the records (its retention). The group must have no live member: stop the
archivers first.
"""

from __future__ import annotations

from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from chatbus.errors import ServiceUnavailable
from chatbus.kafka.factories import make_consumer
from chatbus.kafka.lag import group_offsets, log_offsets
from chatbus.kafka.topic_setup import admin_client
from chatbus.logging import get_logger
from chatbus.settings import Settings
from schemas.topics import TopicName

log = get_logger(__name__)


async def rewind_archiver(settings: Settings) -> int:
    """Commit each log's first offset for the archiver group; returns how many partitions moved
    back (0 when the group never committed: it starts from the logs' first offsets anyway)."""
    group = settings.topic(settings.archive_group)
    async with admin_client(settings) as admin:
        if "__consumer_offsets" not in await admin.list_topics():
            return 0  # a new cluster: no group has committed anything
    try:
        committed = await group_offsets(settings, group)
    except KafkaError as exc:
        raise ServiceUnavailable(f"cannot read the offsets of {group}: {exc}") from exc
    topics = [settings.topic(t.value) for t in TopicName]
    starts, _ = await log_offsets(settings, topics)
    back = {tp: OffsetAndMetadata(starts[tp], "") for tp, offset in committed.items()
            if tp in starts and offset > starts[tp]}
    if not back:
        return 0
    consumer = make_consumer(settings, group_id=group, client_id="chatbus-archive-rewind")
    try:
        await consumer.start()
        consumer.assign(list(back))
        await consumer.commit(back)
    except KafkaError as exc:
        raise ServiceUnavailable(
            f"cannot move the archiver group {group} back ({exc.__class__.__name__}: {exc}); "
            "is an archiver still running? Stop the pipeline (`chatbus pipeline down`), then "
            "run this again"
        ) from exc
    finally:
        await consumer.stop()
    log.info("archive_rewound", group=group, partitions=len(back))
    return len(back)
