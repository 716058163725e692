"""What every system shares: the model, its device and dtype, batch slots and cache size.

The worker sizes its engine with ``serve.build_engine(settings)``; the ceiling engine is built by
the very same function from the same settings, and the peer server gets the matching ``--cb-*``
flags, so all three run the same model with the same batch and cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from chatbus.settings import Settings
from inference_consumers.engine.transformers_engine import CPU_MAX_BATCH_TOKENS, CPU_NUM_BLOCKS

BLOCK_SIZE = 256  # TransformersEngine's default block size


@dataclass(frozen=True, slots=True)
class ServingConfig:
    settings: Settings  # max_inflight already set to the benchmark's batch slots
    device: str  # "cpu" or "cuda…", resolved like the engine does
    dtype: str  # "float32" or "bfloat16", as the engine picks for the device
    num_blocks: int | None  # None: automatic sizing (CUDA)
    max_batch_tokens: int | None
    block_size: int = BLOCK_SIZE
    temperature: float = 0.0  # every request of every system: 0 greedy, else sampled ...
    top_p: float = 1.0  # ... with this nucleus

    @property
    def engine(self) -> str:
        """The engine the worker (and the ceiling) run: ``transformers`` or ``llama.cpp``."""
        from inference_consumers.serve import engine_kind

        return engine_kind(self.settings)

    @property
    def model_path(self) -> Path:
        return self.settings.resolved_model_path

    @property
    def model_name(self) -> str:
        return self.settings.model.name

    @property
    def max_batch(self) -> int:
        return self.settings.worker.max_inflight


def serving_config(
    settings: Settings, max_inflight: int, *, temperature: float = 0.0, top_p: float = 1.0
) -> ServingConfig:
    """The shared configuration for ``max_inflight`` batch slots."""
    device = settings.model.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_cpu = device == "cpu"
    return ServingConfig(
        settings=settings.replace(**{"max_inflight": max_inflight}),
        device=device,
        dtype="float32" if on_cpu else "bfloat16",
        num_blocks=CPU_NUM_BLOCKS if on_cpu else None,
        max_batch_tokens=CPU_MAX_BATCH_TOKENS if on_cpu else None,
        temperature=temperature,
        top_p=top_p,
    )
