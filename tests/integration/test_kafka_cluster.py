"""A local three-node Kafka cluster (``CHATBUS_LOCAL_KAFKA_BROKERS=3``), the production shape in
miniature: started by the same ``up`` as one node, topics replicated three times with
``min.insync.replicas`` 2, and the bus carries on with one node SIGKILLed and after it restarts.

It runs on ports and a state folder of its own, beside the suite's single broker, and is
stopped by PID afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatbus.cli.ops.topics import describe_topics
from chatbus.kafka import EventPublisher, decode_event, make_consumer
from chatbus.kafka.topic_setup import ensure_topics
from chatbus.polling import eventually
from chatbus.settings import Settings
from infra.local import manager, process
from infra.local.kafka import Kafka
from schemas.events import CancelRequest
from schemas.topics import TopicName

pytestmark = pytest.mark.integration


def free_node_ports() -> int:
    """A first client port P with P, P+1, P+2 free on each of three nodes (+0, +100, +200)."""
    for base in range(42000, 60000, 7):
        wanted = [base + node * 100 + k for node in range(3) for k in range(3)]
        try:
            for port in wanted:
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports for a three-node cluster")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Settings]:
    base = free_node_ports()
    settings = Settings(
        state_dir=tmp_path / "state",
        local_kafka_brokers=3,
        kafka_port=base,
        kafka_controller_port=base + 1,
        kafka_secure_port=base + 2,
        kafka_topic_prefix="cluster.",
    )
    try:
        manager.up(settings, ["kafka"])
        yield settings
    finally:
        manager.down(settings, ["kafka"])


async def test_three_nodes_replicate_the_bus_and_survive_one_killed(cluster: Settings) -> None:
    assert cluster.kafka.bootstrap.count(",") == 2 and cluster.kafka.topic_replication == 3
    statuses = manager.status(cluster, ["kafka"])
    assert [s.name for s in statuses] == ["kafka", "kafka-2", "kafka-3"]

    async def all_healthy() -> bool:
        return all(s.healthy for s in await asyncio.to_thread(manager.status, cluster, ["kafka"]))

    await eventually(all_healthy, timeout_s=60, what="every node healthy")
    await ensure_topics(cluster)

    async def replicated() -> list[Any] | None:  # what `chatbus ops topics` shows, once the
        topics = await describe_topics(cluster)  # new topics' metadata reached every node
        return topics if topics and all(t.replication == 3 for t in topics) else None

    await eventually(replicated, timeout_s=30, what="every topic replicated 3 times")
    properties = Kafka(2).properties_file(cluster).read_text()
    assert "min.insync.replicas=2\n" in properties and "node.id=2\n" in properties

    pid = process.running_pid(cluster, "kafka-2")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # one node of three: the ISR shrinks to 2, acks=all still met
    sent = [CancelRequest(request_id=f"req-{n:032x}", reason="cluster-test") for n in range(20)]
    async with EventPublisher(cluster, client_id="cluster-test") as publisher:
        for event in sent:
            await publisher.publish(TopicName.CONTROL, event)
    manager.up(cluster, ["kafka-2"])  # back: it catches up from the others

    topic = cluster.topic(TopicName.CONTROL)
    consumer = make_consumer(cluster, topic, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    seen: list[str] = []
    try:

        async def all_read() -> bool:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    event = decode_event(record.topic, record.value)
                    assert isinstance(event, CancelRequest)
                    seen.append(event.request_id)
            return len(seen) >= len(sent)

        await eventually(all_read, timeout_s=60, what="every event read back")
    finally:
        await consumer.stop()
    assert sorted(seen) == sorted(e.request_id for e in sent)
