"""What one ``chatbus train`` run is asked to do: the hyperparameters and their defaults.

The defaults fit the served 135 M model on a laptop CPU: LoRA of rank 8 on the attention
projections, 200 steps of 4 conversations of at most 512 tokens at a learning rate of 2e-4
(docs/training.md has the measured time per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["ATTENTION_PROJECTIONS", "LoraHyperparameters", "TrainingRequest"]

# The attention projections of Llama-style models (SmolLM2, chatbus-tiny, Qwen, Mistral, ...).
# A model without all four gets peft's own choice for its architecture.
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class LoraHyperparameters:
    steps: int = 200
    learning_rate: float = 2e-4
    rank: int = 8
    alpha: int | None = None  # None: twice the rank
    dropout: float = 0.05
    batch_size: int = 4
    max_length: int = 512
    seed: int = 0
    warmup_steps: int | None = None  # None: a tenth of the steps, at most 20
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    evaluations: int = 4  # validation passes during training, besides before and after
    max_validation_examples: int = 256  # a larger split is sampled (same sample every pass)

    def __post_init__(self) -> None:
        for name in ("steps", "rank", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8 tokens, got {self.max_length}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")

    @property
    def lora_alpha(self) -> int:
        return self.alpha if self.alpha is not None else 2 * self.rank

    @property
    def warmup(self) -> int:
        if self.warmup_steps is not None:
            return min(self.warmup_steps, self.steps)
        return min(20, self.steps // 10)


@dataclass(frozen=True)
class TrainingRequest:
    """One run: what to train on, from which model, into which folder."""

    dataset: Path
    output: Path
    base: str | None = None  # a local model name or a Hugging Face folder; None: the served one
    validation: Path | None = None  # overrides the dataset folder's validation.jsonl
    hyper: LoraHyperparameters = LoraHyperparameters()
    device: str = "auto"  # 'auto' (CUDA with bf16 autocast when present, else CPU), 'cpu', 'cuda'
    overwrite: bool = False
    progress: bool = True
