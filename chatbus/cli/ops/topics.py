"""What the broker says about the bus's topics: partitions, replicas, retention."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from chatbus.kafka.topic_setup import admin_client
from chatbus.settings import Settings
from schemas.topics import TOPICS


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int | None  # None: missing on the broker
    replication: int | None
    retention_ms: int | None
    description: str


async def describe_topics(settings: Settings) -> list[TopicInfo]:
    names = [settings.topic(t) for t in TOPICS]
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        present = [n for n in names if n in existing]
        described = {d["topic"]: d for d in await admin.describe_topics(present)} if present else {}
        configs: dict[str, dict[str, str]] = {}
        if present:
            for response in await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, n) for n in present]
            ):
                for resource in response.resources:
                    configs[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
    out = []
    for registry, name in zip(TOPICS.values(), names, strict=True):
        if name not in described:
            out.append(TopicInfo(name, None, None, None, registry.description))
            continue
        partitions = described[name]["partitions"]
        retention = configs.get(name, {}).get("retention.ms")
        out.append(
            TopicInfo(
                name,
                len(partitions),
                len(partitions[0]["replicas"]) if partitions else None,
                int(retention) if retention is not None else None,
                registry.description,
            )
        )
    return out
