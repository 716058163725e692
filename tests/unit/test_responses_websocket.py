"""The Responses API's WebSocket mode on a scripted backend, through Starlette's TestClient:
events as the SSE stream sends them, several responses per connection, lanes, bad messages,
a disconnect that cancels, a refused key."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from openai.types.responses.responses_server_event import ResponsesServerEvent
from pydantic import TypeAdapter
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from chatbus.api_keys import Principal
from chatbus.polling import poll_until
from producers.gateway.responses.protocol import ResponseCreateRequest
from producers.gateway.responses.serving import ResponseRun, ResponsesService
from producers.gateway.responses.websocket import ResponsesSocket, responses_socket
from producers.gateway.serving import Answer, ValidRequest
from tests.unit.fake_backend import MemoryResponseStore, ScriptedBackend
from tests.unit.test_gateway_serving import MODEL
from tests.unit.test_responses_serving import CLOSING, OPENING, responses

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(ResponsesServerEvent)
TERMINAL = {"response.completed", "response.incomplete", "response.failed", "error"}
STREAMED = [*OPENING, *["response.output_text.delta"] * 3, *CLOSING, "response.completed"]


def socket_app(svc: ResponsesService) -> Starlette:
    """``ResponsesSocket`` on ``svc`` for user alice, each create submitted as the route does."""

    async def endpoint(websocket: WebSocket) -> None:
        async def submit(valid: ValidRequest, conversation_id: str | None) -> Answer:
            return await svc.chat.submit(
                valid, user_id="alice", prompt_tokens=2, conversation_id=conversation_id
            )

        async def open_run(body: ResponseCreateRequest) -> ResponseRun:
            return await svc.open(body, user_id="alice", submit=submit)

        await websocket.accept()
        await ResponsesSocket(websocket, svc, open_run, max_bytes=1000).serve()

    return Starlette(routes=[WebSocketRoute("/v1/responses", endpoint)])


@contextmanager
def connected(
    script: list[dict[str, Any]] | None = None,
) -> Iterator[tuple[Any, ScriptedBackend, MemoryResponseStore]]:
    svc, backend, store = responses(script)
    with TestClient(socket_app(svc)) as client, client.websocket_connect("/v1/responses") as ws:
        yield ws, backend, store


def create_message(**fields: Any) -> str:
    return json.dumps({"type": "response.create", "model": MODEL, "input": "hi", **fields})


def create(ws: Any, **fields: Any) -> None:
    ws.send_text(create_message(**fields))


def receive(ws: Any) -> dict[str, Any]:
    event: dict[str, Any] = ws.receive_json()
    SERVER_EVENT.validate_python(event)  # the openai SDK's connection parses it
    return event


def until_terminal(ws: Any) -> list[dict[str, Any]]:
    events = [receive(ws)]
    while events[-1]["type"] not in TERMINAL:
        events.append(receive(ws))
    return events


def test_the_events_are_the_sse_streams_json_numbered_from_zero() -> None:
    with connected() as (ws, _, store):
        create(ws)
        events = until_terminal(ws)
    assert [e["type"] for e in events] == STREAMED
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert all("stream_id" not in e for e in events)
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello!"
    assert store.saved[final["id"]].response.status == "completed"


def test_several_responses_share_a_connection_and_chain_by_previous_response_id() -> None:
    with connected() as (ws, backend, store):
        create(ws, store=True)
        first = until_terminal(ws)[-1]["response"]
        create(ws, input="and then?", previous_response_id=first["id"])
        second = until_terminal(ws)
    assert second[0]["sequence_number"] == 0
    final = second[-1]["response"]
    assert final["previous_response_id"] == first["id"] and final["id"] != first["id"]
    assert final["conversation"] == first["conversation"]
    assert store.saved[final["id"]].conversation_id == store.saved[first["id"]].conversation_id
    assert len(backend.sent) == 2


def test_creates_on_one_lane_run_in_order_and_lanes_echo_their_stream_id() -> None:
    with connected() as (ws, _, _):
        create(ws, input="one")
        create(ws, input="two")  # sent before the first ended: queued behind it
        events = until_terminal(ws) + until_terminal(ws)
        create(ws, stream_id="side")
        side = until_terminal(ws)
    assert [e["type"] for e in events] == STREAMED * 2
    ids = [e["response"]["id"] for e in events if e["type"] == "response.created"]
    assert len(set(ids)) == 2
    assert {e["stream_id"] for e in side} == {"side"}


def test_lanes_run_concurrently() -> None:
    with connected() as (ws, backend, _):
        backend.gate.clear()  # every answer stalls after its first chunk
        create(ws, stream_id="a")
        create(ws, stream_id="b")
        opened: dict[str, int] = {}
        while len(opened) < 2:
            event = receive(ws)
            if event["type"] == "response.output_text.delta":
                opened[event["stream_id"]] = event["sequence_number"]
        backend.gate.set()  # both started before either ended
        ended = [e for e in until_terminal(ws) + until_terminal(ws) if e["type"] in TERMINAL]
    assert set(opened) == {"a", "b"}
    assert sorted(e["stream_id"] for e in ended) == ["a", "b"]
    assert {e["type"] for e in ended} == {"response.completed"}


@pytest.mark.parametrize(
    ("message", "status", "param", "code"),
    [
        ("not json", 400, None, "invalid_json"),
        (create_message(input="x" * 2000), 413, None, "request_too_large"),
        ("[1, 2]", 400, None, "invalid_event"),
        ('{"type": "response.cancel"}', 400, "type", "unsupported_event_type"),
        ('{"input": "hi"}', 400, "type", "unsupported_event_type"),
        ('{"type": "response.create", "input": "hi"}', 400, "model", "invalid_value"),
        (create_message(temperature="hot"), 400, "temperature", "invalid_value"),
        (create_message(generate=False), 400, "generate", "unsupported_parameter"),
        (create_message(background=True), 400, "background", "unsupported_parameter"),
        (create_message(stream_id=7), 400, "stream_id", "invalid_value"),
        (create_message(model="gpt-nope"), 404, "model", None),
        (
            create_message(previous_response_id="resp_" + "0" * 32),
            404,
            "previous_response_id",
            "response_not_found",
        ),
    ],
)
def test_a_bad_message_gets_an_error_event_and_the_connection_carries_on(
    message: str, status: int, param: str | None, code: str | None
) -> None:
    with connected() as (ws, _, _):
        ws.send_text(message)
        error = receive(ws)
        create(ws)
        after = until_terminal(ws)
    assert error["type"] == "error" and error["status"] == status
    assert error["error"]["param"] == param
    if code is not None:
        assert error["error"]["code"] == code
    assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"]
    assert after[-1]["type"] == "response.completed"


def test_an_error_on_a_lane_names_the_lane_and_spares_the_response_running() -> None:
    with connected() as (ws, backend, _):
        backend.gate.clear()
        create(ws, stream_id="main")
        while receive(ws)["type"] != "response.output_text.delta":
            pass
        create(ws, stream_id="other", temperature=9)
        error = receive(ws)
        backend.gate.set()
        rest = until_terminal(ws)
    assert (error["type"], error["stream_id"], error["error"]["param"]) == (
        "error",
        "other",
        "temperature",
    )
    assert rest[-1]["type"] == "response.completed" and rest[-1]["stream_id"] == "main"


def test_a_client_that_leaves_mid_response_cancels_it_on_the_bus() -> None:
    svc, backend, store = responses()
    backend.gate.clear()
    with TestClient(socket_app(svc)) as client:
        with client.websocket_connect("/v1/responses") as ws:
            create(ws)
            while receive(ws)["type"] != "response.output_text.delta":
                pass
        poll_until(
            lambda: backend.cancelled == ["req-" + "0" * 31 + "1"],
            timeout_s=5,
            what="the request cancelled on the bus",
        )
        rid = "resp_" + "0" * 31 + "1"
        poll_until(
            lambda: rid in store.saved and store.saved[rid].response.status == "cancelled",
            timeout_s=5,
            what="the response stored as cancelled",
        )


class _Keys:
    async def verify(self, key: str) -> Principal | None:
        return Principal(key_id="k1", user="alice") if key == "cb-good" else None


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "missing_api_key"), ({"authorization": "Bearer cb-wrong-key-123"}, "invalid_api_key")],
)
def test_a_bad_key_is_refused_before_the_upgrade_with_a_401(
    headers: dict[str, str], code: str
) -> None:
    app = Starlette(routes=[WebSocketRoute("/v1/responses", responses_socket)])
    app.state.gateway = SimpleNamespace(keys=_Keys())
    with (
        TestClient(app) as client,
        pytest.raises(WebSocketDenialResponse) as refused,
        client.websocket_connect("/v1/responses", headers=headers),
    ):
        pytest.fail("the upgrade was accepted")
    assert refused.value.status_code == 401
    assert refused.value.json()["error"]["code"] == code
