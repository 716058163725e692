"""The CPU peer: llama.cpp's own OpenAI server (``llama-cpp-python[server]``) on the same GGUF.

What a CPU user would run instead of chatbus. ``--chat_format chatml`` renders the same ChatML
prompt as the model's Hugging Face template (without it, its template detection answered the
capital-of-France prompt with nonsense). It serves one sequence at a time, and by default a new
request interrupts the one streaming (``--interrupt_requests``): here they queue.
"""

from __future__ import annotations

import os
import sys
import uuid

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.system import READY_TIMEOUT_S, OpenAIServerSystem
from inference_consumers.engine.llama_cpp_engine import CTX_PER_SLOT, find_gguf


class LlamaServerSystem(OpenAIServerSystem):
    """A ``python -m llama_cpp.server`` subprocess and a streaming HTTP client for it."""

    name = "llama.cpp"
    label = "llama.cpp server"
    ready_path = "/v1/models"
    ready_hint = " (is llama-cpp-python[server] installed?)"
    request_timeout_s = 600.0

    def __init__(self, config: ServingConfig, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        super().__init__(
            config,
            process_name=f"bench-llama-server-{uuid.uuid4().hex[:8]}",
            ready_timeout_s=ready_timeout_s,
        )

    def argv(self, port: int) -> list[str]:
        gguf = find_gguf(self._config.model_path)
        if gguf is None:
            raise BenchError(f"no .gguf at {self._config.model_path} for the llama.cpp server")
        return [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf),
            "--model_alias",
            self._config.model_name,
            "--chat_format",
            "chatml",
            "--n_ctx",
            str(CTX_PER_SLOT),
            "--n_threads",
            str(os.cpu_count() or 1),
            # its default lets each new request cut the one streaming: queue them instead
            "--interrupt_requests",
            "False",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
