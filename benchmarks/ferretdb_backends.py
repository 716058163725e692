"""FerretDB v1 on SQLite against FerretDB v1 on PostgreSQL: lost updates and history writes.

``python -m benchmarks.ferretdb_backends [--updates 100] [--repeats 3] [--turns 2000]
[--reads 2000]`` starts two private FerretDB processes (the binary of ``make up``) on free ports,
each with a temporary state folder: one on SQLite, one on PostgreSQL (a fresh database
``ferretdb_bench_<hex>`` on the server of ``make up``, dropped afterwards). On each:

1. **lost updates**: ``--updates`` concurrent updates of one document from 16 threads, for
   ``$inc`` of a counter, ``$push`` to an array and ``$addToSet`` of distinct values; how many of
   them the final document holds (lost = updates - found), ``--repeats`` times;
2. **history writes**, shaped like :mod:`chatbus.history.repository`: 8 threads, each the one
   writer of its own conversations, write ``--turns`` turns (``insert_one`` of a ~1 KB turn and
   ``update_one`` of its conversation by ``_id`` with ``$addToSet`` of the turn id and ``$set``):
   operations/s, p50/p99 latency of each kind;
3. **reads**: ``--reads`` ``find_one`` of a conversation by ``_id`` from 8 threads.

CPU seconds of each FerretDB process per phase come from ``/proc/<pid>/stat``; for PostgreSQL,
those of the server processes that serve the benchmark's database (children of the postmaster
whose title names it). Prints a table with the PostgreSQL/SQLite ratio of every figure and writes
``.chatbus/bench/ferretdb_backends-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError
from tqdm import tqdm

from benchmarks.inference.report import write_json
from chatbus import ports
from chatbus.settings import Settings, get_settings
from infra.local.ferretdb import binary

Doc = dict[str, Any]
BACKENDS = ("sqlite", "postgresql")
PROBE_THREADS = 16
WRITE_THREADS = 8
CONVERSATIONS_PER_THREAD = 8
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROBES: dict[str, Callable[[int], Doc]] = {
    "$inc": lambda i: {"$inc": {"n": 1}},
    "$push": lambda i: {"$push": {"items": i}},
    "$addToSet": lambda i: {"$addToSet": {"members": i}},
}
PROBE_FIELDS = {"$inc": "n", "$push": "items", "$addToSet": "members"}


# --- processes -------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """utime + stime of a live process in seconds (0 when it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2 :].split()  # from field 3 (state) on
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _backends_of(database: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process that serves ``database`` (its title is
    ``postgres: <user> <database> <host> <state>``)."""
    out: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            out[int(entry.name)] = _cpu_s(int(entry.name))
    return out


@dataclass
class Server:
    backend: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    database: str | None = None  # the PostgreSQL database behind it

    @property
    def url(self) -> str:
        return f"mongodb://{ports.HOST}:{self.port}/"

    def client(self, pool: int = 32) -> MongoClient[Doc]:
        return MongoClient(
            self.url,
            directConnection=True,
            maxPoolSize=pool,
            serverSelectionTimeoutMS=5000,
            socketTimeoutMS=60000,
        )

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the FerretDB process, and the PostgreSQL backends serving it."""
        out = {"ferretdb": _cpu_s(self.process.pid)}
        if self.database:
            backends = _backends_of(self.database)
            out["postgres"] = sum(backends.values())
            out["postgres_processes"] = len(backends)
        return out

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextmanager
def _postgres_database(settings: Settings) -> Iterator[str]:
    """A fresh database on the local PostgreSQL for the run, dropped afterwards."""
    name = f"ferretdb_bench_{uuid.uuid4().hex[:12]}"
    admin = f"postgresql://chatbus@{ports.HOST}:{settings.local.postgres_port}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _ferretdb(settings: Settings, backend: str, database: str | None = None) -> Iterator[Server]:
    """A private FerretDB on ``backend``: own port and temporary state folder, stopped by PID."""
    state = Path(tempfile.mkdtemp(prefix=f"ferretdb-{backend}-"))
    port = ports.free_port()
    if backend == "sqlite":
        (state / "data").mkdir()
        storage = f"--sqlite-url=file:{state / 'data'}/"
    else:
        url = f"postgres://chatbus@{ports.HOST}:{settings.local.postgres_port}/{database}"
        storage = f"--postgresql-url={url}"
    argv = [
        str(binary(settings)),
        f"--handler={backend}",
        storage,
        f"--listen-addr={ports.HOST}:{port}",
        f"--state-dir={state}",
        "--debug-addr=-",
        "--telemetry=disable",
        "--log-level=warn",
    ]
    log = state / "ferretdb.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            argv,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=state,
            env={**os.environ, "FERRETDB_TELEMETRY": "disable"},
            start_new_session=True,
        )
    server = Server(backend, port, proc, log, database)
    try:
        _wait_healthy(server)
        yield server
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def _wait_healthy(server: Server) -> None:
    """Poll a ping until it answers; raise with the log's tail past the deadline or on exit."""
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"ferretdb ({server.backend}) exited with {server.process.returncode}:\n"
                f"{server.log_tail()}"
            )
        client: MongoClient[Doc] = MongoClient(
            server.url, directConnection=True, serverSelectionTimeoutMS=500
        )
        try:
            client.admin.command("ping")
            return
        except PyMongoError as exc:
            last = exc
        finally:
            client.close()
    raise RuntimeError(
        f"ferretdb ({server.backend}) did not answer a ping in {START_TIMEOUT_S:.0f} s "
        f"({last}):\n{server.log_tail()}"
    )


# --- measurements ------------------------------------------------------------------------------
class Errors:
    """Failed operations of a phase, counted; the first few messages kept (thread-safe)."""

    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []
        self._lock = threading.Lock()

    def add(self, exc: Exception) -> None:
        with self._lock:
            self.count += 1
            if len(self.samples) < 3:
                self.samples.append(f"{type(exc).__name__}: {exc}"[:300])


def _probe(coll: Collection[Doc], op: str, updates: int, errors: Errors, bar: tqdm[Any]) -> int:
    """``updates`` concurrent ``op`` updates of a fresh document; how many it holds after."""
    _id = f"{op}-{uuid.uuid4().hex[:8]}"
    coll.insert_one({"_id": _id, "n": 0, "items": [], "members": []})

    def one(i: int) -> None:
        try:
            coll.update_one({"_id": _id}, PROBES[op](i))
        except PyMongoError as exc:
            errors.add(exc)
        bar.update()

    with ThreadPoolExecutor(PROBE_THREADS) as pool:
        list(pool.map(one, range(updates)))
    doc = coll.find_one({"_id": _id}) or {}
    value = doc.get(PROBE_FIELDS[op], 0)
    return value if isinstance(value, int) else len(value)


def lost_updates(server: Server, updates: int, repeats: int) -> dict[str, Any]:
    """Per operator, per repeat: how many of ``updates`` concurrent updates the document holds."""
    client = server.client(pool=PROBE_THREADS * 2)
    coll = client["bench"]["probe"]
    out: dict[str, Any] = {}
    bar = tqdm(total=len(PROBES) * repeats * updates, desc=f"{server.backend} lost updates")
    try:
        for op in PROBES:
            errors = Errors()
            found = [_probe(coll, op, updates, errors, bar) for _ in range(repeats)]
            out[op] = {
                "found": found,
                "lost": [updates - f for f in found],
                "errors": errors.count,
                "error_samples": errors.samples,
            }
    finally:
        bar.close()
        client.close()
    return out


def _percentiles(samples: list[float]) -> dict[str, float | None]:
    if not samples:
        return {"p50_ms": None, "p99_ms": None}
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50_ms": round(cuts[49] * 1000, 2), "p99_ms": round(cuts[98] * 1000, 2)}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two :meth:`Server.cpu` readings (process counts: the later)."""
    return {
        k: v if k.endswith("_processes") else round(v - before.get(k, 0.0), 2)
        for k, v in after.items()
    }


def _turn(conversation_id: str, user_id: str, index: int) -> Doc:
    """A turn document of ~1 KB, like the history agent writes."""
    now = datetime.now(UTC)
    return {
        "_id": uuid.uuid4().hex,
        "conversation_id": conversation_id,
        "user_id": user_id,
        "created_at": now,
        "created_us": int(now.timestamp() * 1_000_000),
        "messages": [{"role": "user", "content": f"question {index}: " + "lorem ipsum " * 25}],
        "use_history": True,
        "model": "tiny",
        "answer": "dolor sit amet " * 30,
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 64, "completion_tokens": 96},
        "timings": {"ttft_ms": 120.0, "total_ms": 900.0},
        "worker_id": "worker-0",
        "completed_at": now,
        "verdicts": {"input": {"flagged": False}, "output": {"flagged": False}},
    }


def history(server: Server, turns: int, reads: int) -> dict[str, Any]:
    """History-shaped writes (8 one-writer threads), then reads of conversations by ``_id``."""
    client = server.client(pool=WRITE_THREADS * 2)
    db = client["bench"]
    conversations, turn_docs = db["conversations"], db["turns"]
    try:
        conversations.create_index([("user_id", ASCENDING), ("updated_at", DESCENDING)])
        turn_docs.create_index([("conversation_id", ASCENDING), ("created_at", ASCENDING)])
        turn_docs.create_index([("user_id", ASCENDING)])
        owned = [
            [f"conv-{t}-{c}" for c in range(CONVERSATIONS_PER_THREAD)] for t in range(WRITE_THREADS)
        ]
        now = datetime.now(UTC)
        conversations.insert_many(
            [
                {
                    "_id": cid,
                    "user_id": f"user-{t}",
                    "title": "",
                    "created_at": now,
                    "updated_at": now,
                    "turn_ids": [],
                }
                for t, ids in enumerate(owned)
                for cid in ids
            ]
        )
        errors = Errors()
        inserts: list[list[float]] = [[] for _ in range(WRITE_THREADS)]
        updates: list[list[float]] = [[] for _ in range(WRITE_THREADS)]
        bar = tqdm(total=turns, desc=f"{server.backend} history writes")

        def writer(t: int) -> None:
            for i in range(t, turns, WRITE_THREADS):
                cid = owned[t][i % CONVERSATIONS_PER_THREAD]
                doc = _turn(cid, f"user-{t}", i)
                try:
                    started = time.perf_counter()
                    turn_docs.insert_one(doc)
                    inserted = time.perf_counter()
                    conversations.update_one(
                        {"_id": cid},
                        {
                            "$addToSet": {"turn_ids": doc["_id"]},
                            "$set": {"updated_at": datetime.now(UTC), "last_model": "tiny"},
                        },
                    )
                    done = time.perf_counter()
                except PyMongoError as exc:
                    errors.add(exc)
                else:
                    inserts[t].append(inserted - started)
                    updates[t].append(done - inserted)
                bar.update()

        before = server.cpu()
        started = time.perf_counter()
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            list(pool.map(writer, range(WRITE_THREADS)))
        write_s = time.perf_counter() - started
        after = server.cpu()
        bar.close()
        recorded = sum(len(d.get("turn_ids", [])) for d in conversations.find({}, {"turn_ids": 1}))

        all_ids = [cid for ids in owned for cid in ids]
        read_lat: list[list[float]] = [[] for _ in range(WRITE_THREADS)]
        bar = tqdm(total=reads, desc=f"{server.backend} reads by _id")

        def reader(t: int) -> None:
            for i in range(t, reads, WRITE_THREADS):
                try:
                    started = time.perf_counter()
                    conversations.find_one({"_id": all_ids[i % len(all_ids)]})
                    read_lat[t].append(time.perf_counter() - started)
                except PyMongoError as exc:
                    errors.add(exc)
                bar.update()

        read_before = server.cpu()
        started = time.perf_counter()
        with ThreadPoolExecutor(WRITE_THREADS) as pool:
            list(pool.map(reader, range(WRITE_THREADS)))
        read_s = time.perf_counter() - started
        read_after = server.cpu()
        bar.close()
    finally:
        client.close()
    done_inserts = [x for xs in inserts for x in xs]
    done_updates = [x for xs in updates for x in xs]
    done_reads = [x for xs in read_lat for x in xs]
    return {
        "turns": turns,
        "write_s": round(write_s, 2),
        "write_ops_per_s": round((len(done_inserts) + len(done_updates)) / write_s, 1),
        "turns_per_s": round(len(done_updates) / write_s, 1),
        "insert": _percentiles(done_inserts),
        "update": _percentiles(done_updates),
        "turn_ids_recorded": recorded,
        "write_cpu_s": _delta(before, after),
        "reads": reads,
        "read_s": round(read_s, 2),
        "read_ops_per_s": round(len(done_reads) / read_s, 1),
        "read": _percentiles(done_reads),
        "read_cpu_s": _delta(read_before, read_after),
        "errors": errors.count,
        "error_samples": errors.samples,
    }


# --- report --------------------------------------------------------------------------------------
def _rows(results: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(figure, SQLite, PostgreSQL) for the table."""
    s, p = results["sqlite"], results["postgresql"]
    rows: list[tuple[str, Any, Any]] = []
    for op in PROBES:
        rows.append(
            (f"lost of {results['updates']} {op}", s["lost"][op]["lost"], p["lost"][op]["lost"])
        )
    hs, hp = s["history"], p["history"]
    rows += [
        ("write ops/s (insert + update)", hs["write_ops_per_s"], hp["write_ops_per_s"]),
        ("turns/s", hs["turns_per_s"], hp["turns_per_s"]),
        ("insert_one p50 ms", hs["insert"]["p50_ms"], hp["insert"]["p50_ms"]),
        ("insert_one p99 ms", hs["insert"]["p99_ms"], hp["insert"]["p99_ms"]),
        ("update_one p50 ms", hs["update"]["p50_ms"], hp["update"]["p50_ms"]),
        ("update_one p99 ms", hs["update"]["p99_ms"], hp["update"]["p99_ms"]),
        ("turn ids recorded", hs["turn_ids_recorded"], hp["turn_ids_recorded"]),
        ("writes: FerretDB CPU s", hs["write_cpu_s"]["ferretdb"], hp["write_cpu_s"]["ferretdb"]),
        ("writes: PostgreSQL CPU s", None, hp["write_cpu_s"].get("postgres")),
        ("find_one by _id ops/s", hs["read_ops_per_s"], hp["read_ops_per_s"]),
        ("find_one p50 ms", hs["read"]["p50_ms"], hp["read"]["p50_ms"]),
        ("find_one p99 ms", hs["read"]["p99_ms"], hp["read"]["p99_ms"]),
        ("reads: FerretDB CPU s", hs["read_cpu_s"]["ferretdb"], hp["read_cpu_s"]["ferretdb"]),
        ("reads: PostgreSQL CPU s", None, hp["read_cpu_s"].get("postgres")),
        ("errors", s["errors"], p["errors"]),
    ]
    return rows


def _ratio(a: Any, b: Any) -> float | None:
    """``b / a`` of two numbers or of two lists' sums (None when undefined)."""
    a = sum(a) if isinstance(a, list) else a
    b = sum(b) if isinstance(b, list) else b
    if not isinstance(a, int | float) or not isinstance(b, int | float) or a == 0:
        return None
    return round(b / a, 2)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " / ".join(str(v) for v in value)
    return str(value)


def table(results: dict[str, Any]) -> str:
    """A Markdown table with the PostgreSQL/SQLite ratio of every figure."""
    lines = [
        "| figure | SQLite | PostgreSQL | PostgreSQL / SQLite |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, s, p in _rows(results):
        lines.append(f"| {name} | {_cell(s)} | {_cell(p)} | {_cell(_ratio(s, p))} |")
    return "\n".join(lines)


def _log_summary(server: Server) -> dict[str, int]:
    """What a FerretDB log (warnings and errors only) complains about, counted: the ``errmsg`` of
    each failed command it echoes, and every ERROR line."""
    try:
        text = server.log.read_text(errors="replace")
    except OSError:
        return {}
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if '"errmsg":' in line:
            found[line.split('"errmsg":', 1)[1].strip().rstrip(",")] += 1
        elif "\tERROR\t" in line:
            found[line.split("\tERROR\t", 1)[1][:200]] += 1
    return dict(found.most_common(10))


def run(updates: int, repeats: int, turns: int, reads: int) -> dict[str, Any]:
    settings = get_settings()
    results: dict[str, Any] = {
        "benchmark": "ferretdb_backends",
        "updates": updates,
        "repeats": repeats,
        "probe_threads": PROBE_THREADS,
        "write_threads": WRITE_THREADS,
        "conversations": WRITE_THREADS * CONVERSATIONS_PER_THREAD,
    }
    with ExitStack() as stack:
        database = stack.enter_context(_postgres_database(settings))
        servers = {
            "sqlite": stack.enter_context(_ferretdb(settings, "sqlite")),
            "postgresql": stack.enter_context(_ferretdb(settings, "postgresql", database)),
        }
        for backend, server in servers.items():
            client = server.client(pool=1)
            try:
                info = client.server_info()
            finally:
                client.close()
            print(f"{backend}: FerretDB {info.get('ferretdbVersion', '?')} on port {server.port}")
            results[backend] = {"ferretdb_version": info.get("ferretdbVersion")}
        results["postgres_database"] = database
        for backend, server in servers.items():
            results[backend]["lost"] = lost_updates(server, updates, repeats)
        for backend, server in servers.items():
            results[backend]["history"] = history(server, turns, reads)
        for backend, server in servers.items():
            results[backend]["total_cpu_s"] = {k: round(v, 2) for k, v in server.cpu().items()}
            results[backend]["errors"] = results[backend]["history"]["errors"] + sum(
                v["errors"] for v in results[backend]["lost"].values()
            )
            results[backend]["log"] = _log_summary(server)
    results["table"] = [
        {"figure": n, "sqlite": s, "postgresql": p, "ratio": _ratio(s, p)}
        for n, s, p in _rows(results)
    ]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.ferretdb_backends", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--updates", type=int, default=100, help="Concurrent updates per probe.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--turns", type=int, default=2000, help="Turns (insert + update each).")
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    started = datetime.now(UTC)
    results = run(args.updates, args.repeats, args.turns, args.reads)
    results["created_at"] = started.isoformat(timespec="seconds")
    results["wall_s"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    results["machine"] = {
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    results["command"] = (
        f"python -m benchmarks.ferretdb_backends --updates {args.updates} --repeats "
        f"{args.repeats} --turns {args.turns} --reads {args.reads}"
    )
    print()
    print(table(results))
    for backend in BACKENDS:
        for message, count in results[backend]["log"].items():
            print(f"{backend} FerretDB log: {count} x {message}")
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    out = Path(get_settings().state_dir) / "bench" / f"ferretdb_backends-{stamp}.json"
    write_json(out, results)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
