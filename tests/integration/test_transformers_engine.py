"""The real engine on the real (tiny, random-weights) demo model, on CPU.

The demo model is built once per session into a temporary folder, or into
``$CHATBUS_CACHE_DIR/models/`` when that is set, so repeated local runs reuse it.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference_consumers.demo_model import MARKER_FILE, build_demo_model
from inference_consumers.engine.base import EngineError, GenerationRequest
from inference_consumers.engine.transformers_engine import TransformersEngine
from tests.integration.engine_streams import collect, generate_greedy

pytestmark = pytest.mark.model

DEADLINE_S = 20.0


@pytest.fixture(scope="session")
def demo_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("CHATBUS_CACHE_DIR"):
        from chatbus.settings import Settings

        target = Settings().cache_dir / "models" / "chatbus-demo-test"
    else:
        target = tmp_path_factory.mktemp("model") / "chatbus-tiny"
    return build_demo_model(target, progress=False)


@pytest.fixture(scope="module")
def reference_model(demo_model_path: Path) -> Iterator[torch.nn.Module]:
    model = AutoModelForCausalLM.from_pretrained(demo_model_path).eval()
    yield model


@pytest_asyncio.fixture
async def engine(demo_model_path: Path) -> AsyncIterator[TransformersEngine]:
    threads_before = set(threading.enumerate())
    engine = TransformersEngine(demo_model_path, model_name="chatbus-tiny", device="cpu")
    async with engine:
        yield engine
    # No generation thread may outlive stop().
    leaked = [
        t
        for t in threading.enumerate()
        if t not in threads_before and t.is_alive() and not t.name.startswith("asyncio_")
    ]  # asyncio_N: the loop's default executor (to_thread), which pytest-asyncio shuts down
    assert not leaked, f"threads left running after stop(): {leaked}"


NEAR_TIE = 1e-3  # top-2 logit gap under which float noise of another batch shape may flip argmax


@dataclass(frozen=True)
class Reference:
    """``generate`` greedy on one prompt alone, with the top-2 logit gap of every step."""

    tokens: list[int]
    gaps: list[float]

    def assert_matches(self, tokens: list[int], label: str = "") -> None:
        """Equal tokens up to the first near-tie (from there on, either branch is right)."""
        tie = next((i for i, gap in enumerate(self.gaps) if gap < NEAR_TIE), len(self.tokens))
        assert tokens[:tie] == self.tokens[:tie], label
        if tie == len(self.tokens):
            assert tokens == self.tokens, label


def greedy_reference(
    model: Any, prompt: list[int], max_new_tokens: int, eos: frozenset[int]
) -> Reference:
    out = generate_greedy(
        model, prompt, max_new_tokens, eos, return_dict_in_generate=True, output_logits=True
    )
    gaps = []
    for logits in out.logits:
        top2 = logits[0].float().topk(2).values
        gaps.append(float(top2[0] - top2[1]))
    return Reference(out.sequences[0, len(prompt) :].tolist(), gaps)


def prompt_of(engine: TransformersEngine, text: str) -> list[int]:
    return engine.encode_chat([{"role": "user", "content": text}])


# ---------------------------------------------------------------------------- the model itself
def test_demo_model_loads_with_auto_classes(demo_model_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(demo_model_path)
    tokenizer = AutoTokenizer.from_pretrained(demo_model_path)

    assert (demo_model_path / MARKER_FILE).is_file()
    assert (demo_model_path / "model.safetensors").is_file()
    assert 4000 <= len(tokenizer) <= 8000
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.max_position_embeddings == 2048
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in model.generation_config.eos_token_id

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Héllo 🙂"},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nHéllo 🙂<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tokenizer(rendered)["input_ids"]
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 5  # special, not split
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert isinstance(decoded, str) and decoded.endswith("Héllo 🙂\nassistant\n")


def test_second_build_is_a_no_op(demo_model_path: Path) -> None:
    before = (demo_model_path / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert build_demo_model(demo_model_path, progress=False) == demo_model_path
    assert time.perf_counter() - started < 1.0
    assert (demo_model_path / "model.safetensors").stat().st_mtime_ns == before


# ---------------------------------------------------------------------------- the engine
@pytest.mark.asyncio
async def test_engine_describes_the_model(engine: TransformersEngine) -> None:
    assert engine.max_context == 2048
    assert engine.eos_token_ids  # <|im_end|> (and <|endoftext|>)
    ids = prompt_of(engine, "hello")
    assert engine.decode(ids) == "user\nhello\nassistant\n"
    with pytest.raises(EngineError, match="chat template"):
        engine.encode_chat([{"role": "tool", "content": "x"}])


@pytest.mark.asyncio
async def test_concurrent_greedy_requests_match_generate_alone(
    engine: TransformersEngine, reference_model: torch.nn.Module
) -> None:
    texts = ["hi", "tell me about kafka " * 3, "x", "a much longer prompt " * 12, "what is 2+2?"]
    lengths = [24, 40, 8, 32, 16]
    prompts = [prompt_of(engine, t) for t in texts]
    requests = [
        GenerationRequest(f"greedy-{i}", p, n, temperature=0.0)
        for i, (p, n) in enumerate(zip(prompts, lengths, strict=True))
    ]
    # A sampled request in the same batch must not turn the greedy ones into sampled ones.
    sampled = GenerationRequest("sampled", prompts[1], 20, temperature=0.8, top_p=0.9)

    results = await asyncio.gather(*(collect(engine.generate(r)) for r in [*requests, sampled]))

    for request, (tokens, final) in zip(requests, results, strict=False):
        expected = greedy_reference(
            reference_model, list(request.prompt_ids), request.max_new_tokens, engine.eos_token_ids
        )
        expected.assert_matches(tokens, request.request_id)
        assert final.finish_reason == ("stop" if tokens[-1] in engine.eos_token_ids else "length")
    sampled_tokens, sampled_final = results[-1]
    assert sampled_final.finish_reason in ("stop", "length")
    assert 0 < len(sampled_tokens) <= 20
    assert engine.inflight == 0


@pytest.mark.asyncio
async def test_sampled_requests_keep_sampling_beside_greedy_ones(
    engine: TransformersEngine, reference_model: torch.nn.Module
) -> None:
    prompt = prompt_of(engine, "one prompt, many answers")
    greedy = GenerationRequest("greedy", prompt, 16, temperature=0.0)
    sampled = [GenerationRequest(f"hot-{i}", prompt, 16, temperature=1.5) for i in range(5)]
    assert engine.greedy_path  # idle: the argmax path

    streams = [engine.generate(r) for r in [greedy, *sampled]]
    assert not engine.greedy_path  # a sampled request is queued: sampling for the whole batch
    results = await asyncio.gather(*(collect(s) for s in streams))

    greedy_reference(reference_model, prompt, 16, engine.eos_token_ids).assert_matches(
        results[0][0], "greedy"
    )
    answers = {tuple(tokens) for tokens, _ in results[1:]}
    assert len(answers) > 1, "five answers at temperature 1.5 were identical: not sampled"
    assert engine.greedy_path  # the last sampled request is gone: back to argmax


@pytest.mark.asyncio
async def test_greedy_only_engine_serves_every_request_greedily(
    demo_model_path: Path, reference_model: torch.nn.Module
) -> None:
    engine = TransformersEngine(demo_model_path, model_name="t", device="cpu", sampling=False)
    async with engine:
        prompt = prompt_of(engine, "same either way")
        requests = [
            GenerationRequest("greedy", prompt, 16, temperature=0.0),
            GenerationRequest("sampled", prompt, 16, temperature=1.3, top_p=0.5),
        ]
        results = await asyncio.gather(*(collect(engine.generate(r)) for r in requests))
    expected = greedy_reference(reference_model, prompt, 16, engine.eos_token_ids)
    for tokens, _ in results:
        expected.assert_matches(tokens)


@pytest.mark.asyncio
async def test_request_joins_a_running_batch(
    engine: TransformersEngine, reference_model: torch.nn.Module
) -> None:
    long_request = GenerationRequest("long", prompt_of(engine, "go on"), 120, temperature=0.0)
    long_events = engine.generate(long_request)
    long_tokens: list[int] = []
    async with asyncio.timeout(DEADLINE_S):
        while len(long_tokens) < 5:  # the long request is decoding
            event = await anext(long_events)
            long_tokens.extend(event.token_ids)
            assert not event.finished

    late = GenerationRequest("late", prompt_of(engine, "short one"), 6, temperature=0.0)
    late_tokens, late_final = await collect(engine.generate(late))

    # The late request ran start to end while the long one was still decoding: it joined the batch.
    assert late_final.finish_reason in ("stop", "length")
    assert engine.inflight == 1
    rest, long_final = await collect(long_events)
    assert long_final.finish_reason in ("stop", "length")
    greedy_reference(
        reference_model, list(late.prompt_ids), 6, engine.eos_token_ids
    ).assert_matches(late_tokens)
    # The random model meets a float near-tie within ~50 tokens: exact up to there.
    greedy_reference(
        reference_model, list(long_request.prompt_ids), 120, engine.eos_token_ids
    ).assert_matches(long_tokens + rest)


@pytest.mark.asyncio
async def test_cancel_mid_stream_ends_quickly_and_engine_keeps_serving(
    engine: TransformersEngine,
) -> None:
    events = engine.generate(GenerationRequest("doomed", prompt_of(engine, "talk"), 1000))
    async with asyncio.timeout(DEADLINE_S):
        seen = 0
        while seen < 3:
            event = await anext(events)
            seen += len(event.token_ids)

    cancelled_at = time.perf_counter()
    await engine.cancel("doomed")
    await engine.cancel("doomed")  # twice is harmless
    tokens, final = await collect(events)
    assert final.finish_reason == "cancelled"
    assert final.error is None
    assert time.perf_counter() - cancelled_at < 1.0
    assert len(tokens) <= 1  # at most the step already under way
    assert engine.inflight == 0

    await engine.cancel("never-existed")
    tokens, final = await collect(engine.generate(GenerationRequest("after", [1, 2, 3], 5)))
    assert (len(tokens), final.finish_reason) == (5, "length")


@pytest.mark.asyncio
async def test_its_cpu_threads_are_resized_between_decode_steps_mid_stream(
    engine: TransformersEngine,
) -> None:
    """What the supervisor does when a second worker joins the machine: torch's thread count is
    per thread, so it must change on the generation thread, and the stream goes on."""
    seen: list[int] = []  # torch's threads as each forward pass sees them, on its own thread
    hook = engine._model.register_forward_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    try:
        assert engine.set_threads(1)
        events = engine.generate(GenerationRequest("resize", prompt_of(engine, "talk"), 40))
        async with asyncio.timeout(DEADLINE_S):
            await anext(events)
        assert engine.set_threads(2)
        _, final = await collect(events)
    finally:
        hook.remove()
    assert final.finish_reason == "length"
    assert seen[0] == 1 and seen[-1] == 2 and seen == sorted(seen)
    with pytest.raises(ValueError, match="at least 1"):
        engine.set_threads(0)


@pytest.mark.asyncio
async def test_abandoned_stream_frees_its_slot(engine: TransformersEngine) -> None:
    events = engine.generate(GenerationRequest("abandoned", prompt_of(engine, "x"), 1000))
    async with asyncio.timeout(DEADLINE_S):
        await anext(events)
    await events.aclose()  # type: ignore[attr-defined]
    assert engine.inflight == 0
    tokens, final = await collect(engine.generate(GenerationRequest("next", [5, 6], 3)))
    assert (len(tokens), final.finish_reason) == (3, "length")


@pytest.mark.asyncio
async def test_max_new_tokens_ends_with_length(engine: TransformersEngine) -> None:
    for n in (1, 7):
        tokens, final = await collect(
            engine.generate(GenerationRequest(f"len-{n}", prompt_of(engine, "count"), n))
        )
        assert len(tokens) == n
        assert final.finished and final.finish_reason == "length"


@pytest.mark.asyncio
async def test_eos_ends_with_stop(
    engine: TransformersEngine, reference_model: torch.nn.Module
) -> None:
    prompt = prompt_of(engine, "stop somewhere")
    expected = greedy_reference(reference_model, prompt, 12, engine.eos_token_ids).tokens
    # The random model rarely says <|im_end|>: declare its 6th greedy token an EOS id instead.
    eos = expected[5]
    engine.eos_token_ids = frozenset({eos})
    request = GenerationRequest("eos", prompt, 12, temperature=0.0)
    tokens, final = await collect(engine.generate(request))
    assert final.finish_reason == "stop"
    assert tokens == expected[: expected.index(eos) + 1]


@pytest.mark.asyncio
async def test_bad_requests_are_refused(engine: TransformersEngine) -> None:
    with pytest.raises(EngineError, match="empty"):
        engine.generate(GenerationRequest("empty", [], 4))
    with pytest.raises(EngineError, match="max_new_tokens"):
        engine.generate(GenerationRequest("zero", [1], 0))
    with pytest.raises(EngineError, match="no room"):
        engine.generate(GenerationRequest("huge", [7] * engine.max_context, 4))
    events = engine.generate(GenerationRequest("dup", [1, 2], 50))
    with pytest.raises(EngineError, match="already running"):
        engine.generate(GenerationRequest("dup", [1, 2], 5))
    await engine.cancel("dup")
    await collect(events)


@pytest.mark.asyncio
async def test_stop_ends_pending_streams_and_refuses_new_work(demo_model_path: Path) -> None:
    engine = TransformersEngine(demo_model_path, model_name="chatbus-tiny", device="cpu")
    await engine.start()
    await engine.start()  # idempotent
    events = engine.generate(GenerationRequest("pending", [1, 2, 3], 1000))
    async with asyncio.timeout(DEADLINE_S):
        await anext(events)
    await engine.stop()
    await engine.stop()  # idempotent
    _, final = await collect(events)
    assert final.finish_reason == "cancelled"
    with pytest.raises(EngineError, match="not started"):
        engine.generate(GenerationRequest("late", [1], 2))
    with pytest.raises(EngineError, match="stopped"):
        await engine.start()
