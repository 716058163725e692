"""Write simulated events straight into the archive layout (:mod:`schemas.archive`).

What the archiver would have written had the events gone through Kafka: per topic and partition,
consecutive offsets from 0 in timestamp order, objects of at most ``records_per_object`` records
that never span two UTC hours, each followed by its manifest entry. The target is a local folder
or ``s3://bucket/prefix`` (``s3a://`` accepted) on the configured endpoint.

For scale the conversations are split into ``jobs`` contiguous ranges, each generated in its own
process. Offsets must be contiguous per partition across ranges, so each process first reports
how many records of each partition it holds, the parent hands back where its offsets start, and
then each process writes its objects: the events are generated once.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from analytics.simulate.generator import Profile, Simulator
from chatbus.errors import ConfigurationError, ServiceUnavailable
from chatbus.object_store import s3_client
from chatbus.settings import Settings
from schemas.archive import (
    ManifestEntry,
    archived_record,
    hour_of,
    manifest_key,
    manifest_prefix,
    object_key,
)

_DUMPS = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
Slot = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Target:
    """Where the archive goes: a local root folder, or a bucket and key prefix."""

    local_root: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @classmethod
    def parse(cls, where: str) -> Target:
        url = urlparse(where)
        if url.scheme in ("s3", "s3a"):
            if not url.netloc:
                raise ConfigurationError(f"{where!r} names no bucket; use s3://BUCKET/PREFIX")
            return cls(bucket=url.netloc, prefix=url.path.strip("/"))
        if url.scheme not in ("", "file"):
            raise ConfigurationError(
                f"cannot write an archive to {where!r}: give a folder or s3://BUCKET/PREFIX"
            )
        return cls(local_root=Path(url.path if url.scheme else where))

    def holds_archive(self, settings: Settings) -> bool:
        """Whether an archive (its manifest) is already there."""
        if self.local_root is not None:
            return (self.local_root / "_manifest").exists()
        client = s3_client(settings)
        with _s3_errors(settings, f"s3://{self.bucket}/{self.prefix}"):
            found = client.list_objects_v2(
                Bucket=self.bucket, MaxKeys=1, Prefix=manifest_prefix(self.prefix)
            )
        return bool(found.get("KeyCount"))

    def clear(self, settings: Settings) -> None:
        """Delete the archive there (objects, manifest, pending ranges), nothing else."""
        if self.local_root is not None:
            for child in self.local_root.glob("*"):
                if child.name.startswith(("topic=", "_manifest", "_pending")):
                    shutil.rmtree(child)
            return
        client = s3_client(settings)
        prefix = f"{self.prefix}/" if self.prefix else ""
        with _s3_errors(settings, f"s3://{self.bucket}/{prefix}"):
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                keys = [
                    {"Key": o["Key"]}
                    for o in page.get("Contents", [])
                    if o["Key"][len(prefix) :].startswith(("topic=", "_manifest/", "_pending/"))
                ]
                if keys:
                    client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    @property
    def spark_root(self) -> str:
        """The same place as Spark reads it."""
        if self.local_root is not None:
            return str(self.local_root.resolve())
        return f"s3a://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass
class SimulationResult:
    events: int
    objects: int
    conversations: int
    seconds: float
    root: str
    per_topic: dict[str, int]

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@contextmanager
def _s3_errors(settings: Settings, where: str) -> Iterator[None]:
    """boto3's errors as ours, saying what to check."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailable(
            f"S3 refused {where} at {settings.s3.endpoint}: {exc}; is the endpoint up "
            "(`chatbus infra up s3`), does the bucket exist, are the credentials right "
            "(CHATBUS_S3_ENDPOINT, CHATBUS_AWS_ACCESS_KEY_ID)?"
        ) from exc


class _Writer:
    def __init__(self, target: Target, settings: Settings) -> None:
        self.target = target
        self.settings = settings
        self._s3: Any = None if target.local_root is not None else s3_client(settings)

    def put(self, key: str, body: bytes) -> None:
        if self.target.local_root is not None:
            path = self.target.local_root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(body)
            tmp.replace(path)
            return
        with _s3_errors(self.settings, f"s3://{self.target.bucket}/{key}"):
            self._s3.put_object(Bucket=self.target.bucket, Key=key, Body=body)


def archive_line(
    event_json: str, *, topic: str, partition: int, offset: int, timestamp_ms: int, key: str
) -> bytes:
    """The archive line of an event's JSON, made by appending the Kafka fields of
    :func:`schemas.archive.archived_record` to the event's own JSON (no parse and re-dump: ~3x
    faster). The same JSON value as the archiver's ``json.loads`` + dump, and the same bytes
    except the spelling of float exponents below 1e-4 (pydantic ``1e-7``, Python ``1e-07``),
    which the simulator's rounded values never have (``tests/unit/test_simulate.py``)."""
    extra = _DUMPS(
        archived_record(
            None,
            topic=topic,
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            key=key,
        )
    )
    return (event_json[:-1] + "," + extra[1:] + "\n").encode()


def _generate(
    profile: Profile, first: int, last: int, progress: Callable[[int], None] | None = None
) -> dict[Slot, list[tuple[int, str, str]]]:
    """(timestamp_ms, key, event JSON) per (topic, partition), in timestamp order."""
    sim = Simulator(profile)
    slots: dict[Slot, list[tuple[int, str, str]]] = defaultdict(list)
    for index in range(first, last):
        for e in sim.conversation(index):
            slots[(str(e.topic), e.partition)].append(
                (e.timestamp_ms, e.key, e.event.model_dump_json())
            )
        if progress is not None and (index - first) % 50 == 49:
            progress(50)
    if progress is not None and (last - first) % 50:
        progress((last - first) % 50)
    for records in slots.values():
        records.sort(key=lambda r: r[0])
    return slots


def _write(
    slots: dict[Slot, list[tuple[int, str, str]]],
    bases: dict[Slot, int],
    target: Target,
    settings: Settings,
    records_per_object: int,
) -> int:
    writer = _Writer(target, settings)
    objects = 0
    for (topic, partition), records in slots.items():
        base = bases.get((topic, partition), 0)
        start = 0
        while start < len(records):
            hour = hour_of(records[start][0])
            end = start + 1
            while (
                end < len(records)
                and end - start < records_per_object
                and hour_of(records[end][0]) == hour
            ):
                end += 1
            lines = [
                archive_line(
                    body,
                    topic=topic,
                    partition=partition,
                    offset=base + i,
                    timestamp_ms=ts,
                    key=key,
                )
                for i, (ts, key, body) in enumerate(records[start:end], start)
            ]
            blob = gzip.compress(b"".join(lines), compresslevel=5, mtime=0)
            first, last = base + start, base + end - 1
            key_name = object_key(target.prefix, topic, partition, first, last, records[start][0])
            writer.put(key_name, blob)
            entry = ManifestEntry(
                topic=topic,
                partition=partition,
                first_offset=first,
                last_offset=last,
                records=end - start,
                object_key=key_name,
                compressed_bytes=len(blob),
                sha256=hashlib.sha256(blob).hexdigest(),
                redacted=False,
                archived_at=datetime.now(UTC),
            )
            writer.put(
                manifest_key(target.prefix, topic, partition, first, last),
                entry.model_dump_json().encode(),
            )
            objects += 1
            start = end
    return objects


def _shard_main(
    conn: Any,
    progress_queue: Any,
    profile: Profile,
    first: int,
    last: int,
    target: Target,
    settings: Settings,
    records_per_object: int,
) -> None:
    """One process: generate its range, report counts, receive offset bases, write."""
    try:
        slots = _generate(profile, first, last, progress_queue.put)
        conn.send({slot: len(records) for slot, records in slots.items()})
        bases = conn.recv()
        conn.send(("done", _write(slots, bases, target, settings, records_per_object)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def simulate_to_archive(
    profile: Profile,
    where: str,
    settings: Settings,
    *,
    jobs: int = 1,
    records_per_object: int = 20_000,
    on_progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Generate ``profile.conversations`` conversations into the archive at ``where``."""
    target = Target.parse(where)
    started = time.perf_counter()
    n = profile.conversations
    jobs = max(1, min(jobs, n))
    bounds = [(n * k // jobs, n * (k + 1) // jobs) for k in range(jobs)]
    counts: list[dict[Slot, int]]
    objects = 0
    if jobs == 1:
        slots = _generate(profile, 0, n, on_progress)
        counts = [{slot: len(r) for slot, r in slots.items()}]
        objects = _write(slots, {}, target, settings, records_per_object)
    else:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        pipes, procs = [], []
        for first, last in bounds:
            parent_end, child_end = ctx.Pipe()
            proc = ctx.Process(
                target=_shard_main,
                args=(child_end, queue, profile, first, last, target, settings, records_per_object),
                daemon=True,
            )
            proc.start()
            pipes.append(parent_end)
            procs.append(proc)
        try:
            counts = [_receive(pipe, queue, on_progress) for pipe in pipes]
            running: dict[Slot, int] = defaultdict(int)
            for pipe, shard in zip(pipes, counts, strict=True):
                pipe.send(dict(running))
                for slot, c in shard.items():
                    running[slot] += c
            for pipe in pipes:
                status, value = _receive(pipe, queue, on_progress)
                if status == "error":
                    raise ConfigurationError(f"simulation failed in a worker: {value}")
                objects += value
        finally:
            for proc in procs:
                proc.join(timeout=30)
                if proc.is_alive():
                    proc.terminate()
    totals: dict[str, int] = defaultdict(int)
    for shard in counts:
        for (topic, _), c in shard.items():
            totals[topic] += c
    return SimulationResult(
        events=sum(totals.values()),
        objects=objects,
        conversations=n,
        seconds=time.perf_counter() - started,
        root=target.spark_root,
        per_topic=dict(totals),
    )


def _receive(pipe: Any, queue: Any, on_progress: Callable[[int], None] | None) -> Any:
    """The next message of a shard, forwarding its progress reports while waiting."""
    while not pipe.poll(0.1):
        _drain(queue, on_progress)
    try:
        message = pipe.recv()
    except EOFError:
        raise ConfigurationError(
            "a simulation worker process died before it finished (out of memory? try fewer --jobs)"
        ) from None
    _drain(queue, on_progress)
    if isinstance(message, tuple) and message[0] == "error":
        raise ConfigurationError(f"simulation failed in a worker: {message[1]}")
    return message


def _drain(queue: Any, on_progress: Callable[[int], None] | None) -> None:
    import queue as queue_module

    while True:
        try:
            step = queue.get_nowait()
        except queue_module.Empty:
            return
        if on_progress is not None:
            on_progress(step)


def default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)))
