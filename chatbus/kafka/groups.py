"""Consumer group names of chatbus's own consumers, and which of them have live members."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiokafka.protocol.admin import (
    DescribeGroupsRequest_v0,
    DescribeGroupsRequest_v1,
    DescribeGroupsRequest_v2,
)
from aiokafka.protocol.api import Request

from chatbus.kafka.topic_setup import admin_client
from chatbus.settings import Settings

__all__ = ["archiver_group", "inference_group", "live_groups"]


def inference_group(settings: Settings, model: str) -> str:
    """The consumer group of the workers that serve ``model`` (one group per model)."""
    return f"{settings.kafka.topic_prefix}chatbus.inference.{model}"


def archiver_group(settings: Settings) -> str:
    """The consumer group of the archivers (``CHATBUS_ARCHIVE_GROUP`` under the topic prefix)."""
    return settings.topic(settings.archive.group)


class _DescribeGroups(
    Request[DescribeGroupsRequest_v0 | DescribeGroupsRequest_v1 | DescribeGroupsRequest_v2]
):
    """DescribeGroups at v0-v2 only: aiokafka 0.14 decodes a v3 answer with the v2 schema (no
    ``authorized_operations``) and fails ("Buffer underrun") on any group that has members."""

    API_KEY = 15

    def __init__(self, groups: list[str]) -> None:
        self._groups = groups

    def build(self, request_struct_class: Any) -> Any:
        return request_struct_class(self._groups)


async def live_groups(settings: Settings, groups: Iterable[str]) -> set[str]:
    """Those of ``groups`` that have at least one member right now, as the broker sees them."""
    wanted = sorted(set(groups))
    if not wanted:
        return set()
    live: set[str] = set()
    async with admin_client(settings) as admin:
        for group_id in wanted:
            coordinator = await admin.find_coordinator(group_id)
            response = await admin._send_request(_DescribeGroups([group_id]), coordinator)
            described: Any = response.to_object()
            for group in described.get("groups", []):
                if group.get("error_code", 0) == 0 and group.get("members"):
                    live.add(str(group.get("group")))
    return live
