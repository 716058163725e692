"""``chatbus archive verify``: the archive holds every offset once — no gap, no overlap.

For each topic partition the manifest's ranges are sorted and checked against each other (a gap
or an overlap between neighbours), against the objects in the bucket (each entry's object exists;
no object is missing from the manifest) and, when the broker is reachable, against Kafka (the
ranges cover the log from its first offset up to the archiver group's committed offset).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from chatbus.object_store import ObjectStore
from chatbus.settings import Settings
from schemas.archive import ManifestEntry, manifest_prefix, parse_object_key


@dataclass
class PartitionReport:
    topic: str
    partition: int
    objects: int = 0
    records: int = 0
    first_offset: int | None = None
    last_offset: int | None = None
    gaps: list[tuple[int, int]] = field(default_factory=list)  # missing offsets, inclusive
    overlaps: list[tuple[str, str]] = field(default_factory=list)  # object keys
    missing_objects: list[str] = field(default_factory=list)
    orphan_objects: list[str] = field(default_factory=list)
    broker: dict[str, int | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.gaps or self.overlaps or self.missing_objects or self.orphan_objects)


@dataclass
class VerifyReport:
    partitions: list[PartitionReport]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.partitions)

    @property
    def records(self) -> int:
        return sum(p.records for p in self.partitions)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "records": self.records,
            "partitions": [vars(p) | {"ok": p.ok} for p in self.partitions],
        }


def check_ranges(
    report: PartitionReport,
    entries: list[ManifestEntry],
    broker_start: int | None = None,
    broker_committed: int | None = None,
) -> None:
    """Fill ``report``'s coverage from one partition's manifest entries (pure logic)."""
    entries = sorted(entries, key=lambda e: (e.first_offset, e.last_offset))
    report.objects = len(entries)
    report.records = sum(e.records for e in entries)
    if entries:
        report.first_offset = entries[0].first_offset
        report.last_offset = max(e.last_offset for e in entries)
    reach = entries[0] if entries else None  # the entry reaching furthest so far
    for entry in entries[1:]:
        assert reach is not None
        if entry.first_offset <= reach.last_offset:
            report.overlaps.append((reach.object_key, entry.object_key))
        elif entry.first_offset > reach.last_offset + 1:
            report.gaps.append((reach.last_offset + 1, entry.first_offset - 1))
        if entry.last_offset > reach.last_offset:
            reach = entry
    if broker_committed is None:
        return
    start = broker_start or 0
    end = broker_committed - 1  # the last offset the archiver says it archived
    if end < start:
        return
    if not entries:
        report.gaps.append((start, end))
        return
    if entries[0].first_offset > start:
        report.gaps.insert(0, (start, entries[0].first_offset - 1))
    if report.last_offset is not None and report.last_offset < end:
        report.gaps.append((report.last_offset + 1, end))


def verify_archive(
    settings: Settings, *, broker: dict[tuple[str, int], dict[str, int | None]] | None = None
) -> VerifyReport:
    """Check the archive of ``settings`` (``broker``: (topic, partition) → log start offset and
    the archiver's committed offset, from :func:`broker_positions`)."""
    store = ObjectStore(settings)
    prefix = settings.archive.prefix
    entries: dict[tuple[str, int], list[ManifestEntry]] = defaultdict(list)
    for key, _ in store.list(manifest_prefix(prefix)):
        raw = store.get(key)
        if raw is not None:
            entry = ManifestEntry.model_validate_json(raw)
            entries[(entry.topic, entry.partition)].append(entry)
    objects: dict[tuple[str, int], set[str]] = defaultdict(set)
    root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    for key, _ in store.list(f"{root}topic="):
        parts = parse_object_key(key)
        if parts:
            objects[(parts["topic"], parts["partition"])].add(key)
    reports = []
    for where in sorted(set(entries) | set(objects) | set(broker or {})):
        report = PartitionReport(*where)
        positions = (broker or {}).get(where, {})
        check_ranges(
            report, entries.get(where, []), positions.get("log_start"), positions.get("committed")
        )
        listed = {e.object_key for e in entries.get(where, [])}
        report.missing_objects = sorted(listed - objects.get(where, set()))
        report.orphan_objects = sorted(objects.get(where, set()) - listed)
        report.broker = dict(positions)
        reports.append(report)
    return VerifyReport(reports)


async def broker_positions(settings: Settings) -> dict[tuple[str, int], dict[str, int | None]]:
    """(registry topic, partition) → the log's first offset and the archiver's committed one."""
    from chatbus.kafka.groups import archiver_group
    from chatbus.kafka.lag import group_offsets, log_offsets
    from schemas.topics import TopicName

    registry = {settings.topic(t.value): t.value for t in TopicName}
    starts, _ends = await log_offsets(settings, list(registry))
    committed = await group_offsets(settings, archiver_group(settings))
    return {
        (registry[tp.topic], tp.partition): {"log_start": start, "committed": committed.get(tp)}
        for tp, start in starts.items()
    }
