"""The OpenAI-compatible gateway on the real bus, stores and demo model.

The official ``openai`` package, unchanged, talks to a gateway served by uvicorn in this process;
an in-process inference worker answers. Raw httpx checks the SSE wire format field by field.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from schemas.events import CancelRequest
from schemas.topics import TopicName
from tests.integration.gateway_fixtures import RunningGateway, running_gateway
from tests.integration.raw_kafka import read_events

pytestmark = [pytest.mark.integration, pytest.mark.model]

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there"}]


def sse_data(lines: list[str]) -> list[str]:
    """The data payloads of an SSE body: every event is ``id: <n>`` (numbered from 0, what a
    resuming client sends back) then one data line."""
    payloads = [line for line in lines if line]
    ids, data = payloads[0::2], payloads[1::2]
    assert ids == [f"id: {n}" for n in range(len(ids))], payloads
    assert all(line.startswith("data: ") for line in data), payloads
    return [line.removeprefix("data: ") for line in data]


@asynccontextmanager
async def stream_completion(
    gateway: RunningGateway, key: str, request: dict[str, Any]
) -> AsyncIterator[httpx.Response]:
    """The streaming response of a chat completion ``request`` sent with ``key``."""
    async with (
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
        http.stream(
            "POST", "/v1/chat/completions", json=request, headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        yield response


async def test_the_openai_sdk_streams_and_completes_with_usage(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)

    def stream() -> tuple[list[Any], str]:
        chunks = list(
            client.chat.completions.create(
                model=settings.model.name,
                messages=HELLO,
                stream=True,
                max_tokens=16,
                temperature=0,
                stream_options={"include_usage": True},
            )
        )
        return chunks, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    chunks, streamed_text = await asyncio.to_thread(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason in {"stop", "length"}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 16
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    completion = await asyncio.to_thread(
        client.chat.completions.create,
        model=settings.model.name,
        messages=HELLO,
        max_tokens=16,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == streamed_text  # greedy: the same answer
    assert completion.choices[0].finish_reason in {"stop", "length"}
    assert completion.usage is not None and completion.usage.prompt_tokens == usage.prompt_tokens

    models = await AsyncOpenAI(base_url=gateway.base_url, api_key=key).models.list()
    assert [m.id for m in models.data] == [settings.model.name]


async def test_the_sse_wire_format_field_by_field(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    request = {
        "model": settings.model.name,
        "messages": HELLO,
        "stream": True,
        "max_tokens": 12,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    async with stream_completion(gateway, key, request) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        request_id = response.headers["x-request-id"]
        assert request_id.startswith("req-")
        assert response.headers["x-ratelimit-limit-requests"] == str(
            settings.gateway.requests_per_minute
        )
        for name in (
            "remaining-requests",
            "reset-requests",
            "limit-tokens",
            "remaining-tokens",
            "reset-tokens",
        ):
            assert f"x-ratelimit-{name}" in response.headers
        payloads = sse_data([line async for line in response.aiter_lines()])

    assert payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads[:-1]]
    assert {e["id"] for e in events} == {"chatcmpl-" + request_id.removeprefix("req-")}
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert len({e["created"] for e in events}) == 1
    assert {e["model"] for e in events} == {settings.model.name}
    content, usage = events[:-1], events[-1]
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in e["choices"][0]["delta"] for e in content[1:])
    assert [e["choices"][0]["finish_reason"] for e in content[:-1]] == [None] * (len(content) - 1)
    assert content[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    assert all(e["usage"] is None for e in content)
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] <= 12
    assert usage["usage"]["total_tokens"] == (
        usage["usage"]["prompt_tokens"] + usage["usage"]["completion_tokens"]
    )


async def test_a_client_that_disconnects_mid_stream_frees_the_worker_slot(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    request = {
        "model": settings.model.name,
        "stream": True,
        "max_tokens": 1500,
        "messages": [{"role": "user", "content": "talk for a long time"}],
    }
    async with stream_completion(gateway, key, request) as response:
        assert response.status_code == 200
        request_id = response.headers["x-request-id"]
        async for line in response.aiter_lines():
            if '"content":"' in line and '"content":""' not in line:
                break  # tokens are flowing: the worker holds the request
        assert worker.inflight == 1
    # leaving the block closed the connection mid-stream

    async def slot_freed() -> bool:
        return worker.inflight == 0

    await eventually(slot_freed, timeout_s=30, what="the disconnected request's slot to free")
    cancels = await read_events(settings, TopicName.CONTROL, 1)
    assert isinstance(cancels[0], CancelRequest) and cancels[0].request_id == request_id


async def test_the_auth_matrix(settings: Settings, gateway: RunningGateway, key: str) -> None:
    request = {"model": settings.model.name, "messages": HELLO, "max_tokens": 2}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
        missing = await http.post("/v1/chat/completions", json=request)
        wrong = await http.post(
            "/v1/chat/completions",
            json=request,
            headers={"Authorization": "Bearer cb-not-a-real-key"},
        )
        good = await http.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    for response, code in ((missing, "missing_api_key"), (wrong, "invalid_api_key")):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == code
        assert response.json()["error"]["type"] == "invalid_request_error"
        assert response.headers["x-request-id"]
    assert "cb-not-a-real-key" not in wrong.text
    assert good.status_code == 200

    with pytest.raises(openai.AuthenticationError):
        await AsyncOpenAI(
            base_url=gateway.base_url, api_key="cb-wrong", max_retries=0
        ).chat.completions.create(model=settings.model.name, messages=HELLO)


async def test_bad_parameters_are_400_naming_them_and_unknown_models_404(
    settings: Settings, worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=settings.model.name, messages=HELLO, temperature=3.5
        )
    assert bad.value.body["param"] == "temperature"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=settings.model.name, messages=HELLO, stop=["a", "b", "c", "d", "e"]
        )
    assert bad.value.body["param"] == "stop"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="gpt-nope", messages=HELLO)
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as too_long:  # the worker measures the prompt
        await client.chat.completions.create(
            model=settings.model.name,
            max_tokens=16,
            messages=[{"role": "user", "content": "word " * 5000}],
        )
    assert too_long.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert too_long.value.body["param"] == "messages"  # type: ignore[index]


async def test_a_model_the_workers_do_not_serve_is_404_from_the_worker(
    settings: Settings, worker: InferenceWorker, key: str
) -> None:
    served = settings.replace(**{"gateway_models": (settings.model.name, "other")})
    async with running_gateway(served) as gateway:
        client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="other", messages=HELLO, stream=True)
    assert "not served by this worker group" in missing.value.body["message"]  # type: ignore[index]


async def test_size_and_message_limits_are_4xx_with_the_reason(
    settings: Settings, key: str
) -> None:
    limited = settings.replace(**{"gateway_max_body_bytes": 2048, "gateway_max_messages": 2})
    async with (
        running_gateway(limited) as gateway,
        httpx.AsyncClient(base_url=gateway.url, headers={"Authorization": f"Bearer {key}"}) as http,
    ):
        big = await http.post(
            "/v1/chat/completions",
            json={
                "model": settings.model.name,
                "messages": [{"role": "user", "content": "x" * 4000}],
            },
        )
        many = await http.post(
            "/v1/chat/completions", json={"model": settings.model.name, "messages": HELLO * 3}
        )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert many.status_code == 400 and many.json()["error"]["param"] == "messages"
