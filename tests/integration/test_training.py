"""``chatbus train`` for real, on the tiny random-weights demo model, on CPU: a few LoRA steps
produce a merged folder that transformers loads, that differs from the base model, that records
its run, and that the worker's engine serves; and the command line reports bad input in one line.

No services needed; the candidate is trained once per module (a few seconds).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from inference_consumers.engine.base import GenerationRequest
from inference_consumers.engine.transformers_engine import TransformersEngine
from inference_consumers.serve import build_engine
from inference_consumers.training.chat_jsonl import parse_line
from inference_consumers.training.config import LoraHyperparameters, TrainingRequest
from inference_consumers.training.examples import IGNORE, encode_conversation
from inference_consumers.training.run import TrainingResult, finetune
from tests.conftest import base_settings
from tests.integration.engine_streams import collect, generate_greedy

pytestmark = pytest.mark.model

ANSWER = "Noted: {}. Anything else?"
PROMPT = [{"role": "user", "content": "Please note: tea at five."}]
DATA_CARD = "# Feedback set\n\nUp-rated answers of October.\n"
CHATBUS = [sys.executable, "-m", "chatbus.cli"]


def chat_line(note: str) -> str:
    return json.dumps(
        {
            "messages": [
                {"role": "user", "content": f"Please note: {note}."},
                {"role": "assistant", "content": ANSWER.format(note)},
            ]
        }
    )


def write_set(folder: Path) -> Path:
    """A fine-tuning set as the Spark job writes it: train, validation, a Markdown data card;
    one conversation has no assistant turn (skipped and counted)."""
    folder.mkdir(parents=True)
    notes = [f"call {name}" for name in ("Ada", "Bob", "Cy", "Di", "Ed", "Flo", "Gus", "Hal")]
    lines = [chat_line(n) for n in notes]
    lines.insert(3, json.dumps({"messages": [{"role": "user", "content": "anyone there?"}]}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    held_out = [chat_line(n) for n in ("buy milk", "feed the cat")]
    (folder / "validation.jsonl").write_text("\n".join(held_out) + "\n")
    (folder / "data_card.md").write_text(DATA_CARD)
    return folder


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory, demo_model_path: Path) -> TrainingResult:
    root = tmp_path_factory.mktemp("training")
    request = TrainingRequest(
        dataset=write_set(root / "set"),
        output=root / "candidate",
        base=str(demo_model_path),
        hyper=LoraHyperparameters(steps=8, learning_rate=5e-3, rank=4, batch_size=4, max_length=96),
        device="cpu",
        progress=False,
    )
    return finetune(base_settings(), request)


def prompt_ids(folder: Path) -> list[int]:
    tokenizer: Any = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.apply_chat_template(
        PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return [int(i) for i in ids]


def test_the_pieces_tokenise_as_the_whole_conversation_and_only_answers_are_learned(
    demo_model_path: Path,
) -> None:
    tokenizer: Any = AutoTokenizer.from_pretrained(demo_model_path)
    messages = [
        {"role": "user", "content": "Hi there, how are you?"},
        {"role": "assistant", "content": " Fine, thanks!\n\nAnd you?  "},
        {"role": "user", "content": "Good.\n"},
        {"role": "assistant", "content": "Great — 42 ✓"},
    ]
    chat = parse_line(json.dumps({"messages": messages}), "chat:1")
    assert chat is not None

    ids, labels = encode_conversation(tokenizer, chat, system_prompt="Be kind.")

    served = [{"role": "system", "content": "Be kind."}, *messages]
    assert ids == list(tokenizer.apply_chat_template(served, tokenize=True, return_dict=False))
    learned = [i for i, label in zip(ids, labels, strict=True) if label != IGNORE]
    assert tokenizer.decode(learned) == (
        " Fine, thanks!\n\nAnd you?  <|im_end|>Great — 42 ✓<|im_end|>"
    )


def test_the_candidate_is_a_merged_model_that_differs_from_its_base(
    candidate: TrainingResult, demo_model_path: Path
) -> None:
    folder = candidate.output
    for name in ("config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("adapter_*")), "adapters must be merged, not saved beside"
    assert not list(folder.glob("*.gguf")), "a GGUF of the base would serve the base's weights"
    assert not list(folder.parent.glob(".candidate.tmp-*")), "the build folder is left behind"

    ids = torch.tensor([prompt_ids(folder)])
    assert prompt_ids(folder) == prompt_ids(demo_model_path)
    trained = AutoModelForCausalLM.from_pretrained(folder).eval()
    base = AutoModelForCausalLM.from_pretrained(demo_model_path).eval()
    with torch.no_grad():
        gap = (trained(input_ids=ids).logits - base(input_ids=ids).logits).abs().max()
    assert float(gap) > 1e-2


def test_the_run_is_recorded_with_its_losses_and_data_card(candidate: TrainingResult) -> None:
    folder = candidate.output
    record = json.loads((folder / "training.json").read_text())
    assert record == candidate.record
    assert record["hyperparameters"]["steps"] == 8
    assert record["examples"]["train"] == 8
    assert record["examples"]["skipped_no_assistant"] == 1
    assert record["examples"]["validation"] == 2
    assert record["epochs"] == pytest.approx(8 * 4 / 8)
    assert record["lora"]["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert record["dataset"]["data_card"] == DATA_CARD
    assert {"torch", "transformers", "peft"} <= set(record["versions"])

    with (folder / "loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == list(range(9))  # row 0: validation before
    losses = [float(r["train_loss"]) for r in rows[1:]]
    assert all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(record["train_loss"]["first"], abs=1e-5)
    held_out = record["validation_loss"]
    assert held_out["after"] < held_out["before"], "8 steps on one answer pattern must help"
    assert float(rows[-1]["validation_loss"]) == pytest.approx(held_out["after"], abs=1e-6)

    assert (folder / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (folder / "data_card.md").read_text() == DATA_CARD
    card = (folder / "README.md").read_text()
    assert "Up-rated answers of October." in card
    assert f"CHATBUS_MODEL_PATH={folder}" in card
    assert f"{held_out['before']:.4f} before → {held_out['after']:.4f} after" in card


async def test_the_workers_engine_serves_the_candidate(candidate: TrainingResult) -> None:
    settings = base_settings(model_name="candidate", model_path=candidate.output, device="cpu")
    engine = build_engine(settings)
    assert isinstance(engine, TransformersEngine)  # no GGUF: never llama.cpp on the base's weights

    async with engine:
        prompt = engine.encode_chat(PROMPT)
        tokens, last = await collect(
            engine.generate(GenerationRequest("r1", prompt, 6, temperature=0))
        )
    assert last.finished and tokens
    model = AutoModelForCausalLM.from_pretrained(candidate.output).eval()
    reference = generate_greedy(model, prompt, 6, engine.eos_token_ids)[0, len(prompt) :].tolist()
    assert tokens == reference[: len(tokens)]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CHATBUS, "train", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **base_settings().as_env(), "HF_HUB_OFFLINE": "1"},
    )


def test_the_command_line_trains_and_says_where_the_candidate_is(
    tmp_path: Path, demo_model_path: Path
) -> None:
    data = write_set(tmp_path / "set")
    output = tmp_path / "out"
    args = ["--dataset", str(data / "train.jsonl"), "--output", str(output)]
    tiny = ["--base", str(demo_model_path), "--steps", "2", "--batch-size", "2", "--no-progress"]

    done = run_cli(*args, *tiny, "--max-length", "64")

    assert done.returncode == 0, done.stderr[-2000:]
    assert f"candidate: {output}" in done.stdout
    assert "validation loss: " in done.stdout  # validation.jsonl beside train.jsonl
    record = json.loads((output / "training.json").read_text())
    assert record["hyperparameters"]["max_length"] == 64
    assert done.stderr.count("train_step") == 2  # the per-step log

    again = run_cli(*args, *tiny)
    assert again.returncode == 1 and "exists and is not empty" in again.stderr
    assert "--overwrite" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (chat_line("a") + "\n{not json\n", ":2: not valid JSON (Expecting property name"),
        ("\n\n", "empty, no conversation to train on"),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n",
            "has an assistant message to learn from (1 skipped)",
        ),
    ],
)
def test_bad_input_is_one_line_not_a_traceback(
    tmp_path: Path, demo_model_path: Path, content: str, message: str
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(content)

    done = run_cli("--dataset", str(data), "--output", str(tmp_path / "out"))

    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]  # after the warnings, if any
    assert last.startswith("error: ") and message in last, done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
