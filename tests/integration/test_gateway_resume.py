"""Streams that survive a reconnect, through the real pipeline: a stream cut off on one gateway
resumes on another from the event after the last one seen, its chunks read again from Kafka;
background responses are polled and streamed with the unchanged ``openai`` SDK.

In-process gateways and worker on the tiny demo model, real Kafka, Redis and FerretDB.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from chatbus.polling import eventually
from chatbus.ports import free_port
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from tests.integration.gateway_fixtures import RunningGateway, running_gateway
from tests.integration.processors import start_cli

pytestmark = [pytest.mark.integration, pytest.mark.model]

GRACE_S = 5.0  # how long an abandoned answer waits to be resumed, in these tests


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.replace(gateway_resume_grace_s=GRACE_S)


def sse_events(lines: list[str]) -> list[tuple[int | None, str]]:
    """(id, data) of each SSE event in ``lines``."""
    events, event_id = [], None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("data: "):
            events.append((event_id, line[6:]))
            event_id = None
    return events


def chat_text(events: list[tuple[int | None, str]]) -> str:
    return "".join(
        json.loads(data)["choices"][0]["delta"].get("content") or ""
        for _, data in events
        if data != "[DONE]" and json.loads(data).get("choices")
    )


async def read_some(client: httpx.AsyncClient, url: str, body: dict[str, Any], n: int) -> list[str]:
    """The first ``n`` events' lines of a stream, then the connection is dropped."""
    lines: list[str] = []
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            lines.append(line)
            if len(sse_events(lines)) == n:
                break
    return lines


async def test_a_chat_stream_cut_off_resumes_on_another_gateway_where_it_stopped(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    headers = {"authorization": f"Bearer {key}"}
    body = {
        "model": settings.model.name,
        "messages": [{"role": "user", "content": "Count to twenty."}],
        "max_tokens": 32,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        running_gateway(settings) as other,
        httpx.AsyncClient(headers=headers, timeout=60) as client,
    ):
        first = sse_events(await read_some(client, f"{gateway.base_url}/chat/completions", body, 3))
        assert [n for n, _ in first] == [0, 1, 2]
        completion_id = json.loads(first[0][1])["id"]
        resumed_url = f"{other.base_url}/chat/completions/{completion_id}/stream"
        rest = await client.get(resumed_url, headers={"last-event-id": "2"})
        assert rest.status_code == 200, rest.text
        after = sse_events(rest.text.splitlines())
        whole = sse_events((await client.get(resumed_url)).text.splitlines())
        other_user = await client.get(resumed_url, headers={"authorization": "Bearer nope"})
    assert [n for n, _ in after] == list(range(3, 3 + len(after)))  # numbered on, none missed
    assert after[-1][1] == "[DONE]"
    assert [n for n, _ in whole] == list(range(len(whole)))
    assert first + after == whole  # the same events, whichever gateway replays them
    usage = json.loads(after[-2][1])["usage"]
    assert usage["completion_tokens"] > 0 and chat_text(whole) == chat_text(first + after)
    assert other_user.status_code == 401


async def test_a_response_stream_resumes_on_another_gateway_and_completes(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    body = {
        "model": settings.model.name,
        "input": "Tell me a story.",
        "max_output_tokens": 24,
        "temperature": 0,
        "stream": True,
    }
    async with running_gateway(settings) as other:
        async with httpx.AsyncClient(
            headers={"authorization": f"Bearer {key}"}, timeout=60
        ) as client:
            first = sse_events(await read_some(client, f"{gateway.base_url}/responses", body, 6))
        response_id = json.loads(first[0][1])["response"]["id"]
        resumed = OpenAI(base_url=other.base_url, api_key=key, max_retries=0)

        def resume() -> list[Any]:
            stream = resumed.responses.retrieve(response_id, stream=True, starting_after=5)
            return list(stream)

        events = await asyncio.to_thread(resume)
        stored = await asyncio.to_thread(resumed.responses.retrieve, response_id)
    assert [e.sequence_number for e in events] == list(range(6, 6 + len(events)))
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = events[-1].response
    assert final.status != "cancelled"  # resumed within the grace period: never cancelled
    seen = "".join(json.loads(d).get("delta", "") for _, d in first)
    rest = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert seen + rest == final.output_text
    assert (stored.status, stored.output_text) == (final.status, final.output_text)


async def test_a_background_response_is_polled_then_streamed_with_the_openai_sdk(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    created = await asyncio.to_thread(
        client.responses.create,
        model=settings.model.name,
        input="Say something.",
        max_output_tokens=16,
        temperature=0,
        background=True,
    )
    assert created.status in ("queued", "in_progress") and created.background

    async def ended() -> Any:
        now = await asyncio.to_thread(client.responses.retrieve, created.id)
        return now if now.status not in ("queued", "in_progress") else None

    done = await eventually(ended, timeout_s=60, what="the background response to end")
    assert done.status in ("completed", "incomplete") and done.output_text
    assert done.usage is not None and done.usage.output_tokens > 0

    def stream_after(n: int) -> list[Any]:
        return list(client.responses.retrieve(created.id, stream=True, starting_after=n))

    events = await asyncio.to_thread(stream_after, 3)
    assert events[0].sequence_number == 4 and events[-1].response.output_text == done.output_text
    beyond = await asyncio.to_thread(stream_after, 10_000)
    assert beyond == []  # past the last event: an empty replay, and the stream ends


async def test_resuming_an_unknown_or_foreign_stream_is_a_404(
    settings: Settings, gateway: RunningGateway, key: str
) -> None:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as client:
        chat = await client.get(f"{gateway.base_url}/chat/completions/chatcmpl-{'0' * 32}/stream")
        response = await client.get(f"{gateway.base_url}/responses/resp_{'0' * 32}?stream=true")
        bad = await client.get(
            f"{gateway.base_url}/chat/completions/chatcmpl-{'0' * 32}/stream",
            headers={"last-event-id": "seven"},
        )
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "stream_not_found"
    assert response.status_code == 404
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"


async def test_a_stream_whose_gateway_was_killed_resumes_on_another_and_completes(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str, tmp_path: Path
) -> None:
    """``chatbus gateway`` in its own process, SIGKILLed mid-stream (no drain, no cancel): the
    client resumes on another gateway, which follows the answer to its end and stores it."""
    port = free_port()
    environ = (
        os.environ
        | settings.replace(state_dir=tmp_path, log_json=False, gateway_port=port).as_env()
        | {"HF_HUB_OFFLINE": "1", "CHATBUS_MODEL_PATH": str(settings.resolved_model_path)}
    )
    proc = start_cli("gateway", environ, tmp_path / "gateway.log")
    try:
        async with httpx.AsyncClient(
            headers={"authorization": f"Bearer {key}"}, timeout=60
        ) as client:

            async def up() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError((tmp_path / "gateway.log").read_text()[-2000:])
                try:
                    return (await client.get(f"http://127.0.0.1:{port}/readyz")).is_success
                except httpx.HTTPError:
                    return False

            await eventually(up, timeout_s=120, what="the gateway process to be ready")
            body = {
                "model": settings.model.name,
                "input": "Tell me a story.",
                "max_output_tokens": 48,
                "temperature": 0,
                "stream": True,
            }
            url = f"http://127.0.0.1:{port}/v1/responses"
            first = sse_events(await read_some(client, url, body, 6))
            proc.kill()  # mid-answer: nothing of the gateway's shutdown runs
            proc.wait(timeout=30)
            response_id = json.loads(first[0][1])["response"]["id"]
            resumed = await client.get(
                f"{gateway.base_url}/responses/{response_id}",
                params={"stream": "true", "starting_after": 5},
            )
            stored = await client.get(f"{gateway.base_url}/responses/{response_id}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    after = sse_events(resumed.text.splitlines())
    assert [n for n, _ in after] == list(range(6, 6 + len(after)))
    final = json.loads(after[-1][1])["response"]
    assert final["status"] in ("completed", "incomplete") and final["usage"]["output_tokens"] > 0
    text = "".join(json.loads(d).get("delta", "") for _, d in first + after)
    assert text == final["output"][0]["content"][0]["text"]
    assert stored.json()["status"] == final["status"]  # the resuming gateway stored the end
