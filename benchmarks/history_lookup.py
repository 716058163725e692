"""The history store's lookups as it grows: FerretDB 1.x on PostgreSQL as it comes (the baseline)
against the same with the lookup indexes of :mod:`chatbus.history.ferretdb_lookup`, in one run.

    .venv/bin/python -m benchmarks.history_lookup [--sizes 0,1000,5000,20000] [--lookups 100]

Needs ``make up`` (FerretDB on PostgreSQL, the default). Two private databases on the local
FerretDB, one of them indexed; at each size (turns in the collection, one conversation each, as
the soak's load makes them), the median and p99 milliseconds of ``--lookups`` of each:

* ``find_one`` by ``_id`` (:meth:`HistoryRepository.answer_of`: what a rating, an appeal and a
  refusal look up);
* a verdict written on a turn (:meth:`HistoryRepository.record_verdict`: an update by ``_id``,
  which FerretDB reads before it writes, and the conversation's turn count);
* the context of a new conversation (:meth:`HistoryRepository.context_turns`: the worker's read
  when Redis has no context);

and the CPU seconds FerretDB and PostgreSQL used for them. Prints a table with the ratio
(baseline / indexed) and writes ``.chatbus/bench/history_lookup-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from tqdm import tqdm

from benchmarks.inference.cpu import cpu_times, used
from benchmarks.inference.report import write_json
from chatbus.errors import ConfigurationError
from chatbus.history import HistoryRepository
from chatbus.history.repository import CONVERSATIONS, TURNS
from chatbus.settings import Settings, get_settings
from chatbus.stores import mongo_client
from infra.local import process
from schemas.events import ModerationVerdict

VARIANTS = ("baseline", "indexed")
OPERATIONS = ("find_one_by_id", "verdict_write", "context_of_new_conversation")
BATCH = 500


def variant_settings(base: Settings, variant: str) -> Settings:
    mongo = base.mongo.model_copy(update={"db": f"histbench_{variant}_{uuid.uuid4().hex[:8]}"})
    if variant == "baseline":
        mongo = mongo.model_copy(update={"ferretdb_postgres_url": SecretStr("")})
    return base.replace(mongo=mongo)


def turn_document(request_id: str, conversation_id: str, now: datetime) -> dict[str, Any]:
    """A turn as the history processor leaves it (~1.5 KB: messages, answer, verdicts)."""
    scores = {f"category-{i}": 0.01 for i in range(13)}
    return {
        "_id": request_id,
        "conversation_id": conversation_id,
        "user_id": "bench-user",
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "What is a good name for a black cat? " * 4}],
        "use_history": True,
        "answer": "A few ideas: Shadow, Midnight, Salem, Onyx or Pepper. " * 5,
        "finish_reason": "stop",
        "created_at": now,
        "created_us": int(now.timestamp() * 1_000_000),
        "verdicts": {"input": {"flagged": False, "category_scores": scores, "at": now}},
    }


def conversation_document(request_id: str, conversation_id: str, now: datetime) -> dict[str, Any]:
    return {
        "_id": conversation_id,
        "user_id": "bench-user",
        "title": "cat names",
        "created_at": now,
        "updated_at": now,
        "turn_ids": [request_id],
    }


def grow(settings: Settings, to: int, have: int, ids: list[tuple[str, str]]) -> None:
    """Add turns (and their conversations) until the collection holds ``to``."""
    client: Any = mongo_client(settings)
    try:
        db = client[settings.mongo.db]
        while have < to:
            now = datetime.now(UTC)
            n = min(BATCH, to - have)
            pairs = [(f"r-{uuid.uuid4().hex}", f"c-{uuid.uuid4().hex}") for _ in range(n)]
            db[TURNS].insert_many([turn_document(r, c, now) for r, c in pairs])
            db[CONVERSATIONS].insert_many([conversation_document(r, c, now) for r, c in pairs])
            ids.extend(pairs)
            have += n
    finally:
        client.close()


def timed(calls: int, call: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        out.append((time.perf_counter() - started) * 1000)
    return out


def measure(
    repo: HistoryRepository, ids: list[tuple[str, str]], lookups: int, pids: dict[str, int]
) -> dict[str, Any]:
    """Each operation ``lookups`` times at the collection's current size."""
    known = ids or [("r-none", "c-none")]
    verdict = ModerationVerdict(
        request_id="x", conversation_id="x", user_id="bench-user", stage="output", flagged=False
    )
    operations: dict[str, Callable[[int], object]] = {
        "find_one_by_id": lambda i: repo.answer_of("bench-user", known[i % len(known)][0]),
        "verdict_write": lambda i: repo.record_verdict(
            verdict.model_copy(
                update={
                    "request_id": known[i % len(known)][0],
                    "conversation_id": known[i % len(known)][1],
                }
            )
        ),
        "context_of_new_conversation": lambda i: repo.context_turns(f"c-new-{uuid.uuid4().hex}"),
    }
    before = cpu_times(pids)
    out: dict[str, Any] = {}
    for name, call in operations.items():
        ms = sorted(timed(lookups, call))
        out[name] = {
            "p50_ms": round(statistics.median(ms), 3),
            "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 3),
        }
    out["cpu_s"] = used(before, cpu_times(pids))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = get_settings()
    if base.local.ferretdb_backend != "postgresql":
        raise ConfigurationError(
            "this compares lookups on FerretDB's PostgreSQL backend; unset "
            "CHATBUS_FERRETDB_BACKEND (it is sqlite) and run `make up`"
        )
    pids = {
        name: pid
        for name in ("ferretdb", "postgres")
        if (pid := process.running_pid(base, name)) is not None
    }
    if len(pids) < 2:
        raise ConfigurationError("FerretDB and PostgreSQL are not running: run `make up`")
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = {v: variant_settings(base, v) for v in VARIANTS}
    repos = {v: HistoryRepository(s) for v, s in settings.items()}
    ids: dict[str, list[tuple[str, str]]] = {v: [] for v in VARIANTS}
    results: list[dict[str, Any]] = []
    try:
        for repo in repos.values():
            repo.ensure_indexes()
        have = 0
        for size in tqdm(sizes, desc="sizes", unit="size"):
            row: dict[str, Any] = {"turns": size}
            for variant in VARIANTS:
                grow(settings[variant], size, have, ids[variant])
                row[variant] = measure(repos[variant], ids[variant], args.lookups, pids)
            have = size
            results.append(row)
            tqdm.write(
                f"    {size:>7} turns: "
                + "  ".join(
                    f"{op} {row['baseline'][op]['p50_ms']:.2f}"
                    f" -> {row['indexed'][op]['p50_ms']:.2f} ms"
                    for op in OPERATIONS
                )
            )
    finally:
        for variant, repo in repos.items():
            repo.close()
            with mongo_client(settings[variant]) as client:
                client.drop_database(settings[variant].mongo.db)
    return {"sizes": sizes, "lookups": args.lookups, "rows": results}


def report(result: dict[str, Any]) -> str:
    lines = [
        "| turns | operation | baseline p50 / p99 (ms) | indexed p50 / p99 (ms) | p50 ratio |",
        "| ---: | --- | ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        for op in OPERATIONS:
            b, i = row["baseline"][op], row["indexed"][op]
            ratio = b["p50_ms"] / i["p50_ms"] if i["p50_ms"] else float("nan")
            lines.append(
                f"| {row['turns']} | {op} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | "
                f"{i['p50_ms']:.2f} / {i['p99_ms']:.2f} | {ratio:.1f}x |"
            )
    lines += [
        "",
        f"CPU seconds of FerretDB + PostgreSQL for {result['lookups']} of each operation:",
        "| turns | baseline | indexed |",
        "| ---: | ---: | ---: |",
    ]
    for row in result["rows"]:
        cpu = {v: sum(row[v]["cpu_s"].values()) for v in VARIANTS}
        lines.append(f"| {row['turns']} | {cpu['baseline']:.2f} | {cpu['indexed']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0,1000,5000,20000", help="turns, ascending")
    parser.add_argument("--lookups", type=int, default=100, help="of each operation per size")
    args = parser.parse_args(argv)
    started = datetime.now(UTC)
    result = run(args)
    print(report(result))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = Path(get_settings().state_dir) / "bench" / f"history_lookup-{stamp}.json"
    write_json(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
