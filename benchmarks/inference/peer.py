"""The peer: ``transformers serve --continuous-batching`` on the same model, over its OpenAI API.

Facts this module relies on (transformers 5.x): the server needs the ``transformers[serving]``
extra; its SSE stream ends on the chunk with ``finish_reason`` (no ``data: [DONE]``), which also
carries ``usage``; ``/v1/models`` fails unless ``HF_HOME`` holds a ``hub/`` folder, so the server
gets a temporary one; a server started on one model answers only that model's name (its path).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from benchmarks.inference.config import ServingConfig
from benchmarks.inference.errors import BenchError
from benchmarks.inference.system import READY_TIMEOUT_S, OpenAIServerSystem


def serve_argv(config: ServingConfig, port: int) -> list[str]:
    """The ``transformers serve`` command line matching the worker's engine."""
    program = Path(sys.executable).with_name("transformers")
    if not program.exists():
        found = shutil.which("transformers")
        if found is None:
            raise BenchError("`transformers` CLI not found: pip install 'transformers[serving]'")
        program = Path(found)
    argv = [
        str(program),
        "serve",
        str(config.model_path),
        "--continuous-batching",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        config.device,
        "--dtype",
        config.dtype,
        "--cb-block-size",
        str(config.block_size),
        "--log-level",
        "warning",
    ]
    if config.num_blocks is not None:
        argv += ["--cb-num-blocks", str(config.num_blocks)]
    if config.max_batch_tokens is not None:
        argv += ["--cb-max-batch-tokens", str(config.max_batch_tokens)]
    return argv


class PeerSystem(OpenAIServerSystem):
    """A ``transformers serve`` subprocess and a streaming HTTP client for it."""

    name = "peer"  # transformers serve
    label = "transformers serve"
    ready_path = "/health"

    def __init__(self, config: ServingConfig, *, ready_timeout_s: float = READY_TIMEOUT_S) -> None:
        super().__init__(
            config,
            process_name=f"bench-peer-{uuid.uuid4().hex[:8]}",
            ready_timeout_s=ready_timeout_s,
        )
        self._hf_home: tempfile.TemporaryDirectory[str] | None = None

    @property
    def model_id(self) -> str:
        return str(self._config.model_path)  # the server answers only to the model's path

    def argv(self, port: int) -> list[str]:
        return serve_argv(self._config, port)

    def env(self) -> dict[str, str]:
        assert self._hf_home is not None
        return {
            "HF_HOME": self._hf_home.name,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        }

    async def _start(self) -> None:
        self._hf_home = tempfile.TemporaryDirectory(prefix="chatbus-bench-hf-")
        (Path(self._hf_home.name) / "hub").mkdir()
        await super()._start()

    async def _stop(self) -> None:
        await super()._stop()
        if self._hf_home is not None:
            self._hf_home.cleanup()
            self._hf_home = None
