"""What an SRE does, against the real pipeline under the local supervisor: status, metrics
endpoints, lag, scaling, draining, and a crashed component coming back.

One pipeline (processors, archiver, one worker, gateway) runs for the whole module under its own
topic prefix, state directory and ports; the tests run in file order and share it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from chatbus.kafka.factories import make_consumer, make_producer
from chatbus.kafka.lag import group_lag
from chatbus.polling import eventually, poll_until
from chatbus.ports import free_port
from chatbus.settings import Settings
from producers.sdk import ChatClient
from schemas.events import SamplingParams, TokenChunk
from schemas.topics import TopicName
from tests.conftest import REPO
from tests.integration.supervised import (
    Pipeline,
    keys_by_partition,
    logs,
    replica_of,
    supervised_pipeline,
)

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture(scope="module")
def pipeline(
    local_services: Settings, demo_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    prefix = f"ops{uuid.uuid4().hex[:8]}."
    fields = {
        "topic_prefix": prefix,
        "topic_partitions": 2,
        "state_dir": tmp_path_factory.mktemp("ops-state"),
        "gateway_port": free_port(),
        # below Linux's ephemeral range (32768+), where outgoing connections could take a port
        "local_metrics_base_port": 20000 + (os.getpid() * 97) % 12000,
        "mongo_db": f"ops_{uuid.uuid4().hex[:8]}",
        "model_path": demo_model_path,
        "model_name": "chatbus-tiny",
        "max_inflight": 4,
        "archive_prefix": f"test-{prefix.rstrip('.')}",
        "device": "cpu",
        "log_json": True,
    }
    with supervised_pipeline(fields) as ran:
        yield ran


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)  # nothing listens (yet)


@pytest.fixture
async def client(pipeline: Pipeline) -> AsyncIterator[ChatClient]:
    async with ChatClient(pipeline.settings, reply_partition=1) as chat:
        yield chat


async def ask(
    client: ChatClient, settings: Settings, conversation_id: str, max_tokens: int = 4
) -> list[TokenChunk]:
    request = await client.send(
        [{"role": "user", "content": f"hi {conversation_id[-6:]}"}],
        model=settings.model.name,
        conversation_id=conversation_id,
        sampling=SamplingParams(temperature=0, max_tokens=max_tokens),
    )
    return [c async for c in client.chunks(request.request_id, timeout_s=120)]


# --- the tests, in order ----------------------------------------------------------------------
def test_status_shows_every_component_healthy(pipeline: Pipeline) -> None:
    result = pipeline.cli("ops", "status", "--json")
    report = json.loads(result.stdout)
    names = {row["name"]: row for row in report["components"]}
    assert {
        "kafka",
        "redis",
        "ferretdb",
        "s3",
        "supervisor",
        "processors",
        "archiver-1",
        "worker-1",
        "gateway",
    } <= set(names)
    assert report["healthy"] and result.returncode == 0, report
    assert all(
        names[n]["ready"] and names[n]["live"]
        for n in ("processors", "archiver-1", "worker-1", "gateway")
    )


def documented_series() -> dict[str, set[str]]:
    """docs/metrics.md's series, by the component whose section lists them."""
    sections = {
        "Gateway": ["gateway"],
        "Stream processors": ["processors"],
        "Inference workers": ["worker-1"],
        "Shared": ["worker-1", "archiver-1"],
        "Archiver": ["archiver-1"],
    }
    out: dict[str, set[str]] = {}
    current: list[str] = []
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        if line.startswith("## "):
            current = next((v for k, v in sections.items() if line[3:].startswith(k)), [])
        match = re.match(r"\| `(chatbus_[a-z_]+)` \|", line)
        if match:
            for replica in current:
                out.setdefault(replica, set()).add(match.group(1))
    return out


def test_every_metrics_endpoint_serves_the_documented_series(pipeline: Pipeline) -> None:
    documented = documented_series()
    assert set(documented) == {"gateway", "processors", "worker-1", "archiver-1"}
    for replica, names in documented.items():
        status, body = _get(pipeline.port(replica), "/metrics")
        assert status == 200
        exposed = set(re.findall(r"^# TYPE (\S+) ", body, re.MULTILINE))
        missing = {n for n in names if not {n, n.removesuffix("_total")} & exposed}
        assert not missing, f"{replica} does not serve {sorted(missing)}"
        for path in ("/livez", "/readyz"):
            assert _get(pipeline.port(replica), path)[0] == 200, (replica, path)


async def test_lag_is_produced_minus_committed_on_a_real_group(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    topic, group = settings.topic(TopicName.DLQ), f"{settings.kafka.topic_prefix}ops.lag-probe"
    producer = make_producer(settings)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=0)
    finally:
        await producer.stop()
    consumer = make_consumer(settings, group_id=group)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, 0)])
        await consumer.commit({TopicPartition(topic, 0): 4})
    finally:
        await consumer.stop()

    result = pipeline.cli("ops", "lag", "--json", "--group", group)
    assert result.returncode == 0, result.stderr
    rows = [r for r in json.loads(result.stdout) if r["topic"] == topic]
    assert [(r["end_offset"], r["committed"], r["lag"]) for r in rows] == [(10, 4, 6)]
    assert [r.lag for r in await group_lag(settings, [group]) if r.topic == topic] == [6]


async def test_scaling_inference_from_one_to_two_moves_partitions_and_both_serve(
    pipeline: Pipeline, client: ChatClient
) -> None:
    settings = pipeline.settings
    keys = keys_by_partition(settings)
    before = {
        replica_of(c.worker_id) for p in keys for c in await ask(client, settings, keys[p][0])
    }
    assert before == {"worker-1"}

    result = pipeline.cli("ops", "scale", "worker", "--replicas", "2", "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr + logs(settings)
    assert "2 replica(s) running and ready" in result.stdout

    async def each_partition_has_one_owner() -> dict[int, str] | None:
        owners = {}
        for partition, conversation in keys.items():
            served = {replica_of(c.worker_id) for c in await ask(client, settings, conversation[1])}
            if len(served) != 1:
                return None
            owners[partition] = served.pop()
        return owners if set(owners.values()) == {"worker-1", "worker-2"} else None

    owners = await eventually(
        each_partition_has_one_owner,
        timeout_s=120,
        interval=0.5,
        what="each worker owning one partition",
    )
    assert sorted(owners.values()) == ["worker-1", "worker-2"]
    over = pipeline.cli("ops", "scale", "worker", "--replicas", "3", "--no-wait")
    assert "warning: 3 workers but" in over.stderr and "2 partitions" in over.stderr
    back = pipeline.cli("ops", "scale", "worker", "--replicas", "2", "--timeout", "240")
    assert back.returncode == 0, back.stdout + back.stderr


async def test_a_drained_worker_finishes_its_streams_and_receives_no_new_ones(
    pipeline: Pipeline, client: ChatClient
) -> None:
    settings = pipeline.settings
    keys = keys_by_partition(settings)
    long = SamplingParams(temperature=0, max_tokens=240)
    started = [
        await client.send(
            [{"role": "user", "content": "a long story"}],
            model=settings.model.name,
            conversation_id=keys[p][2],
            sampling=long,
        )
        for p in keys
    ]
    streams = {r.request_id: client.chunks(r.request_id, timeout_s=120) for r in started}
    first = {rid: await anext(stream) for rid, stream in streams.items()}
    on_victim = [rid for rid, chunk in first.items() if replica_of(chunk.worker_id) == "worker-2"]
    assert len(on_victim) == 1, first
    victim_partition = next(
        p for p, r in zip(keys, started, strict=True) if r.request_id == on_victim[0]
    )

    drain = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "chatbus.cli",
        "ops",
        "drain",
        "worker-2",
        cwd=REPO,
        env=os.environ | pipeline.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:

        async def draining() -> bool:
            return pipeline.status()["worker-2"].get("state") == "stopping"

        await eventually(draining, timeout_s=30, what="worker-2 draining")
        # sent while worker-2 drains, to the partition it held
        late = asyncio.create_task(ask(client, settings, keys[victim_partition][0]))
        rest = {rid: [first[rid]] + [c async for c in stream] for rid, stream in streams.items()}
        output = (await asyncio.wait_for(drain.communicate(), timeout=150))[0].decode()
    finally:
        if drain.returncode is None:
            drain.kill()
            await drain.wait()
    assert drain.returncode == 0, output
    assert "worker-2 drained and left (exit status 0)" in output
    for chunks in rest.values():  # every stream finished, whole, by the worker it started on
        last = chunks[-1]
        assert last.finish_reason in ("stop", "length") and last.usage is not None
        assert sum(len(c.token_ids) for c in chunks) == last.usage.completion_tokens
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert len({c.worker_id for c in chunks}) == 1
    late_chunks = await asyncio.wait_for(late, timeout=120)
    assert {replica_of(c.worker_id) for c in late_chunks} == {"worker-1"}
    status = pipeline.status()
    assert status["worker-2"]["state"] == "stopped" and status["worker-1"]["state"] == "running"


def test_a_crashed_worker_is_restarted_by_the_supervisor(pipeline: Pipeline) -> None:
    before = pipeline.status()["worker-1"]
    pid = int(before["pid"])  # type: ignore[call-overload]
    os.kill(pid, signal.SIGKILL)

    def back() -> dict[str, object] | None:
        row = pipeline.status()["worker-1"]
        ready = (
            row.get("state") == "running"
            and row.get("pid") != pid
            and _get(pipeline.port("worker-1"), "/readyz")[0] == 200
        )
        return row if ready else None

    row = poll_until(back, timeout_s=180, interval=0.25, what="worker-1 restarted and ready")
    assert row["restarts"] == before["restarts"] + 1  # type: ignore[operator]
    assert row["last_exit"] == -signal.SIGKILL
