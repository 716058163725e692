"""The Responses API through the real pipeline, driven by the official ``openai`` SDK, unchanged.

A gateway served in-process, an in-process worker on the tiny demo model, real Kafka, Redis and
FerretDB. The text is random: tests check shapes, order, ids, usage and the store, not wording.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response

from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from tests.integration.gateway_fixtures import RunningGateway, api_key

pytestmark = [pytest.mark.integration, pytest.mark.model]

DONE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def sdk(gateway: RunningGateway, key: str) -> OpenAI:
    return OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


def create(client: OpenAI, model: str, **fields: Any) -> Response:
    fields.setdefault("input", "Hello there")
    return client.responses.create(model=model, max_output_tokens=12, temperature=0, **fields)


async def test_a_response_is_created_retrieved_listed_and_deleted(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = sdk(gateway, key)
    model = settings.model.name
    response = await asyncio.to_thread(
        create, client, model, instructions="Be brief.", metadata={"case": "crud"}
    )
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status in ("completed", "incomplete")
    assert response.usage is not None and 0 < response.usage.output_tokens <= 12
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.output[0].type == "message" and response.metadata == {"case": "crud"}

    again = await asyncio.to_thread(client.responses.retrieve, response.id)
    assert (again.id, again.status, again.output_text) == (
        response.id,
        response.status,
        response.output_text,
    )
    items = await asyncio.to_thread(client.responses.input_items.list, response.id)
    assert [(i.type, getattr(i, "role", None)) for i in items.data] == [("message", "user")]

    await asyncio.to_thread(client.responses.delete, response.id)
    with pytest.raises(openai.NotFoundError):
        await asyncio.to_thread(client.responses.retrieve, response.id)


async def test_a_streamed_response_sends_openais_events_in_order(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = sdk(gateway, key)

    def stream() -> tuple[list[Any], float]:
        started = time.perf_counter()
        first_at = 0.0
        events = []
        for event in create(client, settings.model.name, stream=True):
            first_at = first_at or time.perf_counter() - started
            events.append(event)
        return events, first_at

    events, first_event_s = await asyncio.to_thread(stream)
    print(f"\nresponses SSE: time to first event {first_event_s * 1000:.0f} ms")
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:-1] == DONE and types[-1] in ("response.completed", "response.incomplete")
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text == events[-4].text
    assert final.usage is not None and final.usage.output_tokens > 0
    stored = await asyncio.to_thread(client.responses.retrieve, final.id)
    assert stored.output_text == text and stored.status == final.status


async def test_a_follow_up_takes_its_context_from_the_store(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = sdk(gateway, key)
    model = settings.model.name
    first = await asyncio.to_thread(create, client, model)
    second = await asyncio.to_thread(
        create, client, model, input="Tell me more", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert first.conversation is not None and second.conversation is not None
    assert second.conversation.id == first.conversation.id
    assert first.usage is not None and second.usage is not None
    # the second prompt holds the first turn: more tokens than the first prompt and answer
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    items = await asyncio.to_thread(client.responses.input_items.list, second.id)
    assert len(items.data) == 1  # its own input only: the context came from the store


async def test_unknown_and_other_users_responses_are_404_and_unsupported_params_400(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = sdk(gateway, key)
    model = settings.model.name
    mine = await asyncio.to_thread(create, client, model, store=True)
    unknown = "resp_" + uuid.uuid4().hex
    async with api_key(settings, f"other-{uuid.uuid4().hex[:8]}") as other_key:
        other = sdk(gateway, other_key)
        for target in (mine.id, unknown, "not-an-id"):
            with pytest.raises(openai.NotFoundError) as refused:
                await asyncio.to_thread(other.responses.retrieve, target)
            assert refused.value.code == "response_not_found"
        with pytest.raises(openai.NotFoundError):
            await asyncio.to_thread(other.responses.delete, mine.id)
        with pytest.raises(openai.NotFoundError) as refused:
            await asyncio.to_thread(create, other, model, previous_response_id=mine.id)
        assert refused.value.param == "previous_response_id"
    assert (await asyncio.to_thread(client.responses.retrieve, mine.id)).id == mine.id

    unstored = await asyncio.to_thread(create, client, model, store=False)
    with pytest.raises(openai.NotFoundError):
        await asyncio.to_thread(client.responses.retrieve, unstored.id)

    tool = {"type": "function", "name": "now", "parameters": {}, "strict": False}
    for fields, param in (
        ({"tools": [tool]}, "tools"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            await asyncio.to_thread(create, client, model, **fields)
        assert bad.value.param == param


async def test_cancel_stops_a_streaming_response_on_the_worker(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    request = {"model": settings.model.name, "input": "Hello", "stream": True}
    request["max_output_tokens"] = 400
    async with (
        httpx.AsyncClient(base_url=gateway.base_url, timeout=60) as http,
        http.stream("POST", "/responses", json=request, headers=headers) as streaming,
    ):
        assert streaming.status_code == 200
        assert streaming.headers["content-type"].startswith("text/event-stream")
        assert streaming.headers["x-conversation-id"].startswith("conv-")
        lines = streaming.aiter_lines()
        assert await anext(lines) == "id: 0"
        assert await anext(lines) == "event: response.created"
        created = json.loads((await anext(lines)).removeprefix("data: "))
        rid = created["response"]["id"]

        async def stored() -> bool:
            return (await http.get(f"/responses/{rid}", headers=headers)).status_code == 200

        await eventually(stored, timeout_s=10, what="the response stored")
        cancelled = await http.post(f"/responses/{rid}/cancel", headers=headers)
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        rest = [line async for line in lines if line.startswith("data: ")]
    final = json.loads(rest[-1].removeprefix("data: "))
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "cancelled"
    assert final["response"]["usage"]["output_tokens"] < 400
    again = await asyncio.to_thread(sdk(gateway, key).responses.retrieve, rid)
    assert again.status == "cancelled"
