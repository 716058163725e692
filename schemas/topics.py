"""The topic registry: every topic of the bus, its key, event types and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

_DAY_MS = 24 * 3600 * 1000


class TopicName(StrEnum):
    REQUESTS = "chat.requests"
    REQUESTS_APPROVED = "chat.requests.approved"
    TOKENS = "chat.tokens"
    COMPLETIONS = "chat.completions"
    MODERATION = "chat.moderation"
    CONTROL = "chat.control"
    FEEDBACK = "chat.feedback"
    DLQ = "chat.dlq"


@dataclass(frozen=True, slots=True)
class Topic:
    name: TopicName
    key: str
    event_types: tuple[str, ...]
    retention_ms: int
    scales_with_partitions: bool = True
    description: str = ""

    def partitions(self, configured: int) -> int:
        """Partition count: ``configured`` for topics consumers scale on, else one."""
        return configured if self.scales_with_partitions else 1


TOPICS: dict[TopicName, Topic] = {
    t.name: t
    for t in (
        Topic(
            TopicName.REQUESTS,
            "conversation_id",
            ("chat.request",),
            7 * _DAY_MS,
            description="clients and gateways → moderation",
        ),
        Topic(
            TopicName.REQUESTS_APPROVED,
            "conversation_id",
            ("chat.request",),
            7 * _DAY_MS,
            description="moderation → inference consumer group",
        ),
        Topic(
            TopicName.TOKENS,
            "request_id",
            ("chat.token",),
            1 * _DAY_MS,
            description="inference → the requester's reply partition",
        ),
        Topic(
            TopicName.COMPLETIONS,
            "conversation_id",
            ("chat.completion",),
            30 * _DAY_MS,
            description="inference → history, output moderation, archiver",
        ),
        Topic(
            TopicName.MODERATION,
            "conversation_id",
            ("chat.moderation",),
            30 * _DAY_MS,
            description="moderation verdicts → clients, archiver",
        ),
        Topic(
            TopicName.CONTROL,
            "request_id",
            ("chat.cancel",),
            1 * _DAY_MS,
            scales_with_partitions=False,
            description="cancel a request on every worker",
        ),
        Topic(
            TopicName.FEEDBACK,
            "conversation_id",
            ("chat.appeal", "chat.rating"),
            90 * _DAY_MS,
            description="users' judgements of answers (ratings, appeals of refusals) → history, "
            "archiver",
        ),
        Topic(
            TopicName.DLQ,
            "original key",
            ("chat.dead_letter",),
            30 * _DAY_MS,
            scales_with_partitions=False,
            description="what a consumer could not process, with the reason",
        ),
    )
}


def topic(name: str | TopicName) -> Topic:
    """The registry entry of ``name`` (raises ``KeyError`` naming the known topics)."""
    try:
        return TOPICS[TopicName(name)]
    except ValueError:
        known = ", ".join(t.value for t in TopicName)
        raise KeyError(f"unknown topic {name!r}; known topics: {known}") from None
