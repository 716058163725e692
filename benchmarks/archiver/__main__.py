"""Archiver benchmark: how many events per second it archives, against a bare consumer, and
whether its lag stays bounded at a sustained rate.

``python -m benchmarks.archiver [--events 200000] [--rate 0.5]`` against the running
local Kafka and S3 (``make up``), on topics and an archive prefix of its own (deleted afterwards):

1. **produce** ``--events`` realistic events (the analytics simulator's conversations: requests,
   verdicts, token chunks, completions, cancels) onto every topic;
2. **baseline**: a bare aiokafka consumer reads them all (JSON not even parsed) — the most any
   Python consumer of this broker reaches on this machine;
3. **archiver**: the archiver archives the same backlog (parse, redact, gzip, upload, manifest,
   commit) — events/s and events/s per CPU second of the process, and the ratio to the baseline;
4. **sustained**: events are produced at ``--rate`` times the archiver's backlog rate for
   ``--seconds`` while it runs; the lag (end offsets - the group's committed offsets) is sampled
   and is *bounded* when the second half's peak is no higher than the first half's plus one
   flush window.

Writes ``.chatbus/bench/archiver.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from benchmarks.bare_consumer import bare_consumer_rate
from chatbus.kafka.codec import encode_event, event_headers
from chatbus.kafka.factories import make_producer
from chatbus.kafka.lag import group_offsets, log_offsets
from chatbus.kafka.topic_setup import delete_prefixed_topics, ensure_topics
from chatbus.object_store import ObjectStore
from chatbus.settings import Settings, get_settings
from schemas.topics import TopicName
from stream_processors.archiver.archiver import Archiver


def _events(count: int) -> list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]:
    """(registry topic, key, value, headers) of ``count`` simulated events, in time order."""
    from analytics.simulate.generator import Profile, Simulator

    simulator = Simulator(Profile(conversations=max(1, count // 20), seed=11))
    out = []
    for sim in simulator.events():
        out.append((sim.topic, sim.key.encode(), encode_event(sim.event), event_headers(sim.event)))
        if len(out) == count:
            break
    return out


async def _produce(
    settings: Settings,
    events: list[Any],
    *,
    rate: float | None = None,
    seconds: float | None = None,
    bar: tqdm | None = None,
) -> int:
    producer = make_producer(settings, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while True:
            for topic, key, value, headers in events:
                if seconds is not None and time.monotonic() - started >= seconds:
                    await producer.flush()
                    return sent
                await producer.send(settings.topic(topic), value, key=key, headers=headers)
                sent += 1
                if bar:
                    bar.update()
                if rate is not None and sent % 100 == 0:
                    ahead = sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)  # pacing the producer to the target rate
            if seconds is None:
                await producer.flush()
                return sent
    finally:
        await producer.stop()


def _stage_costs(events: list[Any]) -> dict[str, float]:
    """CPU microseconds per event of each step the archiver takes, measured apart (no Kafka)."""
    from stream_processors.archiver.batch import PartitionBatch, compress
    from stream_processors.archiver.redaction import redact_event
    from stream_processors.archiver.stream_redaction import TokenStreamRedactor

    values = [value for _, _, value, _ in events]
    costs: dict[str, float] = {}
    t = time.process_time()
    decoded = [orjson.loads(v) for v in values]  # as records.archive_line parses
    costs["json_parse"] = time.process_time() - t
    batch = PartitionBatch("bench", 0)
    t = time.process_time()
    for offset, event in enumerate(decoded):
        batch.add(offset, 0, event)
    costs["json_serialize"] = time.process_time() - t
    # as the archiver redacts: token chunks with their answer's earlier text, the rest alone
    chunks = PartitionBatch("bench", 0)
    stream = TokenStreamRedactor()
    t = time.process_time()
    for offset, event in enumerate(decoded):
        if event.get("type") == "chat.token":
            stream.add(chunks, chunks.add(offset, 0, event), event)
        else:
            redact_event(event)
    costs["redact"] = (
        time.process_time() - t - costs["json_serialize"] * (len(chunks) / max(len(decoded), 1))
    )  # less the chunks' own serialisation
    t = time.process_time()
    compress(batch.lines)
    costs["gzip"] = time.process_time() - t
    return {stage: round(seconds / len(values) * 1e6, 2) for stage, seconds in costs.items()}


async def _lag(settings: Settings) -> int:
    _, ends = await log_offsets(settings, [settings.topic(t.value) for t in TopicName])
    committed = await group_offsets(settings, settings.topic(settings.archive.group))
    return sum(end - committed.get(tp, 0) for tp, end in ends.items())


async def run(events: int, rate_factor: float, seconds: float) -> dict[str, Any]:
    base = get_settings()
    settings = base.replace(
        **{
            "topic_prefix": f"bench{uuid.uuid4().hex[:6]}.",
            "archive_prefix": f"bench-{uuid.uuid4().hex[:8]}",
        }
    )
    await ensure_topics(settings)
    store = ObjectStore(settings)
    try:
        print(f"==> simulating {events} events")
        backlog = _events(events)
        with tqdm(total=len(backlog), desc="produce", unit="ev") as bar:
            await _produce(settings, backlog, bar=bar)
        baseline = await bare_consumer_rate(
            settings, [settings.topic(t.value) for t in TopicName], len(backlog)
        )

        stages = _stage_costs(backlog)
        # the backlog is flushed by size; a partition's last, partial batch waits at most 1 s
        archiver = Archiver(settings.replace(**{"archive_flush_s": 1.0}))
        cpu0, started = time.process_time(), time.perf_counter()
        await archiver.start()
        with tqdm(total=len(backlog), desc="chatbus archiver", unit="ev") as bar:
            while archiver.archived_records < len(backlog):
                await asyncio.sleep(0.1)  # progress display cadence
                bar.n = archiver.archived_records
                bar.refresh()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        rate = len(backlog) / wall

        await archiver.stop()
        archiver = Archiver(settings)  # sustained: the default flush window, the same group
        await archiver.start()
        target = rate * rate_factor
        print(f"==> sustained: {target:.0f} events/s for {seconds:.0f} s")
        samples: list[tuple[float, int]] = []
        producing = asyncio.create_task(_produce(settings, backlog, rate=target, seconds=seconds))
        t0 = time.monotonic()
        with tqdm(total=int(seconds), desc="sustained", unit="s") as bar:
            while not producing.done():
                samples.append((time.monotonic() - t0, await _lag(settings)))
                bar.n = min(int(seconds), int(time.monotonic() - t0))
                bar.refresh()
                await asyncio.sleep(0.5)  # lag sampling period
        sent = await producing
        await archiver.stop()
        final_lag = await _lag(settings)
        half = seconds / 2
        first = max((lag for at, lag in samples if at < half), default=0)
        second = max((lag for at, lag in samples if at >= half), default=0)
        window = target * settings.archive.flush_s
        objects = sum(1 for _ in store.list(settings.archive.prefix + "/topic="))
        return {
            "events": len(backlog),
            "baseline_events_per_s": round(baseline),
            "archiver_events_per_s": round(rate),
            "archiver_events_per_cpu_s": round(len(backlog) / cpu) if cpu else None,
            "ratio_to_baseline": round(rate / baseline, 3),
            "sustained": {
                "target_events_per_s": round(target),
                "seconds": seconds,
                "sent": sent,
                "achieved_events_per_s": round(sent / seconds),
                "peak_lag_first_half": first,
                "peak_lag_second_half": second,
                "flush_window_events": round(window),
                "lag_after_stop": final_lag,
                "bounded": second <= first + window,
            },
            "cpu_us_per_event_by_stage": stages,
            "objects": objects,
            "flush_bytes": settings.archive.flush_bytes,
            "flush_s": settings.archive.flush_s,
        }
    finally:
        store.delete_prefix(settings.archive.prefix + "/")
        await delete_prefixed_topics(settings)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.archiver", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument(
        "--rate",
        type=float,
        default=0.5,
        help="Sustained rate as a share of the measured backlog rate.",
    )
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    result = asyncio.run(run(args.events, args.rate, args.seconds))
    result["machine"] = {
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "command": f"python -m benchmarks.archiver --events "
        f"{args.events} --rate {args.rate} --seconds {args.seconds}",
    }
    out = get_settings().state_dir / "bench" / "archiver.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        f"archiver {result['archiver_events_per_s']} events/s = "
        f"{result['ratio_to_baseline']}x a bare consumer ({result['baseline_events_per_s']} "
        f"events/s); sustained lag bounded: {result['sustained']['bounded']}; wrote {out}"
    )


if __name__ == "__main__":
    main()
