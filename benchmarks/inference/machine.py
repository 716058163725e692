"""What the benchmark ran on: CPU, cores, memory, library versions, device, model size."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

import psutil
import torch
import transformers
from safetensors import safe_open

from benchmarks.inference.config import ServingConfig


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_parameters(path: Path) -> int | None:
    """Parameters counted from the safetensors headers (no weights loaded)."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            for name in weights.keys():  # noqa: SIM118 - safe_open is not a dict
                shape = weights.get_slice(name).get_shape()
                count = 1
                for dim in shape:
                    count *= int(dim)
                total += count
    return total


def machine_info(config: ServingConfig) -> dict[str, Any]:
    cuda = torch.cuda.is_available() and config.device.startswith("cuda")
    return {
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": config.device,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
    }


def model_info(config: ServingConfig) -> dict[str, Any]:
    return {
        "name": config.model_name,
        "path": str(config.model_path),
        "parameters": model_parameters(config.model_path),
        "dtype": config.dtype,
    }
