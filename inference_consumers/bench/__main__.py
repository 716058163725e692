"""``python -m inference_consumers.bench``: ceiling vs peer vs chatbus, one table, one JSON file."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from chatbus.errors import ChatbusError
from chatbus.logging import configure_logging
from chatbus.settings import get_settings
from inference_consumers.bench import report
from inference_consumers.bench.bus import BusSystem
from inference_consumers.bench.ceiling import CeilingSystem
from inference_consumers.bench.config import ServingConfig, serving_config
from inference_consumers.bench.machine import machine_info, model_info
from inference_consumers.bench.peer import PeerSystem
from inference_consumers.bench.runner import Progress, System, measure
from inference_consumers.bench.stages import StageSummary, split_ttft
from inference_consumers.bench.stats import LevelSummary, summarize
from inference_consumers.bench.targets import evaluate
from inference_consumers.bench.workload import QUICK, Workload

SYSTEMS: dict[str, Callable[[ServingConfig, float], System]] = {
    "ceiling": lambda config, _timeout: CeilingSystem(config),
    "peer": lambda config, timeout: PeerSystem(config, ready_timeout_s=timeout),
    "chatbus": lambda config, timeout: BusSystem(config, ready_timeout_s=timeout),
}


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


async def _run_system(system: System, workload: Workload,
                      progress: Progress) -> tuple[dict[int, LevelSummary], list[StageSummary]]:
    async with system:
        rounds = await measure(system, workload, progress)
        stages: list[StageSummary] = []
        if isinstance(system, BusSystem):
            for level in rounds.values():
                ids = [t.request_id for r in level for t in r.traces if t.request_id]
                stage = split_ttft(level, await system.worker_timings(ids))
                if stage is not None:
                    stages.append(stage)
    return {c: summarize(r) for c, r in rounds.items()}, stages


async def _run_all(names: list[str], config: ServingConfig, workload: Workload,
                   ready_timeout_s: float
                   ) -> tuple[dict[str, dict[int, LevelSummary]], list[StageSummary]]:
    steps = len(names) * (1 + workload.rounds * len(workload.concurrency))
    results: dict[str, dict[int, LevelSummary]] = {}
    stages: list[StageSummary] = []
    with tqdm(total=steps, unit="step", dynamic_ncols=True, file=sys.stderr) as bar:
        def progress(message: str) -> None:
            bar.write(message, file=sys.stderr)
            bar.update(1)

        # One system at a time: on a GPU, two copies of a large model (and two auto-sized
        # caches) would not fit side by side, and on a CPU they would share its cores.
        for name in names:
            bar.set_description(name)
            system = SYSTEMS[name](config, ready_timeout_s)
            results[name], found = await _run_system(system, workload, progress)
            stages.extend(found)
    return results, stages


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--concurrency", default="1,8,32", show_default=True,
              help="Concurrent streams per level, comma-separated.")
@click.option("--max-tokens", type=int, default=64, show_default=True,
              help="New tokens asked per request (greedy).")
@click.option("--rounds", type=int, default=3, show_default=True,
              help="Rounds per level; tokens/s is their median.")
@click.option("--min-requests", type=int, default=16, show_default=True,
              help="Requests per round at least (each stream sends ceil(min/streams)).")
@click.option("--systems", default="ceiling,peer,chatbus", show_default=True,
              help="Which systems to run, comma-separated.")
@click.option("--max-inflight", type=int, default=None,
              help="Batch slots of every system (default: the highest concurrency).")
@click.option("--ready-timeout", type=float, default=300.0, show_default=True,
              help="Seconds a server or worker may take to load the model and answer once.")
@click.option("--output", type=click.Path(path_type=Path), default=None,
              help="JSON output (default: <state_dir>/bench/inference.json).")
@click.option("--quick", is_flag=True,
              help="Smoke run: streams 1,4, 16 tokens, 1 round (flags given explicitly win).")
@click.pass_context
def main(ctx: click.Context, concurrency: str, max_tokens: int, rounds: int, min_requests: int,
         systems: str, max_inflight: int | None, ready_timeout: float, output: Path | None,
         quick: bool) -> None:
    """Benchmark chatbus against the model's in-process ceiling and `transformers serve`."""
    settings = get_settings()
    configure_logging(settings.model_copy(update={"log_json": False, "log_level": "WARNING"}),
                      component="bench")

    def given(name: str) -> bool:
        return ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE

    workload = QUICK if quick else Workload()
    overrides: dict[str, Any] = {"concurrency": _ints(concurrency), "max_new_tokens": max_tokens,
                 "rounds": rounds, "min_requests": min_requests}
    cli_names = {"concurrency": "concurrency", "max_new_tokens": "max_tokens",
                 "rounds": "rounds", "min_requests": "min_requests"}
    try:
        workload = replace(workload, **{k: v for k, v in overrides.items()
                                        if not quick or given(cli_names[k])})
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    names = [n.strip() for n in systems.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SYSTEMS))
    if unknown:
        raise click.BadParameter(f"unknown systems {unknown}; choose from {sorted(SYSTEMS)}")
    config = serving_config(settings, max_inflight or workload.max_concurrency)
    output = output or settings.state_dir / "bench" / "inference.json"

    click.echo(f"model {config.model_path} on {config.device} ({config.dtype}); "
               f"batch slots {config.max_batch}; systems {', '.join(names)}; "
               f"streams {workload.concurrency}; {workload.max_new_tokens} tokens; "
               f"{workload.rounds} round(s)", err=True)
    try:
        results, stages = asyncio.run(_run_all(names, config, workload, ready_timeout))
    except (ChatbusError, TimeoutError) as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(1)

    targets = evaluate(results)
    run_config = {**asdict(workload), "max_inflight": config.max_batch,
                  "num_blocks": config.num_blocks, "max_batch_tokens": config.max_batch_tokens,
                  "block_size": config.block_size, "temperature": 0.0,
                  "chunk_max_tokens": settings.chunk_max_tokens,
                  "chunk_max_ms": settings.chunk_max_ms, "systems": names}
    data = report.payload(machine=machine_info(config), model=model_info(config),
                          config=run_config, results=results, stages=stages, targets=targets,
                          command=sys.argv,
                          created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    report.write_json(output, data)
    click.echo(report.table(results))
    if stages:
        click.echo("\nchatbus time to first token by stage (ms):")
        click.echo(report.stages_text(stages))
    click.echo("\n" + report.targets_text(targets))
    click.echo(f"\nwritten: {output}")


if __name__ == "__main__":
    main()
