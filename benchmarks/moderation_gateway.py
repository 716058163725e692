"""Moderation's judgement on the user's path: the held-back evaluation cases sent through the
gateway of a private pipeline (processors, worker, gateway), as a client sends them.

    .venv/bin/python -m benchmarks.moderation_gateway [--concurrency 4]      (needs `make up`)

Input cases go as ``POST /v1/chat/completions`` with their whole conversation and
``max_tokens: 1``: a refusal is HTTP 400 ``content_policy_violation``. Answer cases (what output
moderation judges) go to ``POST /v1/moderations``, which the processors' loaded classifier and
thresholds answer. The abuse block is raised out of reach so one test user is never blocked, and
the rate limits with it. Prints recall on unsafe cases, the false-positive rate on safe ones and
the everyday requests refused, per form, beside the committed offline figures
(``stream_processors/moderation/evaluation.json``); writes ``<state_dir>/bench/
moderation_gateway.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx
from tqdm import tqdm

from benchmarks.inference.config import serving_config
from benchmarks.inference.errors import BenchError
from benchmarks.inference.gateway import GatewaySystem
from chatbus.settings import get_settings
from stream_processors.moderation.evalset import EVERYDAY, EvalCase, load_evalset, split_of
from stream_processors.moderation.evaluate import (
    BASELINE_FILE,
    Rate,
    as_json,
    production_classifier,
    refusal_rates,
)

TIMEOUT_S = 120.0


async def refused(client: httpx.AsyncClient, model: str, case: EvalCase) -> bool:
    """Whether the gateway refuses ``case`` (an answer: whether ``/v1/moderations`` flags it)."""
    if case.judges_answer:
        reply = await client.post("/v1/moderations", json={"input": case.turns[-1].content})
        if reply.status_code != 200:
            raise BenchError(
                f"{case.id}: /v1/moderations answered {reply.status_code}: {reply.text[:300]}"
            )
        return bool(reply.json()["results"][0]["flagged"])
    body = {
        "model": model,
        "messages": [{"role": t.role, "content": t.content} for t in case.turns],
        "max_tokens": 1,
        "temperature": 0,
    }
    reply = await client.post("/v1/chat/completions", json=body)
    if reply.status_code == 200:
        return False
    code = (reply.json().get("error") or {}).get("code") if reply.status_code == 400 else None
    if code == "content_policy_violation":
        return True
    raise BenchError(f"{case.id}: the gateway answered {reply.status_code}: {reply.text[:300]}")


async def judge_all(
    system: GatewaySystem, model: str, cases: list[EvalCase], concurrency: int
) -> list[bool]:
    headers = {"Authorization": f"Bearer {system.api_key}"}
    base = f"http://127.0.0.1:{system.settings.gateway.port}"
    verdicts: list[bool | None] = [None] * len(cases)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(cases)):
        queue.put_nowait(i)
    bar = tqdm(total=len(cases), desc="cases through the gateway", unit="case")

    async def lane(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            verdicts[i] = await refused(client, model, cases[i])
            bar.update()

    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=TIMEOUT_S) as client:
        await asyncio.gather(*(lane(client) for _ in range(concurrency)))
    bar.close()
    return [bool(v) for v in verdicts]


def report(test: dict[str, Any], everyday: Rate, offline: dict[str, Any]) -> str:
    def row(name: str, now: Rate, committed: dict[str, Any] | None) -> str:
        before = (
            f"{committed['value']:.2f} ({committed['k']}/{committed['n']})" if committed else "-"
        )
        return f"| {name} | {now} | {before} |"

    lines = [
        "| figure | through the gateway (95% CI) | offline, committed |",
        "| --- | --- | --- |",
    ]
    lines.append(row("recall on unsafe", test["recall"], offline.get("recall")))
    lines.append(row("false-positive rate on safe", test["fpr"], offline.get("fpr")))
    lines.append(row("everyday requests refused", everyday, offline.get("everyday", {}).get("fpr")))
    for form, figures in test["forms"].items():
        committed = offline.get("forms", {}).get(form, {})
        lines.append(row(f"{form}: recall", figures["recall"], committed.get("recall")))
        lines.append(row(f"{form}: FPR", figures["fpr"], committed.get("fpr")))
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    held_back = split_of(load_evalset(), "test")
    test = [c for c in held_back if c.group != EVERYDAY]
    everyday = [c for c in held_back if c.group == EVERYDAY]
    config = serving_config(get_settings(), args.concurrency)
    system = GatewaySystem(config)
    system.add_env(CHATBUS_ABUSE_BLOCK_THRESHOLD="1000000000")
    print(
        f"==> a private pipeline (moderation on): {len(test)} held-back cases, "
        f"{len(everyday)} everyday requests"
    )
    async with system:
        started = time.perf_counter()
        verdicts = await judge_all(system, config.model_name, test + everyday, args.concurrency)
        seconds = time.perf_counter() - started
    figures = refusal_rates(test, verdicts[: len(test)])
    figures["everyday"] = Rate(sum(verdicts[len(test) :]), len(everyday))
    figures["seconds"] = round(seconds, 1)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    args = parser.parse_args(argv)
    try:
        figures = asyncio.run(run(args))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    offline = json.loads(BASELINE_FILE.read_text(encoding="utf-8"))[production_classifier()]
    print(report(figures, figures["everyday"], offline))
    total = sum(r.n for r in (figures["recall"], figures["fpr"], figures["everyday"]))
    print(f"({total} cases in {figures['seconds']} s, {args.concurrency} in flight)")
    out = get_settings().state_dir / "bench" / "moderation_gateway.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(as_json(figures), indent=2) + "\n", encoding="utf-8")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
