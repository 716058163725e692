"""The soak: a steady load on the default setup for a long time, and whether anything grows.

``python -m benchmarks.soak [--minutes 20] [--streams 8] [--tokens 32] [--interval 30]``
(``make soak``) starts a private copy of the ``make run`` pipeline (processors with moderation,
archiver, one worker, gateway; the model of ``make run``) on the services of ``make up``, keeps
``--streams`` greedy chat streams in flight through the gateway (the fault suite's client), and
every ``--interval`` seconds records: tokens per second delivered to the clients, requests ended
(whole or not), the resident memory and open file descriptors of every process (the pipeline's
and the services'), and the Kafka lag of every consumer group of the pipeline.

At the end it prints the samples and, per process, whether memory and descriptors **level off**:
the growth over the second half of the run (the first half is warm-up: caches, the JIT of the
JVM, the allocator's high-water mark) must stay under 5 % (and 16 MiB) of memory, and 8
descriptors. Writes ``.chatbus/soak/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
from tqdm import tqdm

from benchmarks.faults.__main__ import PROMPTS
from benchmarks.faults.load import Load
from benchmarks.inference.config import serving_config
from benchmarks.inference.cpu import cpu_times, machine_cpu_seconds
from benchmarks.inference.gateway import GatewaySystem
from benchmarks.private_run import run_and_keep
from chatbus.kafka.lag import group_lag
from chatbus.settings import Settings, get_settings

MIB = 1024 * 1024
RSS_GROWTH = 0.05  # of the process's memory at half time
RSS_SLACK_MIB = 16.0
FD_SLACK = 8


@dataclass
class Sample:
    at_s: float
    tokens_per_s: float
    requests: int
    not_whole: int
    rss_mib: dict[str, float] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    lag: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds so far, per process
    machine_cpu_s: dict[str, float] = field(default_factory=dict)  # whole machine: busy, steal


def _process_stats(
    processes: dict[str, int],
) -> tuple[dict[str, float], dict[str, int], dict[str, float]]:
    rss: dict[str, float] = {}
    fds: dict[str, int] = {}
    for name, pid in processes.items():
        try:
            proc = psutil.Process(pid)
            rss[name] = round(proc.memory_info().rss / MIB, 1)
            fds[name] = proc.num_fds()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    cpu = {name: round(seconds, 2) for name, seconds in cpu_times(processes).items()}
    return rss, fds, cpu


def _machine_cpu() -> dict[str, float]:
    busy, steal = machine_cpu_seconds()
    return {"busy": round(busy, 2), "steal": round(steal, 2)}


async def _lag(settings: Settings) -> dict[str, int]:
    out: dict[str, int] = {}
    for row in await group_lag(settings):
        name = row.group.removeprefix(settings.kafka.topic_prefix)
        out[name] = out.get(name, 0) + row.lag
    return out


def levels_off(samples: list[Sample]) -> dict[str, dict[str, Any]]:
    """Per process: memory and descriptors at half time and at the end, and whether each grew
    past its allowance over the second half."""
    half = samples[len(samples) // 2]
    last = samples[-1]
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(last.rss_mib):
        if name not in half.rss_mib:
            continue  # restarted or new: no comparable half-time figure
        rss0, rss1 = half.rss_mib[name], last.rss_mib[name]
        fd0, fd1 = half.fds.get(name, 0), last.fds.get(name, 0)
        peak_first = max(s.rss_mib.get(name, 0.0) for s in samples[: len(samples) // 2 + 1])
        rss_ok = rss1 - rss0 <= max(RSS_SLACK_MIB, RSS_GROWTH * rss0)
        fd_ok = fd1 - fd0 <= FD_SLACK
        out[name] = {
            "rss_half_mib": rss0,
            "rss_end_mib": rss1,
            "rss_peak_first_half_mib": peak_first,
            "fds_half": fd0,
            "fds_end": fd1,
            "levels_off": rss_ok and fd_ok,
        }
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = get_settings()
    config = serving_config(base, base.worker.max_inflight)
    system = GatewaySystem(config)
    samples: list[Sample] = []
    print(
        f"==> soak: {args.minutes:g} min, {args.streams} streams of {args.tokens} tokens "
        f"({config.model_name}, moderation on, the default pipeline)"
    )
    async with system:
        port = system.settings.gateway.port
        load = Load(
            f"http://127.0.0.1:{port}", system.api_key, config.model_name, PROMPTS, args.tokens
        )
        running = asyncio.create_task(load.run(args.streams))
        started = time.monotonic()
        seen = 0
        total = int(args.minutes * 60 / args.interval)
        try:
            for _ in tqdm(range(total), desc="soak", unit="sample"):
                await asyncio.sleep(args.interval)  # the sampling period itself
                ended = load.outcomes[seen:]
                seen += len(ended)
                rss, fds, cpu = _process_stats(system.processes())
                sample = Sample(
                    at_s=round(time.monotonic() - started, 1),
                    tokens_per_s=round(sum(o.tokens for o in ended) / args.interval, 2),
                    requests=len(ended),
                    not_whole=sum(o.kind != "whole" for o in ended),
                    rss_mib=rss,
                    fds=fds,
                    lag=await _lag(system.settings),
                    cpu_s=cpu,
                    machine_cpu_s=_machine_cpu(),
                )
                samples.append(sample)
                tqdm.write(
                    f"    {sample.at_s:7.0f} s  {sample.tokens_per_s:6.1f} tok/s  "
                    f"{sample.requests} ended ({sample.not_whole} not whole)  "
                    f"lag {sum(sample.lag.values())}"
                )
        finally:
            load.stop()
            await running
    return {
        "minutes": args.minutes,
        "streams": args.streams,
        "tokens": args.tokens,
        "model": config.model_name,
        "samples": [asdict(s) for s in samples],
        "processes": levels_off(samples) if len(samples) >= 2 else {},
    }


def report(result: dict[str, Any]) -> str:
    samples = [Sample(**s) for s in result["samples"]]
    names = sorted({n for s in samples for n in s.rss_mib})
    every = max(1, len(samples) // 10)
    head = "| t (min) | tokens/s | requests ended (not whole) | lag | " + " | ".join(
        f"{n} RSS MiB / fds" for n in names
    )
    lines = [head + " |", "|" + " ---: |" * (4 + len(names))]
    for s in samples[every - 1 :: every]:
        cells = [f"{s.rss_mib.get(n, '-')} / {s.fds.get(n, '-')}" for n in names]
        lines.append(
            f"| {s.at_s / 60:.1f} | {s.tokens_per_s} | {s.requests} ({s.not_whole}) "
            f"| {sum(s.lag.values())} | " + " | ".join(cells) + " |"
        )
    lines += ["", *cpu_report(samples, every)]
    lines += ["", "| process | RSS at half time → end (MiB) | fds half → end | levels off |"]
    lines.append("| --- | ---: | ---: | --- |")
    for name, p in result["processes"].items():
        lines.append(
            f"| {name} | {p['rss_half_mib']} → {p['rss_end_mib']} "
            f"| {p['fds_half']} → {p['fds_end']} | {'yes' if p['levels_off'] else '**no**'} |"
        )
    return "\n".join(lines)


def cpu_report(samples: list[Sample], every: int) -> list[str]:
    """Where the CPU went between the rows of the table above: cores used by the worker, the
    processors, the rest of the pipeline and services, and the machine's other load and steal;
    and the tokens the worker delivered per CPU-second (falls if each token costs it more)."""
    rows = [s for s in samples[every - 1 :: every] if s.cpu_s]
    if len(rows) < 2:
        return []
    lines = [
        "| t (min) | worker cores | processors cores | rest of the pipeline | rest of the machine "
        "| stolen | tokens per worker CPU-s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for before, after in itertools.pairwise(rows):
        span = after.at_s - before.at_s
        used = {  # a process new or restarted since ``before``: all it used is since then
            n: seconds - before.cpu_s[n] if before.cpu_s.get(n, seconds + 1) <= seconds else seconds
            for n, seconds in after.cpu_s.items()
        }
        worker = sum(v for n, v in used.items() if n.startswith("worker"))
        processors = sum(v for n, v in used.items() if n.startswith("processors"))
        rest = sum(used.values()) - worker - processors
        busy = after.machine_cpu_s["busy"] - before.machine_cpu_s["busy"]
        steal = after.machine_cpu_s["steal"] - before.machine_cpu_s["steal"]
        tokens = sum(
            s.tokens_per_s * (s.at_s - p.at_s)
            for p, s in itertools.pairwise(samples)
            if before.at_s < s.at_s <= after.at_s
        )
        lines.append(
            f"| {after.at_s / 60:.1f} | {worker / span:.2f} | {processors / span:.2f} "
            f"| {rest / span:.2f} | {(busy - sum(used.values())) / span:.2f} | {steal / span:.2f} "
            f"| {tokens / worker if worker else float('nan'):.1f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--interval", type=float, default=30.0)
    args = parser.parse_args()
    run_and_keep("soak", run(args), report)


if __name__ == "__main__":
    main()
