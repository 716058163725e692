"""The Responses API's WebSocket mode through the real pipeline, driven by the unchanged
``openai`` SDK's ``responses.connect()``.

A gateway served in-process by uvicorn, an in-process worker on the tiny demo model, real Kafka,
Redis and FerretDB. The text is random: tests check shapes, order, ids and the store, never
wording. One test prints the time to the first event over the WebSocket and over SSE.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from openai.resources.responses.responses import AsyncResponsesConnection

from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from tests.integration.gateway_fixtures import RunningGateway

pytestmark = [pytest.mark.integration, pytest.mark.model]

OPENING = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
DONE = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}


def sdk(gateway: RunningGateway, key: str) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)


async def until_terminal(conn: AsyncResponsesConnection, *received: Any) -> list[Any]:
    """The events of one response to its last (after ``received``, those already read)."""
    events = list(received) or [await conn.recv()]
    while events[-1].type not in TERMINAL:
        events.append(await conn.recv())
    return events


def check_stream(events: list[Any]) -> None:
    """OpenAI's order, numbered from 0, the deltas adding up to the final text."""
    types = [e.type for e in events]
    deltas = types[len(OPENING) : len(types) - len(DONE) - 1]
    assert types[: len(OPENING)] == OPENING and types[-len(DONE) - 1 : -1] == DONE
    assert deltas and set(deltas) == {"response.output_text.delta"}
    assert types[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == text and final.usage is not None
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens


async def test_two_responses_over_one_connection_the_second_chained(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = sdk(gateway, key)
    model = settings.model.name
    async with client.responses.connect() as conn:
        await conn.response.create(model=model, input="Hello there", max_output_tokens=8)
        first = await until_terminal(conn)
        first_id: str = first[-1].response.id
        await conn.response.create(
            model=model, input="And then?", max_output_tokens=8, previous_response_id=first_id
        )
        second = await until_terminal(conn)
    check_stream(first)
    check_stream(second)
    chained = second[-1].response
    assert chained.previous_response_id == first_id and chained.id != first_id
    assert chained.conversation == first[-1].response.conversation
    stored = await client.responses.retrieve(chained.id)
    assert (stored.status, stored.output_text) == (chained.status, chained.output_text)
    items = await client.responses.input_items.list(chained.id)
    assert [getattr(i, "role", None) for i in items.data] == ["user"]  # its own input only


async def test_a_malformed_message_then_a_good_one_on_the_same_connection(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = sdk(gateway, key)
    async with client.responses.connect() as conn:
        await conn.send_raw("this is not JSON")
        not_json = await conn.recv()
        await conn.send_raw('{"type": "response.launch"}')
        unknown = await conn.recv()
        await conn.response.create(model=settings.model.name, input="hi", temperature=7)
        invalid = await conn.recv()
        await conn.response.create(model=settings.model.name, input="hi", max_output_tokens=6)
        good = await until_terminal(conn)
    errors: list[Any] = [not_json, unknown, invalid]
    assert [e.type for e in errors] == ["error"] * 3
    assert [e.status for e in errors] == [400] * 3
    assert [e.error.param for e in errors] == [None, "type", "temperature"]
    assert [e.error.code for e in errors[:2]] == ["invalid_json", "unsupported_event_type"]
    assert all(e.error.type == "invalid_request_error" and e.error.message for e in errors)
    check_stream(good)


async def test_a_client_that_leaves_mid_response_cancels_it(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = sdk(gateway, key)
    async with client.responses.connect() as conn:
        await conn.response.create(model=settings.model.name, input="hi", max_output_tokens=256)
        created: Any = await conn.recv()
        assert created.type == "response.created"
        rid = created.response.id

    async def cancelled() -> bool:
        return (await client.responses.retrieve(rid)).status == "cancelled"

    await eventually(cancelled, timeout_s=30, what="the abandoned response to be cancelled")


async def test_a_bad_key_is_refused_at_the_handshake(
    worker: InferenceWorker, gateway: RunningGateway
) -> None:
    client = AsyncOpenAI(base_url=gateway.base_url, api_key="cb-not-a-real-key", max_retries=0)
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with client.responses.connect():
            pass
    assert refused.value.response.status_code == 401
    assert b"invalid_api_key" in refused.value.response.body


@pytest.mark.parametrize("valid", [True, False])
async def test_a_browser_offers_its_key_as_a_subprotocol(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str, valid: bool
) -> None:
    """A browser cannot set Authorization on a WebSocket: it offers ``chatbus.v1`` and
    ``bearer.<key>``, the server picks ``chatbus.v1`` (never echoing the key)."""
    url = gateway.base_url.replace("http://", "ws://") + "/responses"
    offered = ["chatbus.v1", f"bearer.{key if valid else 'cb-not-a-real-key'}"]
    if not valid:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(url, subprotocols=offered):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 401
        return
    async with websockets.connect(url, subprotocols=offered) as socket:  # type: ignore[arg-type]
        assert socket.subprotocol == "chatbus.v1"
        create = {"type": "response.create", "model": settings.model.name, "input": "hi"}
        await socket.send(json.dumps({**create, "max_output_tokens": 4}))
        types: list[str] = []
        while not types or types[-1] not in ("response.completed", "response.incomplete"):
            types.append(json.loads(await socket.recv())["type"])
    assert types[0] == "response.created"


async def test_time_to_first_event_over_the_websocket_and_over_sse(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    """Rounds of one SSE stream then one WebSocket response (already connected), each read to
    its end; the first round warms up. Printed for the record, not asserted against a bound."""
    client = sdk(gateway, key)
    fields: dict[str, Any] = {"model": settings.model.name, "input": "Hi", "max_output_tokens": 4}
    over_sse: list[float] = []
    over_ws: list[float] = []
    async with client.responses.connect() as conn:
        for _ in range(4):
            started = time.perf_counter()
            sse_events: list[Any] = []
            async for event in await client.responses.create(stream=True, **fields):
                if not sse_events:
                    over_sse.append(time.perf_counter() - started)
                sse_events.append(event)
            check_stream(sse_events)

            started = time.perf_counter()
            await conn.response.create(**fields)
            first = await conn.recv()
            over_ws.append(time.perf_counter() - started)
            check_stream(await until_terminal(conn, first))
    sse_ms = statistics.median(over_sse[1:]) * 1000
    ws_ms = statistics.median(over_ws[1:]) * 1000
    print(f"\ntime to first event: WebSocket {ws_ms:.1f} ms, SSE {sse_ms:.1f} ms (median of 3)")
