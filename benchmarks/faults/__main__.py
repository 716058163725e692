"""The fault suite: every service killed under load, one at a time, and nothing lost.

``python -m benchmarks.faults [--faults worker-kill,redis-down] [--streams 16] [--tokens 32]``
(``make faults``) starts a private copy of the whole local pipeline (processors with moderation,
archiver, **two** workers, gateway; the model of ``make run``) under its own supervisor, on the
services of ``make up``, and:

1. answers each prompt once with nothing wrong: the **reference** (greedy, fixed length);
2. for each fault: drives ``--streams`` concurrent streams through the gateway
   (:mod:`benchmarks.faults.load`), injects the fault after a warm-up, ends it (or lets the
   supervisor restart what was killed), keeps the load on, then lets the requests in flight end;
3. audits every request: whole (its text equal to the reference), failed with an error that says
   to retry, hung, failed otherwise, or a mismatch (duplicated or missing text); the turns of the
   whole ones in MongoDB (written by the history agent); and at the end ``chatbus archive
   verify`` over everything the run put on the bus.

Prints one Markdown table (the one in docs/reliability.md) and writes
``.chatbus/faults/results.json`` (with each fault's largest gaps and when they began) and keeps
the private pipeline's logs in ``.chatbus/faults/logs``. ``--brokers 3`` adds a broker killed out
of three; it needs ``make up`` with ``CHATBUS_LOCAL_KAFKA_BROKERS=3``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.faults.garbage import dead_lettered, send_garbage
from benchmarks.faults.load import Load, Outcome, audit
from benchmarks.inference.config import serving_config
from benchmarks.inference.gateway import GatewaySystem
from benchmarks.private_run import run_and_keep
from chatbus.settings import Settings, get_settings
from chatbus.stores import mongo_client
from infra.local import manager, process
from infra.local.supervisor import read_status

PROMPTS = [
    "Count from one to twenty.",
    "Name the planets of the solar system.",
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List five fruits.",
    "Explain what a bus is.",
    "Say hello in three languages.",
    "Describe a cat in one sentence.",
]


@dataclass
class Fault:
    name: str
    what: str
    inject: Callable[[FaultContext], Awaitable[None]]
    needs_brokers: int = 1


@dataclass
class FaultContext:
    base: Settings  # the services' settings (make up)
    pipeline: Settings  # the private pipeline's
    outage_s: float
    garbage_per_topic: int = 2000
    note: str = ""  # what a fault found, for its row
    fault_at: float = 0.0  # monotonic: when the last fault was injected
    fault_at_utc: str = ""  # the same moment on the logs' clock

    def restarts(self) -> int:
        rows = read_status(self.pipeline).values()
        return sum(int(str(row.get("restarts") or 0)) for row in rows)

    def pid_of(self, replica: str) -> int:
        row = read_status(self.pipeline).get(replica) or {}
        pid = row.get("pid")
        if not isinstance(pid, int):
            raise RuntimeError(f"{replica} is not running: {row}")
        return pid

    async def kill_replica(self, replica: str, sig: int) -> None:
        os.killpg(self.pid_of(replica), sig)  # the supervisor restarts it

    async def service_frozen(self, service: str) -> None:
        """The service stops answering (SIGSTOP) for the outage, then carries on (SIGCONT):
        an outage that keeps its data (the local S3 endpoint, moto, keeps objects in memory
        only, so a restart would lose the archive for a reason no real S3 has)."""
        pid = process.running_pid(self.base, service)
        if pid is None:
            raise RuntimeError(f"{service} is not running: make up")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.outage_s)  # the outage itself
        finally:
            os.kill(pid, signal.SIGCONT)

    async def service_down(self, service: str) -> None:
        await asyncio.to_thread(manager.down, self.base, [service])
        await asyncio.sleep(self.outage_s)  # the outage itself
        await asyncio.to_thread(manager.up, self.base, [service])


async def _worker_kill(ctx: FaultContext) -> None:
    await ctx.kill_replica("worker-1", signal.SIGKILL)


async def _worker_term(ctx: FaultContext) -> None:
    await ctx.kill_replica("worker-1", signal.SIGTERM)


async def _processors_kill(ctx: FaultContext) -> None:
    await ctx.kill_replica("processors", signal.SIGKILL)


async def _gateway_kill(ctx: FaultContext) -> None:
    await ctx.kill_replica("gateway", signal.SIGKILL)


async def _kafka_restart(ctx: FaultContext) -> None:
    await asyncio.to_thread(manager.down, ctx.base, ["kafka"])
    await asyncio.to_thread(manager.up, ctx.base, ["kafka"])


async def _broker_kill(ctx: FaultContext) -> None:
    pid = process.running_pid(ctx.base, "kafka-2")
    if pid is None:
        raise RuntimeError("kafka-2 is not running: make up with CHATBUS_LOCAL_KAFKA_BROKERS=3")
    os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(ctx.outage_s)
    await asyncio.to_thread(manager.up, ctx.base, ["kafka-2"])


async def _garbage(ctx: FaultContext) -> None:
    since_ms = int(time.time() * 1000)
    restarts = ctx.restarts()
    sent = await send_garbage(ctx.pipeline, ctx.garbage_per_topic)
    total = sum(sent.values())
    found = await dead_lettered(ctx.pipeline, since_ms, sent, timeout_s=300)
    per_topic = ", ".join(
        f"{topic.removeprefix(ctx.pipeline.kafka.topic_prefix)} {found[topic]}/{n}"
        for topic, n in sent.items()
    )
    ctx.note = (
        f"{sum(found.values())} of {total} in chat.dlq ({per_topic}); "
        f"component restarts {ctx.restarts() - restarts}"
    )


FAULTS = {
    f.name: f
    for f in (
        Fault("none", "nothing (the control run)", lambda ctx: asyncio.sleep(0)),
        Fault("worker-kill", "SIGKILL one of two workers", _worker_kill),
        Fault("worker-term", "SIGTERM one of two workers (drain)", _worker_term),
        Fault("processors-kill", "SIGKILL the processors", _processors_kill),
        Fault("gateway-kill", "SIGKILL the gateway (clients resume)", _gateway_kill),
        Fault("redis-down", "Redis down for the outage", lambda ctx: ctx.service_down("redis")),
        Fault(
            "ferretdb-down",
            "FerretDB down for the outage",
            lambda ctx: ctx.service_down("ferretdb"),
        ),
        Fault(
            "s3-down",
            "the S3 endpoint frozen for the outage",
            lambda ctx: ctx.service_frozen("s3"),
        ),
        Fault("kafka-restart", "restart the single broker", _kafka_restart),
        Fault("garbage", "malformed messages on every consumed topic", _garbage),
        Fault("broker-kill", "SIGKILL one broker of three", _broker_kill, needs_brokers=3),
    )
}


async def _reference(load: Load) -> dict[int, str]:
    import httpx

    out: dict[int, str] = {}
    async with httpx.AsyncClient(
        base_url=load.base_url, headers=load.headers, timeout=120
    ) as client:
        for n in range(len(load.prompts)):
            outcome = await load.one(client, n)
            if outcome.kind != "whole":
                raise RuntimeError(f"the reference run failed: {outcome}")
            out[n] = outcome.text
    return out


def _recorded(settings: Settings, outcomes: list[Outcome]) -> dict[str, str]:
    """The answer the system recorded of each ended request (its turn in MongoDB), by the id
    the client saw (``chatcmpl-…``)."""
    ids = {"req-" + o.request_id.removeprefix("chatcmpl-"): o.request_id for o in outcomes}
    mongo = mongo_client(settings)
    try:
        turns = mongo[settings.mongo.db]["turns"]
        found = turns.find(
            {"_id": {"$in": list(ids)}, "finish_reason": {"$ne": None}}, {"answer": 1}
        )
        return {ids[t["_id"]]: str(t.get("answer") or "") for t in found}
    finally:
        mongo.close()


async def _history_caught_up(settings: Settings, outcomes: list[Outcome]) -> dict[str, str]:
    """The recorded answers, once every whole request has its turn (or after 120 s)."""
    whole = {o.request_id for o in outcomes if o.kind == "whole" and o.request_id}
    deadline = time.monotonic() + 120
    while True:
        recorded = await asyncio.to_thread(_recorded, settings, outcomes)
        if whole <= recorded.keys() or time.monotonic() > deadline:
            return recorded
        await asyncio.sleep(1.0)  # the history agent catching up, within the deadline


async def _one_fault(
    fault: Fault, load: Load, ctx: FaultContext, streams: int, warmup_s: float, after_s: float
) -> list[Outcome]:
    load.reset()
    running = asyncio.create_task(load.run(streams))
    await asyncio.sleep(warmup_s)  # the load's steady state before the fault
    started = time.monotonic()
    ctx.fault_at_utc = datetime.now(UTC).isoformat()
    await fault.inject(ctx)
    await asyncio.sleep(after_s)  # the load goes on after the fault
    load.stop()
    await running
    print(f"    {fault.name}: injected and recovered in {time.monotonic() - started:.1f} s")
    ctx.fault_at = started
    return list(load.outcomes)


def largest_gaps(outcomes: list[Outcome], fault_at: float, top: int = 8) -> list[list[float | str]]:
    """The ``top`` largest gaps: [seconds after the fault they began (negative: before), length,
    request id] — whether a gap is the fault's (it begins at the fault) or the load's (any
    time), and which request's, to find it in the workers' logs."""
    gaps = sorted(outcomes, key=lambda o: -o.largest_gap_s)[:top]
    return [
        [
            round(o.largest_gap_at - fault_at, 2),
            round(o.largest_gap_s, 2),
            "req-" + o.request_id.removeprefix("chatcmpl-"),  # as the workers log it
        ]
        for o in gaps
    ]


def _verify_once(env: dict[str, str]) -> tuple[bool, list[str]]:
    result = subprocess.run(
        [sys.executable, "-m", "chatbus.cli", "archive", "verify"],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = result.stdout.strip().splitlines() or [result.stderr.strip()[-300:]]
    return result.returncode == 0, lines


def _verify_archive(env: dict[str, str], timeout_s: float = 180.0) -> str:
    """``chatbus archive verify`` once the archiver has caught up (it flushes by size and time,
    so the newest records reach the object store a little after the broker); the last summary
    line, and the first problems it names when it still fails at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        ok, lines = _verify_once(env)
        if ok or time.monotonic() > deadline:
            break
        time.sleep(5.0)  # the archiver's next flush, within the deadline
    problems = [line.strip() for line in lines if "FAIL" in line or "gap" in line]
    return lines[-1] + ("" if ok else " — " + "; ".join(problems[:4]))


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = get_settings()
    chosen = [FAULTS[name] for name in args.faults]
    skipped = [f for f in chosen if f.needs_brokers > base.local.kafka_brokers]
    chosen = [f for f in chosen if f not in skipped]
    config = serving_config(base, base.worker.max_inflight)
    system = GatewaySystem(config)
    # two workers, each able to take every stream: a survivor absorbs the other's at once
    system.add_env(
        CHATBUS_LOCAL_WORKER_REPLICAS="2",
        CHATBUS_MAX_INFLIGHT=str(args.streams),
        CHATBUS_GATEWAY_RESUME_GRACE_S="15",
    )
    rows: list[dict[str, Any]] = []
    print(f"==> a private pipeline with two workers ({config.model_name}, moderation on)")
    async with system:
        port = system.settings.gateway.port
        load = Load(
            f"http://127.0.0.1:{port}", system.api_key, config.model_name, PROMPTS, args.tokens
        )
        reference = await _reference(load)
        ctx = FaultContext(base, system.settings, args.outage)
        for fault in tqdm(chosen, desc="faults", unit="fault"):
            outcomes = await _one_fault(fault, load, ctx, args.streams, args.warmup, args.after)
            recorded = await _history_caught_up(system.settings, outcomes)
            row = {"fault": fault.name, "what": fault.what, **audit(outcomes, reference, recorded)}
            whole = [o for o in outcomes if o.kind in ("whole", "mismatch")]
            row["turns"] = f"{sum(o.request_id in recorded for o in whole)}/{len(whole)}"
            row["note"], ctx.note = ctx.note, ""
            row["fault_at"] = ctx.fault_at_utc
            row["largest_gaps"] = largest_gaps(outcomes, ctx.fault_at)
            row["why_not_whole"] = dict(
                Counter(o.detail[:120] for o in outcomes if o.kind not in ("whole", "mismatch"))
            )
            rows.append(row)
            print(f"    {json.dumps(row)}")
        verify = await asyncio.to_thread(_verify_archive, system.env)
        for row in rows:
            row["archive"] = verify
        kept = Path(base.state_dir) / "faults" / "logs"
        shutil.rmtree(kept, ignore_errors=True)
        shutil.copytree(system.settings.log_dir, kept)
    for fault in skipped:
        rows.append({"fault": fault.name, "what": fault.what, "skipped": "needs 3 brokers"})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| fault | sent | whole | retriable error | hung | lost/failed | duplicated | missing "
        "| resumed | largest gap p99 (s) | turns in MongoDB | differs from reference "
        "| archive verify | note |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| --- | --- |\n"
    )
    lines = []
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['what']} | {r['skipped']} |" + " |" * 12)
            continue
        lines.append(
            f"| {r['what']} | {r['sent']} | {r['whole']} | {r['retriable']} | {r['hung']} "
            f"| {r['failed']} | {r['duplicated']} | {r['missing']} | {r['resumed']} "
            f"| {r['largest_gap_p99_s']} | {r['turns']} | {r['differs_from_reference']} "
            f"| {r['archive']} | {r.get('note', '')} |"
        )
    return head + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--faults",
        type=lambda v: v.split(","),
        default=[n for n in FAULTS if n != "broker-kill"] + ["broker-kill"],
        help=f"comma-separated, of: {', '.join(FAULTS)}",
    )
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--after", type=float, default=15.0)
    parser.add_argument("--outage", type=float, default=30.0)
    args = parser.parse_args()
    unknown = [n for n in args.faults if n not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")
    run_and_keep("faults", run(args), table)


if __name__ == "__main__":
    main()
