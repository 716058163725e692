"""The chat-completions service on a scripted backend: validation, SSE format, errors, cancel."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from producers.gateway.backend import PromptCounter
from producers.gateway.errors import APIError
from producers.gateway.protocol import ChatCompletionRequest, UsageInfo
from producers.gateway.serving import ChatCompletionService
from schemas.events import ChatMessage, ErrorInfo, SamplingParams
from tests.unit.fake_backend import ScriptedBackend

MODEL = "chatbus-tiny"


class CharCounter(PromptCounter):
    async def count(self, messages: Sequence[ChatMessage]) -> int:
        return sum(len(m.content) for m in messages)


HELLO = [
    {"text": "Hel", "token_ids": [1, 2]},
    {"text": "lo", "token_ids": [3]},
    {"text": "!", "token_ids": [4], "finish_reason": "stop"},
]


def service(
    script: list[dict[str, Any]] | None = None, **kwargs: Any
) -> tuple[ChatCompletionService, ScriptedBackend]:
    backend = ScriptedBackend(script if script is not None else HELLO)
    options: dict[str, Any] = {
        "models": [MODEL],
        "default_max_tokens": 64,
        "max_messages": 8,
        "clock": lambda: 1_700_000_000.0,
    }
    options.update(kwargs)
    return ChatCompletionService(backend, CharCounter(), **options), backend


def body(**fields: Any) -> ChatCompletionRequest:
    base: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    base.update(fields)
    return ChatCompletionRequest.model_validate(base)


# --- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"seed": -3}, "seed"),
        ({"messages": [{"role": "user", "content": "x"}] * 9}, "messages"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(fields: dict[str, Any], param: str) -> None:
    svc, _ = service()
    with pytest.raises(APIError) as err:
        svc.validate(body(**fields))
    assert err.value.status == 400
    assert err.value.body.error.param == param
    assert err.value.body.error.type == "invalid_request_error"


def test_an_unknown_model_is_404_model_not_found() -> None:
    svc, _ = service()
    with pytest.raises(APIError) as err:
        svc.validate(body(model="gpt-nope"))
    assert err.value.status == 404
    assert err.value.body.error.code == "model_not_found"
    assert MODEL in err.value.body.error.message


def test_openai_parameters_become_our_sampling_params() -> None:
    svc, _ = service()
    valid = svc.validate(
        body(
            messages=[
                {"role": "developer", "content": "be brief"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                },
            ],
            temperature=0,
            top_p=0.5,
            max_completion_tokens=7,
            stop="\n",
            seed=3,
        )
    )
    assert [(m.role, m.content) for m in valid.messages] == [("system", "be brief"), ("user", "ab")]
    assert valid.sampling == SamplingParams(
        temperature=0, top_p=0.5, max_tokens=7, stop=["\n"], seed=3
    )
    assert valid.max_tokens == 7
    assert svc.validate(body()).max_tokens == 64  # the default when the client sets none


# --- answers --------------------------------------------------------------------------------
def events(raw: list[str], first_id: int = 0) -> list[Any]:
    """The events' data; each event is numbered in its SSE ``id``, from ``first_id`` up."""
    data = []
    for n, event in enumerate(raw, start=first_id):
        head, _, body = event.partition("\n")
        if event != "data: [DONE]\n\n":
            assert head == f"id: {n}", event
            event = body
        assert event.startswith("data: ") and event.endswith("\n\n")
        data.append(event[6:-2] if event == "data: [DONE]\n\n" else json.loads(event[6:-2]))
    return data


async def test_a_stream_is_openai_sse_with_role_first_finish_last_usage_and_done() -> None:
    svc, backend = service()
    usage_seen: list[UsageInfo] = []

    async def on_usage(usage: UsageInfo) -> None:
        usage_seen.append(usage)

    valid = svc.validate(body(stream=True, stream_options={"include_usage": True}))
    answer = await svc.submit(valid, user_id="alice", prompt_tokens=2, on_usage=on_usage)
    out = events([e async for e in svc.stream(answer)])
    await svc.drain()

    assert out[-1] == "[DONE]"
    chunks = out[:-1]
    assert {c["id"] for c in chunks} == {answer.id} and answer.id.startswith("chatcmpl-")
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["created"] for c in chunks} == {1_700_000_000}
    assert {c["model"] for c in chunks} == {MODEL}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "Hello!"
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals == [chunks[-2]] and finals[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert usage_seen == [UsageInfo(prompt_tokens=2, completion_tokens=4, total_tokens=6)]
    assert backend.sent[0][2] == "alice" and backend.cancelled == []


async def test_without_include_usage_chunks_carry_no_usage_field() -> None:
    svc, _ = service()
    answer = await svc.submit(svc.validate(body(stream=True)), user_id="u", prompt_tokens=1)
    out = events([e async for e in svc.stream(answer)])
    assert all("usage" not in c for c in out[:-1])
    assert out[-2]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("length", "length"), ("cancelled", "stop"), ("content_filter", "content_filter")],
)
async def test_finish_reasons_map_to_openai(ours: str, theirs: str) -> None:
    svc, _ = service([{"text": "x", "token_ids": [1], "finish_reason": ours}])
    answer = await svc.submit(svc.validate(body()), user_id="u", prompt_tokens=1)
    completion = await svc.complete(answer)
    assert completion.choices[0].finish_reason == theirs


async def test_a_non_streamed_answer_is_one_chat_completion_with_usage() -> None:
    svc, _ = service()
    answer = await svc.submit(svc.validate(body()), user_id="u", prompt_tokens=5)
    completion = await svc.complete(answer)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Hello!"
    assert completion.usage == UsageInfo(prompt_tokens=5, completion_tokens=4, total_tokens=9)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("model_not_found", 404),
        ("context_length_exceeded", 400),
        ("invalid_request", 400),
        ("engine_error", 500),
    ],
)
async def test_a_refusal_before_the_first_token_is_an_http_error(code: str, status: int) -> None:
    error = {"code": code, "message": "no", "param": "messages"}
    svc, _ = service([{"finish_reason": "error", "error": error}])
    settled: list[UsageInfo] = []

    async def on_usage(usage: UsageInfo) -> None:
        settled.append(usage)

    with pytest.raises(APIError) as err:
        await svc.submit(
            svc.validate(body(stream=True)), user_id="u", prompt_tokens=3, on_usage=on_usage
        )
    assert err.value.status == status
    assert err.value.body.error.code == code and err.value.body.error.param == "messages"
    assert settled == [UsageInfo()]  # the token reservation is given back


async def test_an_error_mid_stream_is_an_error_event_without_done() -> None:
    svc, _ = service(
        [
            {"text": "a", "token_ids": [1]},
            {
                "finish_reason": "error",
                "error": ErrorInfo(code="engine_error", message="boom").model_dump(),
            },
        ]
    )
    answer = await svc.submit(svc.validate(body(stream=True)), user_id="u", prompt_tokens=1)
    out = events([e async for e in svc.stream(answer)])
    assert out[-1] == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": "engine_error"}
    }


async def test_closing_a_stream_early_cancels_the_request_on_the_bus() -> None:
    svc, backend = service()
    backend.gate.clear()  # the answer stalls after its first chunk
    answer = await svc.submit(svc.validate(body(stream=True)), user_id="u", prompt_tokens=1)
    stream = svc.stream(answer)
    assert isinstance(stream, AsyncIterator)
    await anext(stream)  # role
    await anext(stream)  # "Hel"
    await stream.aclose()  # type: ignore[attr-defined]  # the client went away
    await svc.drain()
    assert backend.cancelled == [answer.request_id]
