"""One ``chatbus train`` run, start to end: read the set, train, merge, write the candidate.

The candidate folder is built beside ``--output`` and renamed into place once complete (as
``make model`` installs its models), so a failed or interrupted run leaves nothing half-written
where a worker might load it. What the folder holds:

- the merged model (``config.json``, ``model.safetensors``, ``generation_config.json``) and the
  base model's tokenizer and chat template: ``CHATBUS_MODEL_PATH=<folder> chatbus worker``
  serves it (no GGUF: the transformers engine runs it);
- ``training.json`` (the record below), ``README.md`` (the model card), ``loss.csv``,
  ``loss.png`` and the dataset's data card, when it has one.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from chatbus.errors import ConfigurationError
from chatbus.logging import get_logger
from chatbus.settings import Settings
from inference_consumers.model_folder import building, install_folder, save_quietly, umask
from inference_consumers.training.base_model import (
    BaseModelRef,
    load_base_model,
    load_tokenizer,
    resolve_base,
    saved_dtype,
)
from inference_consumers.training.chat_jsonl import ConversationSet, read_conversations
from inference_consumers.training.config import TrainingRequest
from inference_consumers.training.errors import TrainingDataError, TrainingFailed
from inference_consumers.training.examples import EncodedSet, Example, encode_all
from inference_consumers.training.lora import LoraRun, pick_device, train_lora
from inference_consumers.training.loss_curve import write_loss_csv, write_loss_png
from inference_consumers.training.model_card import (
    RECORD_FILE,
    copy_data_card,
    write_model_card,
    write_record,
)
from inference_consumers.training.source import DatasetSource, locate_dataset

__all__ = ["TrainingResult", "finetune"]

log = get_logger(__name__)

RECORD_VERSION = 1
FINAL_WINDOW = 10  # steps the final train loss is averaged over


@dataclass(frozen=True)
class TrainingResult:
    output: Path
    record: dict[str, Any]


def finetune(settings: Settings, request: TrainingRequest) -> TrainingResult:
    """Train ``request`` and install the candidate at ``request.output``."""
    started = time.perf_counter()
    source = locate_dataset(request.dataset, request.validation)
    train_set = _read(source.train_files, "training")
    val_set = _read(source.validation_files, "validation") if source.validation_files else None
    base = resolve_base(settings, request.base)
    output = _check_output(request, base)
    hyper = request.hyper

    tokenizer = load_tokenizer(base)
    system_prompt = settings.model.default_system_prompt
    train = encode_all(
        tokenizer,
        train_set.conversations,
        max_length=hyper.max_length,
        system_prompt=system_prompt,
    )
    _report_cuts(train, hyper.max_length, "training")
    if not train.examples:
        raise TrainingDataError(
            f"every training conversation is longer than --max-length {hyper.max_length} "
            "before its first assistant token: raise --max-length"
        )
    validation = (
        encode_all(
            tokenizer,
            val_set.conversations,
            max_length=hyper.max_length,
            system_prompt=system_prompt,
        )
        if val_set is not None
        else EncodedSet()
    )
    _report_cuts(validation, hyper.max_length, "validation")

    device = pick_device(request.device)
    log.info(
        "training_started",
        base=base.name,
        examples=len(train.examples),
        validation=len(validation.examples),
        steps=hyper.steps,
        device=str(device),
    )
    model = load_base_model(base)
    pad_id = _pad_id(tokenizer)
    run = train_lora(
        model,
        train.examples,
        validation.examples,
        hyper,
        device=device,
        pad_id=pad_id,
        progress=request.progress,
    )

    with building(output) as folder:
        dtype = saved_dtype(base)  # saved as the base was (merged in float32, on the CPU)
        merged = run.model.to("cpu")
        if dtype != "float32":
            merged = merged.to(_torch_dtype(dtype))
        save_quietly(merged, folder)
        tokenizer.save_pretrained(folder)
        _verify_folder(folder, merged, (validation.examples or train.examples)[0])
        write_loss_csv(folder, run.steps, run.validation)
        write_loss_png(
            folder, run.steps, run.validation, title=f"{base.name} + LoRA: {output.name}"
        )
        card_file = copy_data_card(source.data_card_path, folder)
        record = _record(
            request,
            output=output,
            base=base,
            source=source,
            card_file=card_file,
            sets=(train_set, val_set),
            encoded=(train, validation),
            run=run,
            system_prompt=system_prompt,
            device=str(device),
            wall_time=time.perf_counter() - started,
        )
        write_record(folder, record)
        write_model_card(folder, record)
        folder.chmod(0o777 & ~umask())
        install_folder(folder, output, is_complete=lambda p: (p / RECORD_FILE).is_file())
    held_out = record["validation_loss"] or {}
    log.info(
        "training_finished",
        output=str(output),
        train_loss_first=round(record["train_loss"]["first"], 5),
        train_loss_final=round(record["train_loss"]["final"], 5),
        validation_loss_before=held_out.get("before"),
        validation_loss_after=held_out.get("after"),
        wall_time_s=record["wall_time_s"],
    )
    return TrainingResult(output=output, record=record)


def _read(files: tuple[Path, ...], split: str) -> ConversationSet:
    conversations = read_conversations(files)
    if conversations.skipped_no_assistant:
        log.warning(
            "conversations_skipped",
            split=split,
            skipped=conversations.skipped_no_assistant,
            reason="no assistant message to learn from",
            first=conversations.skipped_where,
        )
    if not conversations.conversations:
        names = ", ".join(str(f) for f in files)
        raise TrainingDataError(
            f"no {split} conversation in {names} has an assistant message to learn from "
            f"({conversations.skipped_no_assistant} skipped)"
        )
    return conversations


def _report_cuts(encoded: EncodedSet, max_length: int, split: str) -> None:
    if encoded.truncated or encoded.dropped_too_long:
        log.warning(
            "conversations_truncated",
            split=split,
            truncated=encoded.truncated,
            dropped=encoded.dropped_too_long,
            max_length=max_length,
            first=encoded.truncated_where,
            hint="cut at the end to --max-length tokens; dropped: no assistant token was left",
        )


def _check_output(request: TrainingRequest, base: BaseModelRef) -> Path:
    output = request.output.expanduser().absolute()
    base_path = base.path.expanduser().absolute()
    if output == base_path or output in base_path.parents or base_path in output.parents:
        raise ConfigurationError(
            f"--output {output} overlaps the base model's folder {base_path}: pick another folder"
        )
    if output.is_file():
        raise ConfigurationError(f"--output {output} is a file: name a folder")
    if output.is_dir() and any(output.iterdir()) and not request.overwrite:
        raise ConfigurationError(
            f"--output {output} exists and is not empty: name a new folder, or pass --overwrite "
            "to replace it"
        )
    try:  # fail now, not after the training
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(f"cannot create --output {output}: {exc}") from exc
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise ConfigurationError(f"cannot write into {output.parent} (--output): no permission")
    return output


def _pad_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0  # labels ignore padding and the attention mask hides it: any id will do


def _torch_dtype(name: str) -> Any:
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigurationError(f"the base model's config names an unknown dtype {name!r}")
    return dtype


def _verify_folder(folder: Path, merged: Any, probe: Example) -> None:
    """The saved folder loads with ``AutoModelForCausalLM`` and computes the merged model's
    logits."""
    import torch

    ids = torch.tensor([probe.input_ids])
    merged.eval()
    with torch.no_grad():
        expected = merged(input_ids=ids).logits.float()
        loaded = load_base_model(BaseModelRef(folder.name, folder), as_saved=True)
        got = loaded(input_ids=ids).logits.float()
    gap = float((expected - got).abs().max())
    if not gap < 1e-2:
        raise TrainingFailed(
            f"the saved candidate's logits differ from the trained model's by {gap:.3g}: "
            "the folder is not a faithful copy, nothing was installed"
        )


def _record(
    request: TrainingRequest,
    *,
    output: Path,
    base: BaseModelRef,
    source: DatasetSource,
    card_file: str | None,
    sets: tuple[ConversationSet, ConversationSet | None],
    encoded: tuple[EncodedSet, EncodedSet],
    run: LoraRun,
    system_prompt: str,
    device: str,
    wall_time: float,
) -> dict[str, Any]:
    """The content of ``training.json``."""
    hyper = request.hyper
    train_set, val_set = sets
    train, validation = encoded
    losses = [s.loss for s in run.steps]
    window = min(FINAL_WINDOW, len(losses))
    held_out = (
        {
            "before": run.validation[0][1],
            "after": run.validation[-1][1],
            "curve": [[step, loss] for step, loss in run.validation],
        }
        if run.validation
        else None
    )
    return {
        "record_version": RECORD_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "output": str(output),
        "base_model": {"name": base.name, "path": str(base.path)},
        "dataset": {
            "path": str(source.path),
            "train_files": [str(f) for f in source.train_files],
            "validation_files": [str(f) for f in source.validation_files],
            "data_card_source": str(source.data_card_path) if source.data_card_path else None,
            "data_card_file": card_file,
            "data_card": source.data_card,
        },
        "examples": {
            "train": len(train.examples),
            "train_lines": train_set.lines,
            "skipped_no_assistant": train_set.skipped_no_assistant,
            "truncated": train.truncated,
            "dropped_too_long": train.dropped_too_long,
            "train_tokens": train.tokens,
            "train_learned_tokens": train.learned_tokens,
            "validation": len(validation.examples),
            "validation_skipped_no_assistant": val_set.skipped_no_assistant if val_set else 0,
            "validation_used": min(len(validation.examples), hyper.max_validation_examples),
        },
        "system_prompt": system_prompt,
        "hyperparameters": {
            "steps": hyper.steps,
            "batch_size": hyper.batch_size,
            "max_length": hyper.max_length,
            "learning_rate": hyper.learning_rate,
            "warmup_steps": hyper.warmup,
            "schedule": "linear warm-up, then linear decay to 0",
            "optimizer": "AdamW",
            "weight_decay": hyper.weight_decay,
            "grad_clip": hyper.grad_clip,
            "seed": hyper.seed,
        },
        "lora": {
            "rank": hyper.rank,
            "alpha": hyper.lora_alpha,
            "dropout": hyper.dropout,
            "target_modules": run.target_modules,
            "trainable_parameters": run.trainable_parameters,
            "total_parameters": run.total_parameters,
            "merged": True,
        },
        "epochs": round(run.epochs, 4),
        "train_loss": {
            "first": losses[0],
            "last": losses[-1],
            "final": sum(losses[-window:]) / window,
            "final_window": window,
        },
        "validation_loss": held_out,
        "wall_time_s": round(wall_time, 2),
        "train_time_s": round(run.seconds, 2),
        "seconds_per_step": round(sum(s.seconds for s in run.steps) / len(run.steps), 4),
        "device": device,
        "saved_dtype": saved_dtype(base),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("chatbus", "torch", "transformers", "peft"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "unknown"
    return found
