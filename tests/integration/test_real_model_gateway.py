"""The real model answers through the gateway, exactly as users call it: the unchanged ``openai``
package, greedy decoding, real Kafka, Redis, FerretDB, and the history processor for the stored
conversation. Two models served side by side, each by its own consumer group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionUserMessageParam

from chatbus.polling import eventually
from chatbus.settings import Settings
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.local_models import DEFAULT_MODEL, TINY_MODEL, build_model
from inference_consumers.worker import InferenceWorker
from tests.integration.gateway_fixtures import RunningGateway
from tests.integration.processors import Processors, delete_internal_topics, stop_processors

pytestmark = [pytest.mark.integration, pytest.mark.model]


@pytest.fixture(scope="module")
def real_model_path() -> Path:
    from tests.conftest import base_settings

    return build_model(base_settings(), DEFAULT_MODEL, progress=False)


@pytest.fixture
def settings(history_settings: Settings, real_model_path: Path, demo_model_path: Path) -> Settings:
    """The real model as the default, the tiny one served beside it (the ``gateway`` and ``key``
    fixtures of ``gateway_fixtures`` take these settings)."""
    return history_settings.replace(
        **{
            "model_name": DEFAULT_MODEL,
            "model_path": real_model_path,
            "local_models": (DEFAULT_MODEL, TINY_MODEL),
            "cache_dir": demo_model_path.parent.parent,
        }
    )


def _worker(settings: Settings, model: str, path: Path) -> InferenceWorker:
    engine = TransformersEngine(
        path, model_name=model, device="cpu", max_batch=settings.worker.max_inflight
    )
    return InferenceWorker(settings, engine, worker_id=f"real-test-{model}")


@pytest.fixture
async def real_worker(settings: Settings, real_model_path: Path) -> AsyncIterator[InferenceWorker]:
    async with _worker(settings, DEFAULT_MODEL, real_model_path) as running:
        yield running


async def test_the_capital_of_france_is_paris(
    real_worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    stream = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        stream=True,
        temperature=0,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    print(f"answer: {text!r}")
    assert "Paris" in text


async def test_the_responses_api_answers_and_continues_from_the_stored_turn(
    real_worker: InferenceWorker, gateway: RunningGateway, key: str
) -> None:
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    first = await client.responses.create(
        model=DEFAULT_MODEL,
        input="Tell me about the planet Mars.",
        max_output_tokens=40,
        temperature=0,
    )
    follow_up = await client.responses.create(
        model=DEFAULT_MODEL,
        input="How far is it from the Sun?",
        max_output_tokens=32,
        temperature=0,
        previous_response_id=first.id,
    )
    print(f"turn 1: {first.output_text!r}\nturn 2: {follow_up.output_text!r}")
    assert "Mars" in follow_up.output_text  # it can only know the planet from the stored turn


async def test_a_second_turn_sees_the_first(
    settings: Settings,
    real_worker: InferenceWorker,
    gateway: RunningGateway,
    key: str,
    tmp_path: Path,
) -> None:
    """The second question names no planet; the answer can only know it from the first turn.
    Once with the turns sent by the client (the Chat Completions way), once from the stored
    conversation (the history processor's context)."""
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    first: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "Tell me about the planet Mars."}
    ]
    answer = await client.chat.completions.create(
        model=DEFAULT_MODEL, messages=first, max_tokens=40, temperature=0
    )
    said = answer.choices[0].message.content or ""
    follow_up: ChatCompletionUserMessageParam = {
        "role": "user",
        "content": "How far is it from the Sun?",
    }
    second = await client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[*first, {"role": "assistant", "content": said}, follow_up],
        max_tokens=32,
        temperature=0,
    )
    sent_back = second.choices[0].message.content or ""
    print(f"turn 1: {said!r}\nturn 2 (client sends the turns): {sent_back!r}")
    assert "Mars" in sent_back

    processors = Processors(settings, tmp_path)
    try:
        sdk = OpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
        raw = await asyncio.to_thread(
            sdk.chat.completions.with_raw_response.create,
            model=DEFAULT_MODEL,
            messages=first,
            max_tokens=40,
            temperature=0,
        )
        conversation = raw.headers["x-conversation-id"]

        async def stored_turn_answers() -> str | None:
            again = await asyncio.to_thread(
                sdk.chat.completions.create,
                model=DEFAULT_MODEL,
                messages=[follow_up],
                max_tokens=32,
                extra_body={"conversation_id": conversation},
                temperature=0,
            )
            usage = again.usage
            # the first turn is in the context once the history processor has stored it
            return (
                (again.choices[0].message.content or "")
                if usage and usage.prompt_tokens > 40
                else None
            )

        stored = await eventually(
            stored_turn_answers,
            timeout_s=120,
            what="a second turn with the stored first turn as context",
        )
        print(f"turn 2 (stored conversation): {stored!r}")
        assert "Mars" in stored
    finally:
        stop_processors(processors.proc)
        await delete_internal_topics(settings)


async def test_two_models_side_by_side_each_by_its_own_group(
    settings: Settings,
    real_worker: InferenceWorker,
    demo_model_path: Path,
    gateway: RunningGateway,
    key: str,
) -> None:
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key, max_retries=0)
    async with _worker(settings, TINY_MODEL, demo_model_path) as tiny:

        async def both_listed() -> list[str] | None:
            listed = sorted(m.id for m in (await client.models.list()).data)
            return listed if listed == sorted([DEFAULT_MODEL, TINY_MODEL]) else None

        await eventually(both_listed, timeout_s=30, what="both models in /v1/models")
        question: list[ChatCompletionMessageParam] = [
            {"role": "user", "content": "What is the capital of France?"}
        ]
        real, random = await asyncio.gather(
            client.chat.completions.create(
                model=DEFAULT_MODEL, messages=question, max_tokens=16, temperature=0
            ),
            client.chat.completions.create(
                model=TINY_MODEL, messages=question, max_tokens=16, temperature=0
            ),
        )
        assert real.model == DEFAULT_MODEL and "Paris" in (real.choices[0].message.content or "")
        assert random.model == TINY_MODEL and random.usage and random.usage.completion_tokens

        async def each_served_its_own() -> bool:  # the answer can reach us before the count
            return tiny.completed == 1 and real_worker.completed == 1

        await eventually(each_served_its_own, timeout_s=10, what="one request served by each")
        assert tiny.left_to_other_models >= 1 and real_worker.left_to_other_models >= 1

        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-nope", messages=question)
        assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]

    async def only_real_listed() -> bool:
        return [m.id for m in (await client.models.list()).data] == [DEFAULT_MODEL]

    await eventually(
        only_real_listed,
        timeout_s=30,
        what="the tiny model gone from /v1/models once its worker left",
    )
