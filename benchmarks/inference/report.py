"""The benchmark's outputs: the JSON record and the printed table."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.inference.stages import GATEWAY_STAGES, GatewayStageSummary, StageSummary
from benchmarks.inference.stats import LevelSummary, ratio
from benchmarks.inference.targets import Cpu, Results, TargetResult, added_ttft_ms

SYSTEM_ORDER = ("ceiling", "peer", "llama.cpp", "chatbus-gateway", "chatbus-bus")


def _ordered(results: Results) -> list[tuple[str, LevelSummary]]:
    systems = [s for s in SYSTEM_ORDER if s in results] + sorted(
        s for s in results if s not in SYSTEM_ORDER
    )
    return [(s, results[s][c]) for s in systems for c in sorted(results[s])]


def ratios(results: Results) -> list[dict[str, Any]]:
    """Each chatbus system's tokens/s over the ceiling's and each peer's, per concurrency."""
    out = []
    for system in ("chatbus-gateway", "chatbus-bus"):
        for c, s in sorted(results.get(system, {}).items()):
            out.append(
                {
                    "system": system,
                    "concurrency": c,
                    "over_ceiling": ratio(s.tokens_per_s, _tps(results, "ceiling", c)),
                    "over_peer": ratio(s.tokens_per_s, _tps(results, "peer", c)),
                    "over_llama_cpp": ratio(s.tokens_per_s, _tps(results, "llama.cpp", c)),
                }
            )
    return out


def _tps(results: Results, system: str, concurrency: int) -> float | None:
    summary = results.get(system, {}).get(concurrency)
    return summary.tokens_per_s if summary else None


def payload(
    *,
    machine: Mapping[str, Any],
    model: Mapping[str, Any],
    config: Mapping[str, Any],
    results: Results,
    stages: Sequence[StageSummary],
    gateway_stages: Sequence[GatewayStageSummary],
    cpu: Cpu,
    targets: Sequence[TargetResult],
    command: Sequence[str],
    created_at: str,
) -> dict[str, Any]:
    return {
        "benchmark": "inference",
        "created_at": created_at,
        "command": list(command),
        "machine": dict(machine),
        "model": dict(model),
        "config": dict(config),
        "results": [
            {"system": system, **dataclasses.asdict(summary)}
            for system, summary in _ordered(results)
        ],
        "ratios": ratios(results),
        "gateway_added_ttft_ms": added_ttft_ms(results, "chatbus-gateway"),
        "bus_added_ttft_ms": added_ttft_ms(results, "chatbus-bus"),
        "gateway_ttft_stages_ms": [dataclasses.asdict(s) for s in gateway_stages],
        "chatbus_ttft_stages_ms": [dataclasses.asdict(s) for s in stages],
        "cpu": {name: dict(value) for name, value in cpu.items()},
        "targets": [
            {
                "name": t.target.name,
                "measured": t.measured,
                "bound": t.target.bound,
                "comparison": t.target.comparison,
                "unit": t.target.unit,
                "verdict": t.verdict,
                "gap": t.gap,
            }
            for t in targets
        ],
    }


def write_json(path: Path, data: Mapping[str, Any] | Sequence[Any]) -> None:
    """``data`` as JSON at ``path``, written whole or not at all (every benchmark's results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: Results) -> str:
    """A Markdown table, one row per system and concurrency."""
    by_key = {(r["system"], r["concurrency"]): r for r in ratios(results)}
    lines = [
        "| system | streams | tokens/s (median) | rounds min-max | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | ITL p99 ms | / ceiling | / peer | / llama.cpp |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system, s in _ordered(results):
        r = by_key.get((system, s.concurrency), {})
        lines.append(
            f"| {system} | {s.concurrency} | {s.tokens_per_s:.1f} | "
            f"{min(s.tokens_per_s_rounds):.1f}-{max(s.tokens_per_s_rounds):.1f} | "
            f"{_f(s.ttft_ms_p50)} | {_f(s.ttft_ms_p99)} | {_f(s.itl_ms_p50)} | "
            f"{_f(s.itl_ms_p99)} | {_f(r.get('over_ceiling'), 2)} | "
            f"{_f(r.get('over_peer'), 2)} | {_f(r.get('over_llama_cpp'), 2)} |"
        )
    return "\n".join(lines)


def gateway_stages_text(stages: Sequence[GatewayStageSummary]) -> str:
    names = [s.removesuffix("_ms") for s in GATEWAY_STAGES]
    lines = [
        "| streams | requests | client TTFT | " + " | ".join(names) + " |",
        "| ---: | ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for s in stages:
        cells = [f"{_f(s.client_ttft_ms['p50'])} / {_f(s.client_ttft_ms['p99'])}"]
        cells += [
            f"{_f(s.stages_ms[n]['p50'])} / {_f(s.stages_ms[n]['p99'])}" for n in GATEWAY_STAGES
        ]
        lines.append(f"| {s.concurrency} | {s.requests} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_text(cpu: Cpu) -> str:
    lines = ["| system | measured wall s | CPU seconds by process |", "| --- | ---: | --- |"]
    for system, value in cpu.items():
        used = ", ".join(
            f"{name} {seconds:.1f}"
            for name, seconds in sorted(value.get("cpu_s", {}).items(), key=lambda kv: -kv[1])
        )
        lines.append(f"| {system} | {value.get('wall_s', 0):.1f} | {used or '-'} |")
    return "\n".join(lines)


def targets_text(targets: Sequence[TargetResult]) -> str:
    lines = []
    for t in targets:
        unit = t.target.unit
        digits = 2 if unit == "x" else 1
        lines.append(
            f"{t.verdict:12} {t.target.name:30} measured {_f(t.measured, digits)}{unit} "
            f"(target {t.target.comparison} {t.target.bound:g}{unit}; "
            f"gap {_f(t.gap, digits)}{unit})"
        )
    return "\n".join(lines)


def stages_text(stages: Sequence[StageSummary]) -> str:
    lines = [
        "| streams | requests | client TTFT p50/p99 | Kafka → worker p50/p99 "
        "| worker TTFT p50/p99 | rest (chunk → client) p50/p99 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in stages:
        cells = [
            f"{_f(d['p50'])} / {_f(d['p99'])}"
            for d in (s.client_ttft_ms, s.queue_wait_ms, s.worker_ttft_ms, s.rest_ms)
        ]
        lines.append(f"| {s.concurrency} | {s.requests} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
