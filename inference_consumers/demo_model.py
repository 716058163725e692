"""Build a tiny Hugging Face-format chat model offline, for local runs and tests.

The model is random weights (it talks nonsense) but it is a real ``LlamaForCausalLM`` with a real
byte-level BPE tokenizer and a ChatML chat template, so every code path of the inference worker
(chat template, tokenization, continuous batching, EOS handling, streaming) runs as it would on a
downloaded model. Nothing is downloaded: the tokenizer is trained on the Python standard library's
own source files, which exist on every machine that runs chatbus.

    python -m inference_consumers.demo_model [--path P] [--force]

The build is idempotent: the marker file ``chatbus-demo-model.json`` is written last, and a folder
that holds it (with the current build version) is reused as is. Partial builds go to a temporary
folder next to the target and are renamed into place, so a crash never leaves a half-built model.
"""

from __future__ import annotations

import argparse
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbus.errors import ConfigurationError
from inference_consumers.model_folder import building, finish_build, read_marker, save_quietly

if TYPE_CHECKING:  # heavy imports happen inside the build, so ``--help`` and no-op runs are instant
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

__all__ = [
    "BUILD_VERSION",
    "CHAT_TEMPLATE",
    "MARKER_FILE",
    "build_demo_model",
    "is_demo_model",
    "main",
]

MARKER_FILE = "chatbus-demo-model.json"
# Bump when anything below changes the built files; an older build is then rebuilt.
BUILD_VERSION = 1

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
END_OF_TEXT = "<|endoftext|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]

VOCAB_SIZE = 6000
CORPUS_MAX_BYTES = 3_000_000
SEED = 1234

# ChatML, as Qwen-style models render it.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('chat roles are system, user and assistant, got ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

MODEL_SHAPE: dict[str, Any] = {
    "hidden_size": 256,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
    "intermediate_size": 768,
    "max_position_embeddings": 2048,
}

_STEPS = (
    "collect corpus",
    "train tokenizer",
    "save tokenizer",
    "init model",
    "save model",
    "finish",
)


def is_demo_model(path: Path) -> bool:
    """Whether ``path`` holds a complete demo model of the current build version."""
    return read_marker(path / MARKER_FILE).get("build_version") == BUILD_VERSION


def corpus_files() -> list[Path]:
    """A deterministic subset of the standard library: its top-level modules, by name."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    candidates = sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*.txt"))
    chosen: list[Path] = []
    total = 0
    for file in candidates:
        size = file.stat().st_size
        if total + size > CORPUS_MAX_BYTES:
            continue
        chosen.append(file)
        total += size
    if not chosen:
        raise ConfigurationError(f"no text files found in the standard library at {stdlib}")
    return chosen


def _iter_corpus(files: list[Path]) -> Iterator[str]:
    for file in files:
        yield file.read_text(encoding="utf-8", errors="replace")


def _train_tokenizer(files: list[Path]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_iter_corpus(files), trainer=trainer, length=len(files))
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=None,
        eos_token=IM_END,
        pad_token=END_OF_TEXT,
        unk_token=None,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def _build_model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    im_end = int(tokenizer.convert_tokens_to_ids(IM_END))  # type: ignore[arg-type]
    end_of_text = int(tokenizer.convert_tokens_to_ids(END_OF_TEXT))  # type: ignore[arg-type]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        # Wider than the usual 0.02 so the random model's greedy output varies with its context
        # (at 0.02 it repeats one token), which makes batching bugs visible in tests.
        initializer_range=0.1,
        bos_token_id=None,
        eos_token_id=im_end,
        pad_token_id=end_of_text,
        **MODEL_SHAPE,
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=None,
        eos_token_id=[im_end, end_of_text],
        pad_token_id=end_of_text,
        do_sample=False,
        max_new_tokens=64,
    )
    return model.eval()


def build_demo_model(path: Path, *, progress: bool = True, force: bool = False) -> Path:
    """Build the demo model into ``path`` (a no-op when a complete build is there) and return it.

    ``force`` rebuilds even a complete build. A non-empty folder that is not a demo model build is
    never replaced without ``force``: it may be a real model someone put there.
    """
    from tqdm import tqdm

    path = Path(path).expanduser().absolute()
    if not force and is_demo_model(path):
        return path
    marker_path = path / MARKER_FILE
    if path.exists() and not force and not marker_path.exists() and any(path.iterdir()):
        raise ConfigurationError(
            f"{path} is not empty and holds no {MARKER_FILE}: it is not a demo model build. "
            "Point CHATBUS_MODEL_PATH elsewhere, or pass force=True (--force) to replace it."
        )

    started = time.perf_counter()
    with (
        building(path) as tmp_dir,
        tqdm(
            total=len(_STEPS), desc="demo model", unit="step", file=sys.stderr, disable=not progress
        ) as bar,
    ):
        bar.set_postfix_str(_STEPS[0])
        files = corpus_files()
        bar.update()

        bar.set_postfix_str(_STEPS[1])
        tokenizer = _train_tokenizer(files)
        bar.update()

        bar.set_postfix_str(_STEPS[2])
        tokenizer.save_pretrained(tmp_dir)
        bar.update()

        bar.set_postfix_str(_STEPS[3])
        model = _build_model(tokenizer)
        bar.update()

        bar.set_postfix_str(_STEPS[4])
        save_quietly(model, tmp_dir)
        bar.update()

        bar.set_postfix_str(_STEPS[5])
        marker = {
            "build_version": BUILD_VERSION,
            "architecture": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "vocab_size": len(tokenizer),
            "corpus_files": len(files),
            "python": sys.version.split()[0],
            "build_seconds": round(time.perf_counter() - started, 2),
        }
        finish_build(tmp_dir, path, MARKER_FILE, marker, is_complete=is_demo_model)
        bar.update()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m inference_consumers.demo_model",
        description="Build the tiny random-weights chat model used for local runs and tests.",
    )
    parser.add_argument("--path", type=Path, default=None, help="target folder (default: settings)")
    parser.add_argument("--force", action="store_true", help="rebuild even if a build is there")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    path = args.path
    if path is None:
        from chatbus.settings import get_settings

        path = get_settings().model_folder("chatbus-tiny")
    built = build_demo_model(path, progress=not args.quiet, force=args.force)
    print(built)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
