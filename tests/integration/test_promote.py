"""``chatbus models promote`` under load: two workers of the tiny model under a private local
supervisor are rolled onto a candidate with other weights while greedy streams run through the
bus. Every stream ends whole, every replica ends on the candidate, answers change, the replica
count does not; the roll's numbers (duration, largest gap between chunks) are printed."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from chatbus.polling import eventually
from chatbus.ports import free_port
from chatbus.settings import Settings
from producers.sdk import ChatClient
from schemas.events import SamplingParams, TokenChunk
from tests.conftest import REPO
from tests.integration.supervised import (
    Pipeline,
    keys_by_partition,
    logs,
    replica_of,
    supervised_pipeline,
)

# under 3 minutes on an idle 2-core machine; more when it is busy
pytestmark = [pytest.mark.integration, pytest.mark.model, pytest.mark.timeout(480)]

STREAMERS = 4  # concurrent clients, each sending its next request when the last one ends
MAX_TOKENS = 24
PROMPT = "Tell me about the sea."


@pytest.fixture
def candidate(demo_model_path: Path, tmp_path: Path) -> Path:
    """The demo model's folder with other weights (every matrix perturbed, the norms kept): the
    same architecture and tokenizer, another model, as a fine-tune from ``chatbus train`` is."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from inference_consumers.demo_model import MARKER_FILE

    folder = tmp_path / "candidate"
    shutil.copytree(demo_model_path, folder)
    (folder / MARKER_FILE).unlink()  # someone's candidate, not a demo build
    weights = folder / "model.safetensors"
    rng = np.random.default_rng(4321)
    tensors = {
        name: value + rng.normal(0.0, 0.1, value.shape).astype(value.dtype)
        if value.ndim == 2
        else value
        for name, value in load_file(weights).items()
    }
    save_file(tensors, weights, metadata={"format": "pt"})
    return folder


@pytest.fixture
def workers(
    local_services: Settings, demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    """Two workers of the demo model under a private supervisor (its own state dir, ports,
    topics and database), reading chat.requests straight from the clients."""
    prefix = f"promote{uuid.uuid4().hex[:8]}."
    fields = {
        "topic_prefix": prefix,
        "topic_partitions": 2,
        "state_dir": tmp_path_factory.mktemp("promote-state"),
        # below Linux's ephemeral range (32768+), where outgoing connections could take a port
        "local_metrics_base_port": 20000 + (os.getpid() * 89 + 4000) % 12000,
        "gateway_port": free_port(),
        "mongo_db": f"promote_{uuid.uuid4().hex[:8]}",
        "model_path": demo_model_path,
        "model_name": "chatbus-tiny",
        "inference_input_topic": "chat.requests",
        "local_worker_replicas": 2,
        "max_inflight": 4,
        "device": "cpu",
        "log_json": True,
    }
    with supervised_pipeline(fields, "--only", "worker") as ran:
        yield ran


@dataclass
class Stream:
    sent: float  # monotonic
    arrived: list[float] = field(default_factory=list)
    chunks: list[TokenChunk] = field(default_factory=list)


async def stream(client: ChatClient, settings: Settings, conversation: str, tokens: int) -> Stream:
    """One greedy request, each chunk timed on arrival (a failed stream raises ChatError)."""
    out = Stream(time.monotonic())
    request = await client.send(
        [{"role": "user", "content": PROMPT}],
        model=settings.model.name,
        conversation_id=conversation,
        sampling=SamplingParams(temperature=0, max_tokens=tokens),
    )
    async for chunk in client.chunks(request.request_id, timeout_s=120):
        out.arrived.append(time.monotonic())
        out.chunks.append(chunk)
    return out


async def answers(client: ChatClient, settings: Settings) -> dict[str, set[str]]:
    """The greedy answer to PROMPT on each partition (a new conversation each), by text, with
    the replicas that gave it."""
    out: dict[str, set[str]] = {}
    for keys in keys_by_partition(settings, count=1).values():
        chunks = (await stream(client, settings, keys[0], 16)).chunks
        text = "".join(c.text for c in chunks)
        out.setdefault(text, set()).update(replica_of(c.worker_id) for c in chunks)
    return out


def largest_gap(streams: list[Stream], start: float, end: float) -> float:
    """The longest wait between two chunks of one stream that ended within [start, end)."""
    gaps = [
        b - a
        for s in streams
        for a, b in zip(s.arrived, s.arrived[1:], strict=False)
        if start <= b < end
    ]
    return max(gaps, default=0.0)


def replicas_on(workers: Pipeline, candidate: Path) -> dict[str, dict[str, object]]:
    """The worker replicas, after checking there are two, both running the candidate: by the
    supervisor's word, by their own environment, and by ``chatbus models current``."""
    rows = {n: r for n, r in workers.status().items() if r.get("state") in ("running", "stopping")}
    assert len(rows) == 2 and all(r["state"] == "running" for r in rows.values()), rows
    for row in rows.values():
        assert row["model_path"] == str(candidate)
        environ = Path(f"/proc/{row['pid']}/environ").read_bytes().split(b"\0")
        assert f"CHATBUS_MODEL_PATH={candidate}".encode() in environ
    current = workers.cli("models", "current")
    assert current.returncode == 0 and "not yet rolled" not in current.stdout, current.stdout
    assert str(candidate) in current.stdout
    return rows


async def test_promote_rolls_every_worker_onto_the_candidate_without_cutting_a_stream(
    workers: Pipeline, candidate: Path
) -> None:
    settings = workers.settings
    before_rows = {n: r for n, r in workers.status().items() if r.get("state") == "running"}
    assert sorted(before_rows) == ["worker-1", "worker-2"]
    async with ChatClient(settings, reply_partition=1) as client:
        base = await answers(client, settings)
        assert len(base) == 1, f"the two base replicas answer differently: {base}"

        done: list[Stream] = []
        stop = asyncio.Event()
        keys = [k for ks in keys_by_partition(settings, count=STREAMERS // 2).values() for k in ks]

        async def client_loop(i: int) -> None:
            while not stop.is_set():
                done.append(await stream(client, settings, keys[i], MAX_TOKENS))

        loops = [asyncio.create_task(client_loop(i)) for i in range(STREAMERS)]
        try:

            async def warmed_up() -> bool:
                return len(done) >= 2 * STREAMERS

            await eventually(warmed_up, timeout_s=120, what="the streams before the roll")
            roll_start = time.monotonic()
            promote = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "chatbus.cli",
                "models",
                "promote",
                str(candidate),
                "--timeout",
                "180",
                cwd=REPO,
                env=os.environ | workers.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            try:
                output = (await asyncio.wait_for(promote.communicate(), timeout=400))[0].decode()
            finally:
                if promote.returncode is None:
                    promote.kill()
                    await promote.wait()
            roll_end = time.monotonic()
            stop.set()
            await asyncio.wait_for(asyncio.gather(*loops), timeout=120)
        finally:
            stop.set()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
        assert promote.returncode == 0, output + logs(settings)
        after = await answers(client, settings)

    # every stream whole: no error (ChatClient raises on one), every token once, in order
    for s in done:
        last = s.chunks[-1]
        assert last.finish_reason in ("stop", "length") and last.usage is not None, last
        assert [c.seq for c in s.chunks] == list(range(len(s.chunks)))
        assert sum(len(c.token_ids) for c in s.chunks) == last.usage.completion_tokens
    during = [s for s in done if s.sent < roll_end and s.arrived[-1] > roll_start]
    assert len(during) >= STREAMERS, "the roll ran without load"

    # both old replicas replaced, one at a time, by replicas on the candidate
    assert "[1/2]" in output and "[2/2]" in output, output
    assert all(f"draining {old}" in output for old in before_rows), output
    rows = replicas_on(workers, candidate)
    assert {r["pid"] for r in rows.values()}.isdisjoint(r["pid"] for r in before_rows.values())

    # the candidate answers, on every partition, and differently from the base
    assert len(after) == 1 and set(after).isdisjoint(base), (base, after)
    answered: set[str] = set().union(*after.values())
    assert answered <= set(rows), (answered, rows)

    before_roll = [s for s in done if s.arrived[-1] < roll_start]
    ttft = {
        name: max((s.arrived[0] - s.sent for s in group), default=0.0)
        for name, group in (("before", before_roll), ("during", during))
    }
    print(
        f"\nroll of 2 workers: {roll_end - roll_start:.1f} s, {len(during)} streams in flight "
        f"or started during it ({len(done)} in all, {STREAMERS} concurrent); largest gap "
        f"between chunks: {largest_gap(done, 0, roll_start):.2f} s before, "
        f"{largest_gap(done, roll_start, roll_end):.2f} s during; largest time to first "
        f"chunk: {ttft['before']:.2f} s before, {ttft['during']:.2f} s during\n{output}"
    )
