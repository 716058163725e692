"""The event contract: what validates, what does not, and that exported schemas are current."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from chatbus.errors import InvalidEvent
from chatbus.kafka.codec import decode_event, encode_event
from schemas import TOPICS, ChatRequest, Completion, TokenChunk, Usage, topic
from schemas.export import render, stale_files


def _request(**fields: object) -> ChatRequest:
    base: dict[str, object] = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "reply_to": {"partition": 1},
    }
    base.update(fields)
    return ChatRequest.model_validate(base)


def test_a_request_round_trips_through_the_codec() -> None:
    request = _request(sampling={"temperature": 0, "max_tokens": 5, "stop": ["\n"]})
    decoded = decode_event("chat.requests", encode_event(request), ("chat.request",))
    assert decoded == request
    assert decoded.schema_version == 1
    assert decoded.reply_to.topic == "chat.tokens"


@pytest.mark.parametrize(
    "sampling, param",
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_sampling_parameters_are_refused_naming_the_parameter(
    sampling: dict[str, object], param: str
) -> None:
    raw = _request().model_dump(mode="json")
    raw["sampling"].update(sampling)
    with pytest.raises(InvalidEvent) as err:
        decode_event("chat.requests", json.dumps(raw).encode())
    assert f"sampling.{param}" in err.value.reason


def test_garbage_and_wrong_types_are_invalid_events_with_a_reason() -> None:
    with pytest.raises(InvalidEvent, match="Invalid JSON"):
        decode_event("chat.requests", b"{not json")
    with pytest.raises(InvalidEvent, match="does not belong on this topic"):
        chunk = TokenChunk(request_id="r", conversation_id="c", seq=0)
        decode_event("chat.requests", encode_event(chunk), ("chat.request",))
    with pytest.raises(InvalidEvent, match="tombstone"):
        decode_event("chat.requests", None)


def test_unknown_fields_and_versions_are_rejected() -> None:
    raw = _request().model_dump(mode="json")
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({**raw, "surprise": 1})
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({**raw, "schema_version": 2})


def test_usage_total_must_be_the_sum() -> None:
    assert Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7).total_tokens == 7
    with pytest.raises(ValidationError, match="total_tokens"):
        Usage(prompt_tokens=3, completion_tokens=4, total_tokens=8)


def test_completion_carries_a_known_finish_reason() -> None:
    with pytest.raises(ValidationError):
        Completion(request_id="r", conversation_id="c", model="m", text="", finish_reason="eh")


def test_every_topic_of_the_design_is_registered_with_its_key() -> None:
    names = {t.value for t in TOPICS}
    assert names == {
        "chat.requests",
        "chat.requests.approved",
        "chat.tokens",
        "chat.completions",
        "chat.moderation",
        "chat.control",
        "chat.feedback",
        "chat.dlq",
    }
    assert topic("chat.tokens").key == "request_id"
    assert topic("chat.requests").key == "conversation_id"
    with pytest.raises(KeyError, match="known topics"):
        topic("chat.nope")


def test_exported_json_schemas_are_current() -> None:
    assert stale_files() == [], "schemas/json is stale: run `make schemas`"
    assert set(render()) == {
        "chat.request.json",
        "chat.token.json",
        "chat.completion.json",
        "chat.cancel.json",
        "chat.moderation.json",
        "chat.appeal.json",
        "chat.rating.json",
        "chat.dead_letter.json",
    }
