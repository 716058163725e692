"""The client hints both APIs accept: what client libraries send that asks for nothing passes,
a value that asks for what chatbus lacks is a 400 naming the parameter."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from openai.types.responses import Response

from producers.gateway.errors import APIError
from producers.gateway.protocol import ChatCompletionRequest
from producers.gateway.responses.protocol import ResponseCreateRequest
from producers.gateway.routes import parse_json
from tests.unit.test_gateway_serving import body, service
from tests.unit.test_responses_serving import request, responses, start

Serve = Callable[[dict[str, Any]], object]

# what the Agents SDK, pydantic-ai and LangChain send when told to (or by default): tools: []
# and include: [] with no tools, tool_choice "auto", store, metadata, a default tier...
HARMLESS: dict[str, Any] = {
    "tools": [],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "store": True,
    "metadata": {"case": "hints"},
    "service_tier": "default",
    "prompt_cache_key": "client-libraries",
    "prompt_cache_retention": "in_memory",
    "safety_identifier": "end-user-1",
    "top_logprobs": 0,
}


def chat(fields: dict[str, Any]) -> object:
    return service()[0].validate(body(**fields))


def response(fields: dict[str, Any]) -> object:
    return responses()[0].prepare(request(**fields))


APIS = [pytest.param(chat, id="chat"), pytest.param(response, id="responses")]


def refused(serve: Serve, fields: dict[str, Any]) -> str | None:
    with pytest.raises(APIError) as err:
        serve(fields)
    assert err.value.status == 400
    assert err.value.body.error.code == "unsupported_parameter"
    return err.value.body.error.param


@pytest.mark.parametrize("serve", APIS)
def test_what_libraries_send_asking_for_nothing_is_accepted(serve: Serve) -> None:
    serve(HARMLESS)
    serve({"service_tier": "auto", "tool_choice": "none", "store": False, "tools": None})


@pytest.mark.parametrize("serve", APIS)
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        ({"service_tier": "flex"}, "service_tier"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"top_logprobs": 2}, "top_logprobs"),
    ],
)
def test_a_hint_asking_for_what_chatbus_lacks_is_a_400_naming_it(
    serve: Serve, fields: dict[str, Any], param: str
) -> None:
    assert refused(serve, fields) == param


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        ({"prompt_cache_retention": "forever"}, "prompt_cache_retention"),
        ({"safety_identifier": "x" * 65}, "safety_identifier"),
        ({"metadata": {"k": "v" * 513}}, "metadata"),
        ({"top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_a_malformed_hint_is_a_400_naming_it(raw: dict[str, Any], param: str) -> None:
    chat_body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **raw}
    responses_body = {"model": "m", "input": "hi", **raw}
    for raw_body, model in (
        (chat_body, ChatCompletionRequest),
        (responses_body, ResponseCreateRequest),
    ):
        with pytest.raises(APIError) as err:
            parse_json(json.dumps(raw_body).encode(), model)
        assert err.value.status == 400 and err.value.body.error.param == param


# --- chat completions: log probabilities and verbosity are top-level parameters ------------
def test_chat_accepts_the_default_verbosity_and_no_logprobs() -> None:
    chat({"verbosity": "medium", "logprobs": False})


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"verbosity": "low"}, "verbosity"), ({"logprobs": True}, "logprobs")],
)
def test_chat_refuses_other_verbosity_and_logprobs(fields: dict[str, Any], param: str) -> None:
    assert refused(chat, fields) == param


# --- responses: verbosity is text.verbosity, and the response echoes the hints -------------
def test_responses_accept_the_default_text_verbosity_and_refuse_another() -> None:
    response({"text": {"format": {"type": "text"}, "verbosity": "medium"}})
    assert refused(response, {"text": {"verbosity": "high"}}) == "text.verbosity"


async def test_a_response_echoes_the_hints_as_openais_response_does() -> None:
    svc, _, _ = responses()
    run = await start(svc, **HARMLESS)
    parsed = Response.model_validate((await svc.complete(run)).model_dump(mode="json"))
    assert parsed.service_tier == "default" and parsed.safety_identifier == "end-user-1"
    assert parsed.prompt_cache_key == "client-libraries"
    assert parsed.prompt_cache_retention == "in_memory"
    assert parsed.text is not None and parsed.text.verbosity == "medium"
    assert parsed.tool_choice == "auto" and parsed.tools == [] and parsed.top_logprobs == 0
    assert parsed.metadata == {"case": "hints"}
    assert parsed.usage is not None and parsed.usage.input_tokens_details.cached_tokens == 0
