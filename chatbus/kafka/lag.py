"""Consumer-group lag as the broker sees it: end offset minus committed offset, per partition.

``chatbus ops lag`` prints it; every long-lived consumer (workers, archiver, processors) exports
its group's as ``chatbus_consumer_lag_records`` (a group with no live member still has lag on the
broker, which is what an autoscaler such as KEDA reads too).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from chatbus.kafka.factories import partitions_of
from chatbus.kafka.groups import archiver_group, inference_group
from chatbus.kafka.security import client_options
from chatbus.kafka.startup import start_client
from chatbus.kafka.topic_setup import admin_client
from chatbus.logging import get_logger
from chatbus.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    end_offset: int
    committed: int | None  # None: the group never committed on this partition
    log_start: int

    @property
    def lag(self) -> int:
        """Records produced and not yet committed by the group."""
        done = max(self.committed if self.committed is not None else 0, self.log_start)
        return max(0, self.end_offset - done)  # records deleted by retention are not lag

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"lag": self.lag}


async def log_offsets(
    settings: Settings, topics: list[str]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """The first and the end offset of every partition of ``topics`` (missing topics skipped)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=None,
        client_id=f"{settings.kafka.client_id}-offsets",
        **client_options(settings),
    )
    await start_client(settings, consumer)
    try:
        tps = await partitions_of(consumer, *topics)
        if not tps:
            return {}, {}
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        return dict(starts), dict(ends)
    finally:
        await consumer.stop()


async def group_offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    """The offsets ``group`` committed (empty for an unknown group)."""
    async with admin_client(settings) as admin:
        committed = await admin.list_consumer_group_offsets(group)
    return {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}


async def list_groups(settings: Settings) -> list[str]:
    async with admin_client(settings) as admin:
        return sorted(g[0] for g in await admin.list_consumer_groups())


def known_subscriptions(settings: Settings) -> dict[str, set[str]]:
    """The topics chatbus's own groups consume, so a group that has not committed yet still
    shows its lag (from the log's start)."""
    from schemas.topics import TopicName

    every = {settings.topic(t.value) for t in TopicName}
    out = {archiver_group(settings): every}
    for model in settings.served_models:
        out[inference_group(settings, model)] = {settings.topic(settings.worker.input_topic)}
    return out


async def group_lag(
    settings: Settings,
    groups: list[str] | None = None,
    *,
    subscriptions: Mapping[str, Iterable[str]] | None = None,
) -> list[PartitionLag]:
    """Lag of ``groups`` (default: every group on the broker whose name starts with the
    deployment's topic prefix, plus chatbus's own groups) on every partition of the topics they
    committed on or, for chatbus's groups and those in ``subscriptions`` (group → topics),
    subscribe to."""
    known = known_subscriptions(settings)
    for group, topics in (subscriptions or {}).items():
        known[group] = known.get(group, set()) | set(topics)
    if groups is None:
        on_broker = [
            g for g in await list_groups(settings) if g.startswith(settings.kafka.topic_prefix)
        ]
        groups = sorted(set(on_broker) | set(known))
    committed = {g: await group_offsets(settings, g) for g in groups}
    wanted = {g: {tp.topic for tp in committed[g]} | known.get(g, set()) for g in groups}
    starts, ends = await log_offsets(settings, sorted(set().union(*wanted.values())))
    rows = []
    for g in groups:
        for tp in sorted(ends, key=lambda t: (t.topic, t.partition)):
            if tp.topic in wanted[g]:
                rows.append(
                    PartitionLag(
                        g, tp.topic, tp.partition, ends[tp], committed[g].get(tp), starts[tp]
                    )
                )
    return rows


class LagReporter:
    """Exports ``chatbus_consumer_lag_records`` for one group every ``interval_s`` seconds, on
    the topics it committed on and ``topics`` (what it subscribes to: lag shows before the
    group's first commit)."""

    def __init__(
        self,
        settings: Settings,
        group: str,
        *,
        topics: Iterable[str] = (),
        interval_s: float = 10.0,
    ) -> None:
        self.settings, self.group, self.interval_s = settings, group, interval_s
        self.topics = frozenset(topics)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"lag-{self.group}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def report_once(self) -> None:
        """Export the group's lag now (a failure is a warning: a metric never stops a process)."""
        from chatbus.metrics import CONSUMER_LAG

        try:
            rows = await group_lag(
                self.settings, [self.group], subscriptions={self.group: self.topics}
            )
            for row in rows:
                CONSUMER_LAG.labels(row.group, row.topic, str(row.partition)).set(row.lag)
        except Exception as exc:  # noqa: BLE001 - a metric must never stop the process
            log.warning("lag_report_failed", group=self.group, error=str(exc))

    async def _run(self) -> None:
        while True:
            await self.report_once()
            await asyncio.sleep(self.interval_s)  # the reporting period
