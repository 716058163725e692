"""The LoRA training loop: adapters on the base model, AdamW on them alone, then merged in.

Each step takes the next ``batch_size`` examples of a stream that reshuffles the training set
every epoch (seeded), pads them on the right, and averages the loss over the batch's learned
tokens. The learning rate warms up linearly, then decays linearly to zero; gradients are clipped.
Validation loss (averaged over every learned token of the split, or of a fixed sample of it) is
measured before the first step, a few times during training and after the last.

CPU by default; on CUDA the forward pass runs under bf16 autocast while the weights and the
adapters stay float32, so merging does not round a small update away.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatbus.errors import ConfigurationError
from chatbus.logging import get_logger
from inference_consumers.training.config import ATTENTION_PROJECTIONS, LoraHyperparameters
from inference_consumers.training.errors import TrainingFailed
from inference_consumers.training.examples import IGNORE, Example

if TYPE_CHECKING:
    import torch

__all__ = ["Device", "LoraRun", "StepRecord", "pick_device", "train_lora"]

log = get_logger(__name__)


@dataclass(frozen=True)
class Device:
    torch_device: torch.device
    autocast: torch.dtype | None  # bf16 on CUDA

    def __str__(self) -> str:
        kind = str(self.torch_device)
        return f"{kind} (bf16 autocast)" if self.autocast is not None else kind


@dataclass(frozen=True)
class StepRecord:
    step: int
    epoch: float  # epochs seen after this step
    loss: float
    learning_rate: float
    tokens: int  # learned tokens in the batch
    seconds: float  # wall time of the step


@dataclass
class LoraRun:
    """What a run did; the merged model is ``model``."""

    model: Any
    steps: list[StepRecord] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)  # (after step, loss)
    target_modules: list[str] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    seconds: float = 0.0

    @property
    def epochs(self) -> float:
        return self.steps[-1].epoch if self.steps else 0.0


def pick_device(requested: str) -> Device:
    """``auto``: CUDA when present, else the CPU."""
    import torch

    wanted = requested
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    if wanted.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigurationError(f"device {requested!r} asked for but CUDA is not available")
        return Device(torch.device(wanted), torch.bfloat16)
    if wanted != "cpu":
        raise ConfigurationError(f"device must be 'auto', 'cpu' or 'cuda', got {requested!r}")
    return Device(torch.device("cpu"), None)


def train_lora(
    model: Any,
    train: Sequence[Example],
    validation: Sequence[Example],
    hyper: LoraHyperparameters,
    *,
    device: Device,
    pad_id: int,
    progress: bool = True,
    on_step: Callable[[StepRecord], None] | None = None,
) -> LoraRun:
    """Train LoRA adapters on ``model`` (a float32 causal LM) and return it merged."""
    import torch
    from tqdm import tqdm

    if not train:
        raise TrainingFailed("no training example left to train on")
    torch.manual_seed(hyper.seed)
    model.to(device.torch_device)
    peft_model, targets = _attach(model, hyper)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    run = LoraRun(
        model=None,
        target_modules=targets,
        trainable_parameters=sum(p.numel() for p in params),
        total_parameters=sum(p.numel() for p in peft_model.parameters()),
    )
    optimizer = torch.optim.AdamW(params, lr=hyper.learning_rate, weight_decay=hyper.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(hyper))
    evaluate_at = _evaluation_steps(hyper) if validation else set()
    started = time.perf_counter()
    if validation:
        run.validation.append((0, _validation_loss(peft_model, validation, hyper, device, pad_id)))
    stream = _batches(train, hyper.batch_size, hyper.seed)
    seen = 0
    with tqdm(
        total=hyper.steps, desc="training", unit="step", file=sys.stderr, disable=not progress
    ) as bar:
        for step in range(1, hyper.steps + 1):
            step_started = time.perf_counter()
            batch = next(stream)
            seen += len(batch)
            peft_model.train()
            inputs = _collate(batch, pad_id, device.torch_device)
            with _autocast(device):
                loss = peft_model(**inputs).loss
            if not torch.isfinite(loss):
                raise TrainingFailed(
                    f"the training loss became {loss.item()} at step {step}: lower --lr "
                    f"(it is {hyper.learning_rate:g})"
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, hyper.grad_clip)
            learning_rate = float(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            record = StepRecord(
                step=step,
                epoch=seen / len(train),
                loss=float(loss.item()),
                learning_rate=learning_rate,
                tokens=int((inputs["labels"][:, 1:] != IGNORE).sum()),
                seconds=time.perf_counter() - step_started,
            )
            run.steps.append(record)
            bar.update()
            bar.set_postfix(loss=f"{record.loss:.4f}", epoch=f"{record.epoch:.2f}")
            with tqdm.external_write_mode(file=sys.stderr):
                log.info(
                    "train_step",
                    step=step,
                    loss=round(record.loss, 5),
                    lr=f"{learning_rate:.3g}",
                    epoch=round(record.epoch, 3),
                    tokens=record.tokens,
                    seconds=round(record.seconds, 3),
                )
                if step in evaluate_at:
                    value = _validation_loss(peft_model, validation, hyper, device, pad_id)
                    run.validation.append((step, value))
                    log.info("validation", step=step, loss=round(value, 5))
            if on_step is not None:
                on_step(record)
    run.seconds = time.perf_counter() - started
    run.model = _merge(peft_model, validation or train, hyper, device, pad_id)
    return run


def _attach(model: Any, hyper: LoraHyperparameters) -> tuple[Any, list[str]]:
    from peft import LoraConfig, get_peft_model

    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = list(ATTENTION_PROJECTIONS) if set(ATTENTION_PROJECTIONS) <= leaves else None
    config = LoraConfig(
        r=hyper.rank,
        lora_alpha=hyper.lora_alpha,
        lora_dropout=hyper.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as exc:  # no target modules known for this architecture
        raise ConfigurationError(
            f"LoRA cannot adapt this base model ({type(model).__name__}): {exc}"
        ) from exc
    chosen = getattr(peft_model.peft_config["default"], "target_modules", None)
    return peft_model, sorted(chosen) if chosen is not None else []


def _schedule(hyper: LoraHyperparameters) -> Callable[[int], float]:
    warmup, steps = hyper.warmup, hyper.steps

    def factor(done: int) -> float:  # ``done`` steps taken; the next one uses this factor
        if done < warmup:
            return (done + 1) / (warmup + 1)
        return max(0.0, (steps - done) / max(1, steps - warmup))

    return factor


def _evaluation_steps(hyper: LoraHyperparameters) -> set[int]:
    """The last step, and ``evaluations`` steps spread evenly before it."""
    every = hyper.steps / (hyper.evaluations + 1)
    points = {round(every * i) for i in range(1, hyper.evaluations + 1)}
    return {p for p in points if 0 < p < hyper.steps} | {hyper.steps}


def _batches(examples: Sequence[Example], size: int, seed: int) -> Iterator[list[Example]]:
    """Batches of ``size`` from an endless stream that reshuffles ``examples`` every epoch."""
    rng = random.Random(seed)  # noqa: S311 - data order, not secrets
    order: list[int] = []
    while True:
        batch: list[Example] = []
        while len(batch) < size:
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            batch.append(examples[order.pop()])
        yield batch


def _collate(batch: Sequence[Example], pad_id: int, device: torch.device) -> dict[str, Any]:
    import torch

    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        labels[row, :n] = torch.tensor(example.labels)
        mask[row, :n] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
    }


def _autocast(device: Device) -> Any:
    import torch

    if device.autocast is None:
        return torch.autocast("cpu", enabled=False)
    return torch.autocast(device.torch_device.type, dtype=device.autocast)


def _validation_loss(
    model: Any,
    examples: Sequence[Example],
    hyper: LoraHyperparameters,
    device: Device,
    pad_id: int,
) -> float:
    """Cross entropy per learned token over ``examples`` (a fixed sample when there are many)."""
    import torch

    sample = list(examples)
    if len(sample) > hyper.max_validation_examples:
        rng = random.Random(hyper.seed)  # noqa: S311 - a sample, not secrets
        sample = rng.sample(sample, hyper.max_validation_examples)
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad(), _autocast(device):
        for start in range(0, len(sample), hyper.batch_size):
            inputs = _collate(sample[start : start + hyper.batch_size], pad_id, device.torch_device)
            n = int((inputs["labels"][:, 1:] != IGNORE).sum())
            if n:
                total += float(model(**inputs).loss.float()) * n
                count += n
    return total / count if count else math.nan


def _merge(
    peft_model: Any,
    probe: Sequence[Example],
    hyper: LoraHyperparameters,
    device: Device,
    pad_id: int,
) -> Any:
    """The base model with the adapters merged into its weights; checked to compute the same
    logits as the adapted model on a few examples."""
    import torch

    inputs = _collate(list(probe[: hyper.batch_size]), pad_id, device.torch_device)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        merged = peft_model.merge_and_unload()
        plain = merged(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    mask = inputs["attention_mask"].bool()
    gap = float((adapted.logits[mask] - plain.logits[mask]).abs().max())
    if not gap < 1e-2:
        raise TrainingFailed(
            f"the merged model's logits differ from the trained adapters' by {gap:.3g}: "
            "the merge went wrong, nothing was saved"
        )
    log.info("merged", max_logit_gap=gap)
    return merged
