"""``python -m benchmarks.inference``: ceiling vs peer vs chatbus, one table, one JSON file."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from benchmarks.inference import report
from benchmarks.inference.bus import BusSystem
from benchmarks.inference.ceiling import CeilingSystem
from benchmarks.inference.config import ServingConfig, serving_config
from benchmarks.inference.cpu import cpu_times, used
from benchmarks.inference.gateway import GatewaySystem
from benchmarks.inference.llama_server import LlamaServerSystem
from benchmarks.inference.machine import machine_info, model_info
from benchmarks.inference.peer import PeerSystem
from benchmarks.inference.runner import Progress, System, measure
from benchmarks.inference.stages import (
    GatewayStageSummary,
    StageSummary,
    split_gateway_ttft,
    split_ttft,
)
from benchmarks.inference.stats import LevelSummary, summarize
from benchmarks.inference.targets import evaluate
from benchmarks.inference.workload import QUICK, Workload
from chatbus.errors import ChatbusError
from chatbus.logging import configure_logging
from chatbus.settings import get_settings

SYSTEMS: dict[str, Callable[[ServingConfig, float], System]] = {
    "ceiling": lambda config, _timeout: CeilingSystem(config),
    "peer": lambda config, timeout: PeerSystem(config, ready_timeout_s=timeout),
    "llama.cpp": lambda config, timeout: LlamaServerSystem(config, ready_timeout_s=timeout),
    "chatbus-gateway": lambda config, timeout: GatewaySystem(config, ready_timeout_s=timeout),
    "chatbus-bus": lambda config, timeout: BusSystem(config, ready_timeout_s=timeout),
}
DEFAULT_SYSTEMS = "ceiling,peer,llama.cpp,chatbus-gateway,chatbus-bus"


@dataclass
class SystemRun:
    """What one system's measurement gave besides its level summaries."""

    stages: list[StageSummary] = field(default_factory=list)
    gateway_stages: list[GatewayStageSummary] = field(default_factory=list)
    cpu_s: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


async def _run_system(
    system: System, workload: Workload, progress: Progress
) -> tuple[dict[int, LevelSummary], SystemRun]:
    run = SystemRun()
    async with system:
        processes = system.processes()
        before, started = cpu_times(processes), time.perf_counter()
        rounds = await measure(system, workload, progress)
        run.wall_s = round(time.perf_counter() - started, 1)
        run.cpu_s = used(before, cpu_times(processes))
        if isinstance(system, BusSystem):
            for level in rounds.values():
                ids = [t.request_id for r in level for t in r.traces if t.request_id]
                stage = split_ttft(level, await system.worker_timings(ids))
                if stage is not None:
                    run.stages.append(stage)
        if isinstance(system, GatewaySystem):
            lines = system.stage_lines()
            for level in rounds.values():
                found = split_gateway_ttft(level, lines)
                if found is not None:
                    run.gateway_stages.append(found)
    return {c: summarize(r) for c, r in rounds.items()}, run


async def _run_all(
    names: list[str], config: ServingConfig, workload: Workload, ready_timeout_s: float
) -> tuple[dict[str, dict[int, LevelSummary]], dict[str, SystemRun]]:
    steps = len(names) * (1 + workload.rounds * len(workload.concurrency))
    results: dict[str, dict[int, LevelSummary]] = {}
    runs: dict[str, SystemRun] = {}
    with tqdm(total=steps, unit="step", dynamic_ncols=True, file=sys.stderr) as bar:

        def progress(message: str) -> None:
            bar.write(message, file=sys.stderr)
            bar.update(1)

        # One system at a time: on a GPU, two copies of a large model (and two auto-sized
        # caches) would not fit side by side, and on a CPU they would share its cores.
        for name in names:
            bar.set_description(name)
            system = SYSTEMS[name](config, ready_timeout_s)
            results[name], runs[name] = await _run_system(system, workload, progress)
    return results, runs


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--concurrency",
    default="1,8,32",
    show_default=True,
    help="Concurrent streams per level, comma-separated.",
)
@click.option(
    "--max-tokens",
    type=int,
    default=64,
    show_default=True,
    help="New tokens asked per request (greedy).",
)
@click.option(
    "--rounds",
    type=int,
    default=3,
    show_default=True,
    help="Rounds per level; tokens/s is their median.",
)
@click.option(
    "--min-requests",
    type=int,
    default=16,
    show_default=True,
    help="Requests per round at least (each stream sends ceil(min/streams)).",
)
@click.option(
    "--systems",
    default=DEFAULT_SYSTEMS,
    show_default=True,
    help="Which systems to run, comma-separated.",
)
@click.option(
    "--temperature",
    type=float,
    default=0.0,
    show_default=True,
    help="Every request's temperature: 0 is greedy, above it samples.",
)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option(
    "--max-inflight",
    type=int,
    default=None,
    help="Batch slots of every system (default: the highest concurrency).",
)
@click.option(
    "--ready-timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds a server or worker may take to load the model and answer once.",
)
@click.option(
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON output (default: <state_dir>/bench/inference.json).",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Smoke run: streams 1,4, 16 tokens, 1 round (flags given explicitly win).",
)
@click.pass_context
def main(
    ctx: click.Context,
    concurrency: str,
    max_tokens: int,
    rounds: int,
    min_requests: int,
    systems: str,
    temperature: float,
    top_p: float,
    max_inflight: int | None,
    ready_timeout: float,
    output: Path | None,
    quick: bool,
) -> None:
    """Benchmark chatbus (through the gateway and on the bus) against the engine's in-process
    ceiling, `transformers serve` and the llama.cpp server, on the same prompts and batch slots.
    """
    settings = get_settings()
    configure_logging(
        settings.replace(**{"log_json": False, "log_level": "WARNING"}), component="bench"
    )

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE

    workload = QUICK if quick else Workload()
    overrides: dict[str, Any] = {
        "concurrency": _ints(concurrency),
        "max_new_tokens": max_tokens,
        "rounds": rounds,
        "min_requests": min_requests,
    }
    cli_names = {
        "concurrency": "concurrency",
        "max_new_tokens": "max_tokens",
        "rounds": "rounds",
        "min_requests": "min_requests",
    }
    try:
        workload = replace(
            workload, **{k: v for k, v in overrides.items() if not quick or given(cli_names[k])}
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    names = [n.strip() for n in systems.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        raise click.BadParameter(f"unknown systems {unknown}; choose from {sorted(SYSTEMS)}")
    config = serving_config(
        settings, max_inflight or workload.max_concurrency, temperature=temperature, top_p=top_p
    )
    output = output or settings.state_dir / "bench" / "inference.json"

    click.echo(
        f"model {config.model_path} ({config.engine} engine) on {config.device} "
        f"({config.dtype}); temperature {temperature}, top_p {top_p}; "
        f"batch slots {config.max_batch}; systems {', '.join(names)}; "
        f"streams {workload.concurrency}; {workload.max_new_tokens} tokens; "
        f"{workload.rounds} round(s)",
        err=True,
    )
    try:
        results, runs = asyncio.run(_run_all(names, config, workload, ready_timeout))
    except (ChatbusError, TimeoutError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)

    stages = [s for run in runs.values() for s in run.stages]
    gateway_stages = [s for run in runs.values() for s in run.gateway_stages]
    cpu = {name: {"wall_s": run.wall_s, "cpu_s": run.cpu_s} for name, run in runs.items()}
    targets = evaluate(results, cpu)
    run_config = {
        **asdict(workload),
        "max_inflight": config.max_batch,
        "num_blocks": config.num_blocks,
        "max_batch_tokens": config.max_batch_tokens,
        "block_size": config.block_size,
        "temperature": temperature,
        "top_p": top_p,
        "engine": config.engine,
        "model_name": config.model_name,
        "chunk_max_tokens": settings.worker.chunk_max_tokens,
        "chunk_max_ms": settings.worker.chunk_max_ms,
        "systems": names,
    }
    data = report.payload(
        machine=machine_info(config),
        model=model_info(config),
        config=run_config,
        results=results,
        stages=stages,
        gateway_stages=gateway_stages,
        cpu=cpu,
        targets=targets,
        command=sys.argv,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    report.write_json(output, data)
    click.echo(report.table(results))
    if gateway_stages:
        click.echo("\nchatbus-gateway time to first token by stage (ms, p50 / p99):")
        click.echo(report.gateway_stages_text(gateway_stages))
    if stages:
        click.echo("\nchatbus-bus time to first token by stage (ms):")
        click.echo(report.stages_text(stages))
    click.echo("\nCPU seconds per process while measured:")
    click.echo(report.cpu_text(cpu))
    click.echo("\n" + report.targets_text(targets))
    click.echo(f"\nwritten: {output}")


if __name__ == "__main__":
    main()
