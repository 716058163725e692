"""Client libraries, unchanged, through the real pipeline: the OpenAI Agents SDK, pydantic-ai and
LangChain, each on the Responses API and on Chat Completions.

Each is configured only the way its documentation says to point it at an OpenAI-compatible
server: a base URL and an API key (the Agents SDK: ``set_default_openai_client`` and tracing
disabled, there being no route to OpenAI's trace endpoint), the model named by its served name.
Each runs once with its defaults and once with the settings users commonly turn on (temperature,
a token limit, ``store``, ``metadata``, ``service_tier``, ``verbosity``, prompt-cache hints,
usage in streams...), which are what the libraries send beyond the request proper. A real tool
is refused with a 400 naming ``tools``.

The model is the tiny random one: the tests check shapes (non-empty text, usage, ids), never
wording. Each answer and its time are printed (``-s``). The Agents SDK treats a response that
stopped at its token limit (``incomplete``) as an error, as it does against OpenAI, and the random
model seldom stops on its own, so its Responses runs ask for greedy decoding (``temperature=0``)
of a prompt the tiny model answers in a few tokens.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version
from typing import Any, TypeVar

import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIChatCompletionsModel,
    RawResponsesStreamEvent,
    Runner,
    RunResult,
    RunResultStreaming,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI
from pydantic_ai import Agent as PydanticAgent
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models.openai import (
    OpenAIChatModel,
    OpenAIChatModelSettings,
    OpenAIResponsesModel,
    OpenAIResponsesModelSettings,
)
from pydantic_ai.providers.openai import OpenAIProvider

from chatbus.settings import Settings
from inference_consumers.worker import InferenceWorker
from tests.integration.gateway_fixtures import RunningGateway

pytestmark = [pytest.mark.integration, pytest.mark.model]

T = TypeVar("T")
MAX_TOKENS = 24
INSTRUCTIONS = "Be brief."
# greedy decoding of this prompt after INSTRUCTIONS ends on its own in 12 tokens of the tiny model
# (demo model BUILD_VERSION 1); a rebuilt model may need another prompt
STOPS_EARLY = "yes!"
TERMINAL = {"response.completed", "response.incomplete"}


def report(label: str, seconds: float, text: str, usage: object) -> None:
    print(f"\n[{label}] {seconds * 1000:.0f} ms  text={text[:60]!r}  usage={usage}")


async def timed(make: Callable[[], Awaitable[T]]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await make()
    return result, time.perf_counter() - started


# --- the OpenAI Agents SDK -------------------------------------------------------------------
AGENTS = f"openai-agents {version('openai-agents')}"
AGENT_SETTINGS = {
    "defaults": ModelSettings(),
    "settings": ModelSettings(
        temperature=0.7,
        top_p=0.95,
        max_tokens=MAX_TOKENS,
        store=True,
        metadata={"case": "agents"},
        include_usage=True,
        tool_choice="auto",
        truncation="disabled",
        verbosity="medium",
    ),
}


@pytest.fixture
async def agents_client(gateway: RunningGateway, key: str) -> AsyncIterator[AsyncOpenAI]:
    """The Agents SDK pointed at chatbus as its docs say for other providers."""
    client = AsyncOpenAI(base_url=gateway.base_url, api_key=key)
    set_default_openai_client(client, use_for_tracing=False)  # never hand our key to tracing
    set_tracing_disabled(True)
    try:
        yield client
    finally:
        await client.close()


def agent_answer(result: RunResult | RunResultStreaming) -> str:
    assert isinstance(result.final_output, str) and result.final_output
    return result.final_output


async def streamed_events(result: RunResultStreaming) -> list[str]:
    """The Responses events the agent streamed, its own events around them aside."""
    return [
        event.data.type
        async for event in result.stream_events()
        if isinstance(event, RawResponsesStreamEvent)
    ]


@pytest.mark.parametrize("variant", list(AGENT_SETTINGS))
async def test_agents_sdk_runner_on_the_responses_api(
    settings: Settings,
    worker: InferenceWorker,
    agents_client: AsyncOpenAI,
    variant: str,
) -> None:
    greedy = AGENT_SETTINGS[variant].resolve(ModelSettings(temperature=0))
    agent = Agent(
        name="assistant",
        instructions=INSTRUCTIONS,
        model=settings.model.name,
        model_settings=greedy,
    )
    result, seconds = await timed(lambda: Runner.run(agent, STOPS_EARLY))
    usage = result.context_wrapper.usage
    report(f"{AGENTS} responses Runner.run {variant}", seconds, agent_answer(result), usage)
    assert result.last_response_id is not None and result.last_response_id.startswith("resp_")
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens > 0

    streaming = Runner.run_streamed(agent, STOPS_EARLY)
    types, seconds = await timed(lambda: streamed_events(streaming))
    usage = streaming.context_wrapper.usage
    report(
        f"{AGENTS} responses Runner.run_streamed {variant}", seconds, streaming.final_output, usage
    )
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "response.output_text.delta" in types
    assert agent_answer(streaming) and usage.output_tokens > 0


@pytest.mark.parametrize("variant", list(AGENT_SETTINGS))
async def test_agents_sdk_runner_on_chat_completions(
    settings: Settings,
    worker: InferenceWorker,
    agents_client: AsyncOpenAI,
    variant: str,
) -> None:
    model = OpenAIChatCompletionsModel(model=settings.model.name, openai_client=agents_client)
    model_settings = AGENT_SETTINGS[variant]
    agent = Agent(
        name="assistant", instructions=INSTRUCTIONS, model=model, model_settings=model_settings
    )
    result, seconds = await timed(lambda: Runner.run(agent, "Hello"))
    usage = result.context_wrapper.usage
    report(f"{AGENTS} chat.completions Runner.run {variant}", seconds, agent_answer(result), usage)
    assert usage.requests == 1 and usage.input_tokens > 0 and usage.output_tokens > 0

    streaming = Runner.run_streamed(agent, "Hello")
    types, seconds = await timed(lambda: streamed_events(streaming))
    usage = streaming.context_wrapper.usage
    label = f"{AGENTS} chat.completions Runner.run_streamed {variant}"
    report(label, seconds, agent_answer(streaming), usage)
    assert types[0] == "response.created" and types[-1] == "response.completed"
    if model_settings.include_usage:  # usage in a stream only when asked (stream_options)
        assert usage.input_tokens > 0 and usage.output_tokens > 0


@function_tool
def local_time() -> str:
    """The local time."""
    return time.strftime("%H:%M")


async def test_agents_sdk_with_a_tool_gets_a_400_naming_tools(
    settings: Settings, worker: InferenceWorker, agents_client: AsyncOpenAI
) -> None:
    chat = OpenAIChatCompletionsModel(model=settings.model.name, openai_client=agents_client)
    for model in (settings.model.name, chat):
        agent = Agent(name="assistant", model=model, tools=[local_time])
        with pytest.raises(openai.BadRequestError) as refused:
            await Runner.run(agent, "What time is it?")
        assert refused.value.param == "tools"


# --- pydantic-ai -----------------------------------------------------------------------------
PYDANTIC_AI = f"pydantic-ai-slim {version('pydantic-ai-slim')}"
CHAT_SETTINGS = OpenAIChatModelSettings(
    temperature=0.7,
    max_tokens=MAX_TOKENS,
    openai_user="end-user-1",
    openai_store=True,
    openai_text_verbosity="medium",
    openai_service_tier="default",
    openai_prompt_cache_key="client-libraries",
    openai_prompt_cache_retention="in_memory",
)
RESPONSES_SETTINGS = OpenAIResponsesModelSettings(
    **CHAT_SETTINGS, openai_truncation="disabled", openai_previous_response_id="auto"
)


def pydantic_agent(
    api: str, gateway: RunningGateway, key: str, name: str, variant: str
) -> PydanticAgent[None, str]:
    provider = OpenAIProvider(base_url=gateway.base_url, api_key=key)
    chosen = variant == "settings"
    if api == "responses":
        responses_model = OpenAIResponsesModel(name, provider=provider)
        return PydanticAgent(
            responses_model,
            instructions=INSTRUCTIONS,
            model_settings=RESPONSES_SETTINGS if chosen else None,
        )
    chat_model = OpenAIChatModel(name, provider=provider)
    return PydanticAgent(
        chat_model, instructions=INSTRUCTIONS, model_settings=CHAT_SETTINGS if chosen else None
    )


@pytest.mark.parametrize("variant", ["defaults", "settings"])
@pytest.mark.parametrize(("api", "id_prefix"), [("responses", "resp_"), ("chat", "chatcmpl-")])
async def test_pydantic_ai_agent_run_and_run_stream(
    settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    key: str,
    api: str,
    id_prefix: str,
    variant: str,
) -> None:
    agent = pydantic_agent(api, gateway, key, settings.model.name, variant)
    result, seconds = await timed(lambda: agent.run("Hello"))
    label = f"{PYDANTIC_AI} {api} Agent.run {variant}"
    report(label, seconds, result.output, result.usage)
    assert result.output and result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    answer = result.all_messages()[-1]
    assert isinstance(answer, ModelResponse)
    assert (answer.provider_response_id or "").startswith(id_prefix)

    history = result.all_messages()
    again, seconds = await timed(lambda: agent.run("Tell me more", message_history=history))
    report(f"{label} (second turn)", seconds, again.output, again.usage)
    assert again.output and again.usage.input_tokens > result.usage.input_tokens

    async def stream() -> tuple[str, int]:
        async with agent.run_stream("Hello") as streaming:
            text = "".join([delta async for delta in streaming.stream_text(delta=True)])
            return text, streaming.usage.output_tokens

    (text, output_tokens), seconds = await timed(stream)
    report(f"{PYDANTIC_AI} {api} Agent.run_stream {variant}", seconds, text, output_tokens)
    assert text and output_tokens > 0


# --- LangChain -------------------------------------------------------------------------------
LANGCHAIN = f"langchain-openai {version('langchain-openai')}"
LANGCHAIN_SETTINGS: dict[str, Any] = {
    "temperature": 0.7,
    "max_tokens": MAX_TOKENS,
    "stream_usage": True,
    "store": True,
    "service_tier": "default",
    "verbosity": "medium",
    "model_kwargs": {"prompt_cache_key": "client-libraries", "safety_identifier": "end-user-1"},
}
LANGCHAIN_RESPONSES_SETTINGS: dict[str, Any] = {"truncation": "disabled", "include": []}


def summed(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total += chunk
    return total


def check_message(label: str, seconds: float, message: BaseMessage, id_prefix: str) -> None:
    assert isinstance(message, AIMessage)
    report(label, seconds, message.text, message.usage_metadata)
    assert message.text
    usage = message.usage_metadata
    assert usage is not None and usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert message.response_metadata.get("id", message.id or "").startswith(id_prefix)


@pytest.mark.parametrize("variant", ["defaults", "settings"])
@pytest.mark.parametrize(
    ("use_responses_api", "id_prefix"), [(True, "resp_"), (False, "chatcmpl-")]
)
async def test_langchain_chat_openai_invoke_stream_and_ainvoke(
    settings: Settings,
    worker: InferenceWorker,
    gateway: RunningGateway,
    key: str,
    use_responses_api: bool,
    id_prefix: str,
    variant: str,
) -> None:
    options: dict[str, Any] = {}
    if variant == "settings":
        options = dict(LANGCHAIN_SETTINGS)
        if use_responses_api:
            options.update(LANGCHAIN_RESPONSES_SETTINGS)
    llm = ChatOpenAI(
        model=settings.model.name,
        base_url=gateway.base_url,
        api_key=key,  # type: ignore[arg-type]  # a str is what the docs pass
        use_responses_api=use_responses_api,
        **options,
    )
    api = "responses" if use_responses_api else "chat.completions"

    message, seconds = await timed(lambda: asyncio.to_thread(llm.invoke, "Hello"))
    check_message(f"{LANGCHAIN} {api} invoke {variant}", seconds, message, id_prefix)

    chunks, seconds = await timed(lambda: asyncio.to_thread(lambda: list(llm.stream("Hello"))))
    streamed = summed(chunks)
    report(f"{LANGCHAIN} {api} stream {variant}", seconds, streamed.text, streamed.usage_metadata)
    assert len(chunks) > 1 and streamed.text
    if use_responses_api or llm.stream_usage:  # chat streams carry usage only when asked
        assert streamed.usage_metadata is not None
        assert streamed.usage_metadata["output_tokens"] > 0

    prompt = [("system", INSTRUCTIONS), ("human", "Hello")]
    message, seconds = await timed(lambda: llm.ainvoke(prompt))
    check_message(f"{LANGCHAIN} {api} ainvoke {variant}", seconds, message, id_prefix)
