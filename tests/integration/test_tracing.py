"""Per-stage latency attribution on the real bus: one request's trace through the gateway, the
moderation processor and a worker shows every stage in order (docs/tracing.md)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiokafka.structs import ConsumerRecord
from structlog.testing import capture_logs

from chatbus.polling import eventually
from chatbus.settings import Settings
from chatbus.tracing import (
    HOP_ORDER,
    STAGES,
    Hop,
    RequestTrace,
    TraceParent,
    out_of_order,
)
from inference_consumers.worker import InferenceWorker
from producers.sdk import ChatClient
from schemas.events import SamplingParams
from schemas.topics import TopicName
from tests.integration.gateway_fixtures import RunningGateway
from tests.integration.processors import STARTUP_S, running_processors
from tests.integration.raw_kafka import reading_from_start

pytestmark = [pytest.mark.integration, pytest.mark.model]

HELLO = [{"role": "user", "content": "Hello there"}]
# the client's own clock reads the first byte after the gateway stamped it, on the same loop
CLIENT_SLACK_MS = 100.0


@pytest.fixture
def settings(bus: Settings, demo_model_path: Path) -> Settings:
    """Moderation in front: the worker reads what the processor approved."""
    return bus.replace(
        **{
            "model_path": demo_model_path,
            "max_inflight": 4,
            "inference_input_topic": TopicName.REQUESTS_APPROVED.value,
        }
    )


@pytest.fixture
async def processor(settings: Settings, tmp_path: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    async with running_processors(settings, tmp_path) as proc:
        yield proc


def stage_counts(metrics_text: str) -> dict[str, float]:
    """``chatbus_stage_latency_seconds_count`` per stage, from a /metrics body."""
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("chatbus_stage_latency_seconds_count{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('stage="')[1].split('"')[0]] = float(value)
    return counts


async def record_of(
    settings: Settings, topic: str, request_id: str
) -> ConsumerRecord[bytes, bytes]:
    """The record of ``request_id`` on a registry topic (read from the beginning)."""
    async with reading_from_start(settings, topic) as consumer:
        seen: list[ConsumerRecord[bytes, bytes]] = []

        async def find() -> ConsumerRecord[bytes, bytes] | None:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(records)
            return next(
                (r for r in seen if json.loads(r.value or b"{}").get("request_id") == request_id),
                None,
            )

        return await eventually(find, timeout_s=30, what=f"{request_id} on {topic}")


async def test_the_trace_of_one_request_shows_every_stage_in_order(
    settings: Settings,
    processor: subprocess.Popen[bytes],
    worker: InferenceWorker,
    gateway: RunningGateway,
    key: str,
) -> None:
    # warm up: the processor answers once its agents have joined (and the classifier loaded)
    async with ChatClient(settings) as client:
        warm = await client.send(
            HELLO, model=settings.model.name, sampling=SamplingParams(max_tokens=2, temperature=0)
        )
        async for _ in client.chunks(warm.request_id, timeout_s=STARTUP_S * 1.5):
            pass
    caller = TraceParent.new()  # the HTTP client's own trace, continued by the gateway
    request = {
        "model": settings.model.name,
        "messages": HELLO,
        "stream": True,
        "max_tokens": 8,
        "temperature": 0,
    }
    async with httpx.AsyncClient(
        base_url=gateway.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        await (await http.post("/v1/chat/completions", json=request)).aread()  # gateway warm
        before = stage_counts((await http.get("/metrics")).text)

        with capture_logs() as logs:
            sent_at = time.time() * 1000
            async with http.stream(
                "POST",
                "/v1/chat/completions",
                json=request,
                headers={"traceparent": caller.format()},
            ) as response:
                assert response.status_code == 200
                first_byte_at: float | None = None
                async for line in response.aiter_lines():
                    if first_byte_at is None and line.startswith("data: "):
                        first_byte_at = time.time() * 1000
                request_id = response.headers["x-request-id"]
        after = stage_counts((await http.get("/metrics")).text)
        buckets = (await http.get("/metrics")).text
    assert first_byte_at is not None
    client_ttft_ms = first_byte_at - sent_at

    trace = gateway.runtime.service.trace(request_id)
    assert isinstance(trace, RequestTrace)
    # the same trace from the HTTP caller to the worker that sent the first chunk
    assert trace.trace_id == caller.trace_id and trace.upstream == caller
    assert trace.replied_by is not None and trace.replied_by.trace_id == caller.trace_id
    # every hop stamped, in order, on one clock
    assert [hop for hop, _ in trace.ordered()] == list(HOP_ORDER)
    assert out_of_order(trace.stamps) == []
    stamps = [at for _, at in trace.ordered()]
    assert stamps == sorted(stamps)
    breakdown = trace.breakdown()
    assert breakdown is not None and breakdown.moderated
    stages = breakdown.stages()
    assert list(stages) == list(STAGES)
    assert all(ms >= 0 for ms in stages.values()), stages
    assert breakdown.moderation_ms > 0 and breakdown.prefill_ms > 0
    assert sum(stages.values()) == pytest.approx(breakdown.total_ms, abs=0.01)
    # the stages add up to the time to first token the HTTP client measured, less the HTTP
    # hops before the gateway's first stamp and after its last
    assert breakdown.total_ms <= client_ttft_ms
    assert client_ttft_ms - breakdown.total_ms < CLIENT_SLACK_MS, (client_ttft_ms, breakdown)
    print(
        f"\nclient-measured TTFT {client_ttft_ms:.1f} ms; trace total "
        f"{breakdown.total_ms:.1f} ms = " + ", ".join(f"{s} {ms:.1f}" for s, ms in stages.items())
    )

    # what the hops published carries the trace: approved request and completion
    approved = await record_of(settings, TopicName.REQUESTS_APPROVED, request_id)
    carried = RequestTrace.from_headers(approved.headers)
    assert carried is not None and carried.trace_id == caller.trace_id
    assert [h for h, _ in carried.ordered()] == [
        Hop.RECEIVED,
        Hop.PUBLISHED,
        Hop.MODERATION_IN,
        Hop.MODERATION_OUT,
    ]
    assert dict(approved.headers)["event-type"] == b"chat.request"  # the request's own kept
    completion = await record_of(settings, TopicName.COMPLETIONS, request_id)
    done = RequestTrace.from_headers(completion.headers)
    assert done is not None and done.parent == trace.replied_by

    # one log line per request, and every stage measured once more on /metrics
    (logged,) = [
        e for e in logs if e["event"] == "trace_breakdown" and e["request_id"] == request_id
    ]
    assert logged["trace_id"] == caller.trace_id and logged["stream"] is True
    assert logged["ttft_ms"] == pytest.approx(breakdown.total_ms, abs=0.01)
    for stage in STAGES:
        assert any(
            line.startswith("chatbus_stage_latency_seconds_bucket{") and f'stage="{stage}"' in line
            for line in buckets.splitlines()
        ), stage
        assert after[stage] == before[stage] + 1, stage
        assert logged[f"{stage}_ms"] == pytest.approx(stages[stage], abs=0.01)


async def test_without_moderation_the_sdk_trace_has_no_moderation_stage(
    bus: Settings, demo_model_path: Path
) -> None:
    from inference_consumers.engine.transformers_engine import TransformersEngine

    settings = bus.replace(**{"model_path": demo_model_path, "max_inflight": 2})
    engine = TransformersEngine(
        settings.resolved_model_path,
        model_name=settings.model.name,
        device="cpu",
        max_batch=settings.worker.max_inflight,
    )
    async with (
        InferenceWorker(settings, engine, worker_id="trace-worker"),
        ChatClient(settings) as client,
    ):
        request = await client.send(
            HELLO, model=settings.model.name, sampling=SamplingParams(max_tokens=4, temperature=0)
        )
        chunks = [c async for c in client.chunks(request.request_id, timeout_s=120)]
    assert chunks[-1].finish_reason in {"stop", "length"}
    trace = client.trace(request.request_id)
    assert trace is not None and trace.replied_by is not None
    assert trace.replied_by.trace_id == trace.trace_id
    assert Hop.MODERATION_IN not in trace.stamps
    breakdown = trace.breakdown()
    assert breakdown is not None and not breakdown.moderated
    assert breakdown.moderation_ms == 0.0
    assert all(ms >= 0 for ms in breakdown.stages().values()), breakdown
    assert sum(breakdown.stages().values()) == pytest.approx(breakdown.total_ms, abs=0.01)
