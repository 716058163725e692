"""Usage-ledger benchmark: how many completions per second the ledger writes to PostgreSQL
exactly once, against a bare consumer of the same topic.

``python -m benchmarks.ledger [--completions 50000] [--batch 500]`` against the running local
Kafka and PostgreSQL (``make up``), on topics and a consumer group of its own (deleted
afterwards, with their rows):

1. **produce** ``--completions`` completions onto ``chat.completions`` (a few keys and models);
2. **baseline**: a bare aiokafka consumer reads them all, parsing nothing;
3. **ledger**: :class:`~stream_processors.ledger.reader.LedgerReader` writes the same backlog
   (parse, one transaction per poll with rows, monthly rollups and offsets) — rows/s, and CPU
   seconds of this process and of the PostgreSQL server, and the ratio to the baseline.

Writes ``.chatbus/bench/ledger.json``.
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

from tqdm import tqdm

from benchmarks.bare_consumer import bare_consumer_rate
from chatbus.accounts.database import connect
from chatbus.kafka.codec import encode_event
from chatbus.kafka.factories import make_producer
from chatbus.kafka.topic_setup import delete_prefixed_topics, ensure_topics
from chatbus.settings import Settings, get_settings
from schemas.events import Completion, Timings, Usage
from schemas.topics import TopicName
from stream_processors.ledger.reader import LedgerReader


def _postgres_cpu_s(settings: Settings) -> float | None:
    """CPU seconds of the local PostgreSQL server and its backends so far (None: not ours)."""
    pid_file = settings.run_dir / "postgres.pid"
    if not pid_file.exists():
        return None
    root = int(pid_file.read_text().strip())
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid, ppid = int(entry.name), int(fields[1])
        if pid == root or ppid == root:
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / ticks


async def _produce(settings: Settings, tag: str, count: int) -> None:
    producer = make_producer(settings, linger_ms=5)
    await producer.start()
    try:
        with tqdm(total=count, desc="produce", unit="completion") as bar:
            for i in range(count):
                completion = Completion(
                    request_id=f"req-{tag}x{i:07d}",
                    conversation_id=f"conv-{tag}-{i % 997}",
                    user_id=f"user-{i % 50}",
                    key_id=f"key-{tag}-{i % 50}",
                    model=("smollm2-135m-instruct", "chatbus-tiny")[i % 2],
                    text="An answer of a few dozen words. " * 4,
                    finish_reason="stop",
                    usage=Usage(prompt_tokens=40, completion_tokens=60, total_tokens=100),
                    timings=Timings(queue_wait_ms=3.0, time_to_first_token_ms=90.0, total_ms=900.0),
                    worker_id="worker-1",
                )
                await producer.send(
                    settings.topic(TopicName.COMPLETIONS),
                    encode_event(completion),
                    key=completion.conversation_id.encode(),
                )
                bar.update()
        await producer.flush()
    finally:
        await producer.stop()


async def run(count: int, batch: int) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    settings = get_settings().replace(
        **{"topic_prefix": f"bench{tag}.", "postgres_ledger_batch": batch}
    )
    await ensure_topics(settings)
    try:
        await _produce(settings, tag, count)
        baseline = await bare_consumer_rate(
            settings, [settings.topic(TopicName.COMPLETIONS)], count
        )
        reader = LedgerReader(settings)
        db0, cpu0, started = _postgres_cpu_s(settings), time.process_time(), time.perf_counter()
        await reader.start()
        with tqdm(total=count, desc="chatbus ledger", unit="row") as bar:
            while reader.rows_written < count:
                await asyncio.sleep(0.1)  # progress display cadence
                bar.n = reader.rows_written
                bar.refresh()
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        db1 = _postgres_cpu_s(settings)
        await reader.stop()
        rate = count / wall
        db_cpu = None if db0 is None or db1 is None else round(db1 - db0, 1)
        return {
            "completions": count,
            "batch": batch,
            "baseline_records_per_s": round(baseline),
            "ledger_rows_per_s": round(rate),
            "ratio_to_baseline": round(rate / baseline, 3),
            "ledger_cpu_s": round(cpu, 1),
            "postgres_cpu_s": db_cpu,
            "rows_per_cpu_s_ledger_and_postgres": round(count / (cpu + (db_cpu or 0))),
        }
    finally:
        with connect(settings) as conn:
            conn.execute("DELETE FROM usage_ledger WHERE request_id LIKE %s", (f"req-{tag}x%",))
            conn.execute("DELETE FROM usage_monthly WHERE key_id LIKE %s", (f"key-{tag}-%",))
            conn.execute(
                "DELETE FROM consumer_offsets WHERE group_id = %s",
                (settings.topic(settings.postgres.ledger_group),),
            )
        await delete_prefixed_topics(settings)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ledger", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--completions", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500, help="CHATBUS_POSTGRES_LEDGER_BATCH")
    args = parser.parse_args()
    result = asyncio.run(run(args.completions, args.batch))
    result["machine"] = {
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "command": f"python -m benchmarks.ledger --completions {args.completions} "
        f"--batch {args.batch}",
    }
    out = get_settings().state_dir / "bench" / "ledger.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(
        f"ledger {result['ledger_rows_per_s']} rows/s = {result['ratio_to_baseline']}x a bare "
        f"consumer ({result['baseline_records_per_s']} records/s); wrote {out}"
    )


if __name__ == "__main__":
    main()
