"""The benchmark's outputs: the JSON record and the printed table."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inference_consumers.bench.stages import StageSummary
from inference_consumers.bench.stats import LevelSummary, ratio
from inference_consumers.bench.targets import Results, TargetResult, bus_added_ttft_ms

SYSTEM_ORDER = ("ceiling", "peer", "chatbus")


def _ordered(results: Results) -> list[tuple[str, LevelSummary]]:
    systems = [s for s in SYSTEM_ORDER if s in results] + sorted(
        s for s in results if s not in SYSTEM_ORDER)
    return [(s, results[s][c]) for s in systems for c in sorted(results[s])]


def ratios(results: Results) -> list[dict[str, Any]]:
    """chatbus tokens/s over ceiling's and peer's, per concurrency."""
    bus = results.get("chatbus", {})
    return [{
        "concurrency": c,
        "chatbus_over_ceiling": ratio(s.tokens_per_s, _tps(results, "ceiling", c)),
        "chatbus_over_peer": ratio(s.tokens_per_s, _tps(results, "peer", c)),
    } for c, s in sorted(bus.items())]


def _tps(results: Results, system: str, concurrency: int) -> float | None:
    summary = results.get(system, {}).get(concurrency)
    return summary.tokens_per_s if summary else None


def payload(*, machine: Mapping[str, Any], model: Mapping[str, Any],
            config: Mapping[str, Any], results: Results, stages: Sequence[StageSummary],
            targets: Sequence[TargetResult], command: Sequence[str],
            created_at: str) -> dict[str, Any]:
    return {
        "benchmark": "inference",
        "created_at": created_at,
        "command": list(command),
        "machine": dict(machine),
        "model": dict(model),
        "config": dict(config),
        "results": [{"system": system, **dataclasses.asdict(summary)}
                    for system, summary in _ordered(results)],
        "ratios": ratios(results),
        "bus_added_ttft_ms": bus_added_ttft_ms(results),
        "chatbus_ttft_stages_ms": [dataclasses.asdict(s) for s in stages],
        "targets": [{"name": t.target.name, "measured": t.measured, "bound": t.target.bound,
                     "comparison": t.target.comparison, "unit": t.target.unit,
                     "verdict": t.verdict, "gap": t.gap} for t in targets],
    }


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: Results) -> str:
    """A Markdown table, one row per system and concurrency."""
    by_c = {r["concurrency"]: r for r in ratios(results)}
    lines = [
        "| system | streams | tokens/s (median) | rounds min-max | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | ITL p99 ms | chatbus/ceiling | chatbus/peer |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for system, s in _ordered(results):
        r = by_c.get(s.concurrency, {}) if system == "chatbus" else {}
        lines.append(
            f"| {system} | {s.concurrency} | {s.tokens_per_s:.0f} | "
            f"{min(s.tokens_per_s_rounds):.0f}-{max(s.tokens_per_s_rounds):.0f} | "
            f"{_f(s.ttft_ms_p50)} | {_f(s.ttft_ms_p99)} | {_f(s.itl_ms_p50)} | "
            f"{_f(s.itl_ms_p99)} | {_f(r.get('chatbus_over_ceiling'), 2)} | "
            f"{_f(r.get('chatbus_over_peer'), 2)} |")
    return "\n".join(lines)


def targets_text(targets: Sequence[TargetResult]) -> str:
    lines = []
    for t in targets:
        unit = t.target.unit
        digits = 2 if unit == "x" else 1
        lines.append(
            f"{t.verdict:12} {t.target.name:30} measured {_f(t.measured, digits)}{unit} "
            f"(target {t.target.comparison} {t.target.bound:g}{unit}; "
            f"gap {_f(t.gap, digits)}{unit})")
    return "\n".join(lines)


def stages_text(stages: Sequence[StageSummary]) -> str:
    lines = ["| streams | requests | client TTFT p50/p99 | Kafka → worker p50/p99 "
             "| worker TTFT p50/p99 | rest (chunk → client) p50/p99 |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in stages:
        cells = [f"{_f(d['p50'])} / {_f(d['p99'])}"
                 for d in (s.client_ttft_ms, s.queue_wait_ms, s.worker_ttft_ms, s.rest_ms)]
        lines.append(f"| {s.concurrency} | {s.requests} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
