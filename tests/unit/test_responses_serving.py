"""The Responses API on a scripted backend: event order and shapes, outcomes, refusals, store."""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.responses import Response, ResponseItem, ResponseStreamEvent
from pydantic import TypeAdapter

from producers.gateway.errors import APIError
from producers.gateway.responses.protocol import (
    ResponseCreateRequest,
    message_id,
    request_id_of,
    response_id,
)
from producers.gateway.responses.serving import ResponseRun, ResponsesService
from tests.unit.fake_backend import MemoryResponseStore, ScriptedBackend
from tests.unit.test_gateway_serving import MODEL, service

STREAM_EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
ITEM: TypeAdapter[Any] = TypeAdapter(ResponseItem)

OPENING = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
CLOSING = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def responses(
    script: list[dict[str, Any]] | None = None,
) -> tuple[ResponsesService, ScriptedBackend, MemoryResponseStore]:
    chat, backend = service(script)
    store = MemoryResponseStore()
    return ResponsesService(chat, store, clock=lambda: 1_700_000_001.0), backend, store


def request(**fields: Any) -> ResponseCreateRequest:
    return ResponseCreateRequest.model_validate({"model": MODEL, "input": "hi", **fields})


async def start(svc: ResponsesService, owner: str = "alice", **fields: Any) -> ResponseRun:
    body = request(**fields)
    prepared = svc.prepare(body)
    conversation = await svc.conversation_of(owner, body) or "conv-1"
    answer = await svc.chat.submit(
        prepared.valid, user_id=owner, prompt_tokens=2, conversation_id=conversation
    )
    return svc.begin(prepared, answer, user_id=owner, conversation_id=conversation)


def parse_sse(events: list[str]) -> list[dict[str, Any]]:
    """Each SSE event's data, checking its ``id:`` line is its sequence number and its
    ``event:`` line names its type."""
    parsed = []
    for raw in events:
        number, head, data, rest = raw.split("\n", 3)
        assert rest == "\n" and head.startswith("event: ") and data.startswith("data: ")
        body = json.loads(data.removeprefix("data: "))
        assert number == f"id: {body['sequence_number']}"
        assert head.removeprefix("event: ") == body["type"]
        STREAM_EVENT.validate_python(body)  # the openai SDK parses it
        parsed.append(body)
    return parsed


async def streamed(svc: ResponsesService, **fields: Any) -> list[dict[str, Any]]:
    run = await start(svc, **fields)
    return parse_sse([event async for event in svc.stream(run)])


# --- ids ------------------------------------------------------------------------------------
def test_a_response_id_maps_to_exactly_one_request_id() -> None:
    request_id = "req-" + "ab" * 16
    assert response_id(request_id) == "resp_" + "ab" * 16
    assert request_id_of(response_id(request_id)) == request_id
    assert message_id(request_id) == "msg_" + "ab" * 16
    for foreign in ("resp_xyz", "chatcmpl-1", "resp_" + "AB" * 16, ""):
        assert request_id_of(foreign) is None


# --- the response ---------------------------------------------------------------------------
async def test_a_completed_response_carries_text_usage_and_its_request() -> None:
    svc, backend, store = responses()
    run = await start(svc, metadata={"k": "v"}, user="end-user-1", max_output_tokens=32)
    response = await svc.complete(run)
    parsed = Response.model_validate(response.model_dump(mode="json"))
    assert parsed.output_text == "Hello!"
    assert parsed.status == "completed" and parsed.incomplete_details is None
    assert parsed.id == response_id("req-" + "0" * 31 + "1")
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (2, 4)
    assert parsed.usage.total_tokens == 6
    assert parsed.metadata == {"k": "v"} and parsed.user == "end-user-1"
    assert parsed.max_output_tokens == 32 and parsed.conversation is not None
    assert store.saved[parsed.id].response == response
    assert backend.sent[0][1].max_tokens == 32


async def test_streamed_events_come_in_openai_order_numbered_from_zero() -> None:
    svc, _, store = responses()
    events = await streamed(svc)
    types = [e["type"] for e in events]
    assert types == [*OPENING, *["response.output_text.delta"] * 3, *CLOSING, "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["response"]["status"] == "in_progress"
    assert events[0]["response"]["output"] == []
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    final = Response.model_validate(events[-1]["response"])
    assert deltas == final.output_text == events[-4]["text"] == "Hello!"
    item_ids = {e["item_id"] for e in events if "item_id" in e}
    assert item_ids == {final.output[0].id}
    assert store.saved[final.id].response.status == "completed"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
async def test_a_length_or_content_filter_stop_is_incomplete(finish: str, reason: str) -> None:
    svc, _, _ = responses([{"text": "Hel", "token_ids": [1]}, {"finish_reason": finish}])
    events = await streamed(svc)
    assert [e["type"] for e in events][-4:] == [*CLOSING, "response.incomplete"]
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": reason}
    assert final["output"][0]["status"] == "incomplete"


async def test_a_worker_error_mid_answer_fails_the_response() -> None:
    error = {"code": "internal_error", "message": "the engine fell over"}
    svc, _, store = responses([{"text": "Hel", "token_ids": [1]}, {"error": error}])
    events = await streamed(svc)
    assert [e["type"] for e in events] == [
        *OPENING,
        "response.output_text.delta",
        "response.failed",
    ]
    failed = Response.model_validate(events[-1]["response"])
    assert failed.status == "failed" and failed.error is not None
    assert "the engine fell over" in failed.error.message
    assert store.saved[failed.id].response.status == "failed"
    again, _, _ = responses([{"text": "Hel", "token_ids": [1]}, {"error": error}])
    assert (await again.complete(await start(again))).status == "failed"


@pytest.mark.parametrize("last_seen", ["response.created", "response.output_text.delta"])
async def test_a_client_gone_mid_stream_cancels_on_the_bus_and_stores_cancelled(
    last_seen: str,
) -> None:
    svc, backend, store = responses()
    run = await start(svc)
    stream = svc.stream(run)
    async for event in stream:
        if f"\nevent: {last_seen}\n" in event:
            break
    await stream.aclose()
    await svc.chat.drain()
    assert backend.cancelled == [run.answer.request_id]
    assert store.saved[run.id].response.status == "cancelled"


# --- refusals -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "name": "f"}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {}}}}, "text.format"),
        ({"reasoning": {"effort": "high"}}, "reasoning"),
        ({"include": ["reasoning.encrypted_content"]}, "include"),
        ({"previous_response_id": "resp_1", "conversation": "conv-1"}, "previous_response_id"),
        ({"input": []}, "input"),
        ({"input": [{"role": "tool", "content": "x"}]}, "input.0.role"),
        (
            {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"}]},
            "input.0.type",
        ),
        (
            {
                "input": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "input_text", "text": "look"},
                            {"type": "input_image", "image_url": "http://x/y.png"},
                        ],
                    }
                ]
            },
            "input.0.content.1",
        ),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"temperature": 3}, "temperature"),
        ({"input": [{"role": "user", "content": "x"}] * 9}, "input"),
    ],
)
def test_what_is_not_served_is_a_400_naming_the_parameter(
    fields: dict[str, Any], param: str
) -> None:
    svc, _, _ = responses()
    with pytest.raises(APIError) as err:
        svc.prepare(request(**fields))
    assert err.value.status == 400
    assert err.value.body.error.param == param


def test_an_unknown_parameter_is_refused_by_name() -> None:
    with pytest.raises(Exception, match="prompt"):
        request(prompt={"id": "pmpt_1"})  # a stored prompt template: not served


def test_harmless_defaults_clients_send_are_accepted() -> None:
    svc, _, _ = responses()
    svc.prepare(
        request(
            tools=[],
            tool_choice="auto",
            parallel_tool_calls=True,
            include=[],
            text={"format": {"type": "text"}},
            reasoning={"effort": None},
            background=False,
            truncation="disabled",
        )
    )


# --- input ----------------------------------------------------------------------------------
async def test_instructions_and_input_messages_become_the_chat_messages() -> None:
    svc, backend, store = responses()
    run = await start(
        svc,
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "No emoji."},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi"}]},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
            },
            {"role": "user", "content": "How are you?"},
        ],
    )
    await svc.complete(run)
    sent = [(m.role, m.content) for m in backend.sent[0][0]]
    assert sent == [
        ("system", "Be brief."),
        ("system", "No emoji."),
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "How are you?"),
    ]
    listed = await svc.input_items("alice", run.id, order="asc")
    items = [ITEM.validate_python(item.model_dump(mode="json")) for item in listed.data]
    assert [item.role for item in items] == ["developer", "user", "assistant", "user"]
    assert listed.first_id == items[0].id and not listed.has_more
    page = await svc.input_items("alice", run.id, limit=2)
    assert [i.id for i in page.data] == [items[3].id, items[2].id] and page.has_more
    rest = await svc.input_items("alice", run.id, limit=2, after=items[2].id)
    assert [i.id for i in rest.data] == [items[1].id, items[0].id]
    assert store.saved[run.id].input_items == listed.data


# --- stored responses -----------------------------------------------------------------------
async def test_stored_responses_are_the_owners_only() -> None:
    svc, _, _ = responses()
    run = await start(svc)
    done = await svc.complete(run)
    assert await svc.retrieve("alice", run.id) == done
    for user, rid in (("bob", run.id), ("alice", "resp_" + "f" * 32), ("alice", "nonsense")):
        with pytest.raises(APIError) as err:
            await svc.retrieve(user, rid)
        assert err.value.status == 404 and err.value.body.error.code == "response_not_found"
    with pytest.raises(APIError):
        await svc.delete("bob", run.id)
    assert (await svc.delete("alice", run.id)).model_dump() == {
        "id": run.id,
        "object": "response.deleted",
        "deleted": True,
    }
    with pytest.raises(APIError):
        await svc.retrieve("alice", run.id)


async def test_store_false_keeps_nothing() -> None:
    svc, _, store = responses()
    run = await start(svc, store=False)
    await svc.complete(run)
    assert store.saved == {}
    with pytest.raises(APIError):
        await svc.retrieve("alice", run.id)


async def test_a_follow_up_continues_the_previous_responses_conversation() -> None:
    svc, _, _ = responses()
    first = await start(svc)
    await svc.complete(first)
    body = request(previous_response_id=first.id)
    assert await svc.conversation_of("alice", body) == first.conversation_id == "conv-1"
    with pytest.raises(APIError) as err:
        await svc.conversation_of("bob", body)
    assert err.value.status == 404 and err.value.body.error.param == "previous_response_id"


async def test_cancel_stops_a_response_in_progress_and_refuses_a_finished_one() -> None:
    svc, backend, _ = responses()
    backend.gate.clear()  # the answer stops after its first chunk
    run = await start(svc)
    await svc.chat.drain()
    if run.saving is not None:
        await run.saving
    cancelled = await svc.cancel("alice", run.id)
    assert cancelled.status == "cancelled" and backend.cancelled == [run.answer.request_id]
    assert (await svc.cancel("alice", run.id)).status == "cancelled"
    with pytest.raises(APIError):
        await svc.cancel("bob", run.id)
    backend.gate.set()
    other = await start(svc)
    await svc.complete(other)
    with pytest.raises(APIError) as err:
        await svc.cancel("alice", other.id)
    assert err.value.status == 400
