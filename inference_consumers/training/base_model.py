"""Which model a run starts from, and loading it from its folder (never from a hub).

``--base`` takes a local model name (``smollm2-135m-instruct``, ``chatbus-tiny``: the folders
``make model`` builds, or the served model's ``CHATBUS_MODEL_PATH``) or a Hugging Face causal LM
folder; without it, the model the settings serve.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings
from inference_consumers.local_models import LOCAL_MODELS

__all__ = ["BaseModelRef", "load_base_model", "load_tokenizer", "resolve_base", "saved_dtype"]


@dataclass(frozen=True)
class BaseModelRef:
    name: str
    path: Path


def resolve_base(settings: Settings, base: str | None) -> BaseModelRef:
    """The name and folder of ``base`` (None: the served model). Raises ConfigurationError when
    the folder holds no model."""
    if base is None:
        ref = BaseModelRef(settings.model.name, settings.resolved_model_path)
    elif os.sep in base or base.startswith(".") or Path(base).expanduser().is_dir():
        path = Path(base).expanduser().absolute()
        ref = BaseModelRef(path.name, path)
    else:
        ref = BaseModelRef(base, settings.model_folder(base))
    if not (ref.path / "config.json").is_file():
        if ref.name in LOCAL_MODELS and ref.path == settings.model_folder(ref.name):
            hint = f"build it first: chatbus model build {ref.name} (or make model)"
        else:
            hint = (
                "--base takes a local model name "
                f"({', '.join(LOCAL_MODELS)}) or a Hugging Face model folder"
            )
        raise ConfigurationError(f"no model {ref.name!r} at {ref.path}: {hint}")
    return ref


@contextmanager
def _quiet_loading() -> Any:
    """transformers without its own weight-loading progress bar (the run has one)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def load_tokenizer(ref: BaseModelRef) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ref.path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load the tokenizer of {ref.path}: {exc}") from exc


def load_base_model(ref: BaseModelRef, *, as_saved: bool = False) -> Any:
    """The model in float32, the precision it is trained and merged in (``as_saved``: in the
    dtype its folder holds)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        with _quiet_loading():
            model = AutoModelForCausalLM.from_pretrained(
                ref.path, local_files_only=True, dtype="auto" if as_saved else torch.float32
            )
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot load the model at {ref.path}: {exc}") from exc
    return model


def saved_dtype(ref: BaseModelRef) -> str:
    """The dtype the base folder's config names (``float32`` when it names none)."""
    import json

    try:
        config = json.loads((ref.path / "config.json").read_text())
    except (OSError, ValueError):
        return "float32"
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    return str(dtype)
