"""The CPU engine: llama.cpp (through ``llama-cpp-python``) on the GGUF the model ships as.

Several streams decode together in one batch (:mod:`.llama_batch_loop`); the chat template and
the token ids come from the model folder's Hugging Face tokenizer, the same ones the
transformers engine and the gateway's prompt counter use, so both engines are interchangeable
behind :class:`InferenceEngine`. Per request: ``max_new_tokens``, the EOS ids, ``temperature``,
``top_p`` and ``seed`` (a seeded request run alone gives the same tokens every time); cancel
frees the sequence's cache cells before the next step. llama.cpp is not batch-invariant: greedy
output beside other streams can differ from the same request alone after a near-tie.

    CHATBUS_ENGINE=llama.cpp   (``auto`` picks it on a machine without CUDA when the model folder
                                holds a .gguf and llama-cpp-python is installed)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from chatbus.chat_tokenizer import load_chat_tokenizer
from inference_consumers.engine.base import (
    EngineError,
    GenerationRequest,
    InferenceEngine,
    TokenEvent,
)
from inference_consumers.engine.hf_chat import (
    EngineState,
    EngineStream,
    ThreadLoadedEngine,
    eos_ids,
    read_events,
    room_for,
)
from inference_consumers.engine.llama_batch_loop import BatchLoop, LoopOutput

__all__ = ["LlamaCppEngine", "find_gguf", "llama_cpp_available"]

log = logging.getLogger(__name__)

CTX_PER_SLOT = 2048  # cache cells per batch slot; one request may use the whole cache
MAX_CTX = 65_536
N_BATCH = 512  # the most tokens one llama_decode may take
# What a step computes by default: decodes, then prompt tokens up to this many. With Q8_0 weights
# on one thread of a 2-core VM a running stream's largest stall behind a burst of prompts is
# 1.5 s at 256 and 2.7 s at 512, for 2 % later first tokens (benchmarks/engine_step.py); 512 made
# a worker kill's p99 gap miss 3 s (docs/reliability.md, "The worker kill within 3 s").
STEP_TOKENS = 256
STOP_TIMEOUT_S = 30.0


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def find_gguf(model_path: Path) -> Path | None:
    """The GGUF file of a model: ``model_path`` itself, or the one .gguf in its folder."""
    if model_path.is_file() and model_path.suffix == ".gguf":
        return model_path
    found = sorted(model_path.glob("*.gguf")) if model_path.is_dir() else []
    return found[0] if len(found) == 1 else None


class LlamaCppEngine(ThreadLoadedEngine[EngineStream], InferenceEngine):
    """``InferenceEngine`` over a GGUF with llama.cpp's batched decoding, on CPU threads."""

    def __init__(
        self,
        model_path: Path | str,
        *,
        model_name: str,
        max_batch: int = 8,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        warmup: bool = True,
        step_tokens: int = STEP_TOKENS,
        share_prefixes: bool = True,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model_path = Path(model_path)
        self.model_name = model_name
        self.max_batch = max_batch
        self.n_ctx = n_ctx or min(MAX_CTX, max_batch * CTX_PER_SLOT)
        self._threads_applied: threading.Event | None = None  # set once the last resize is
        self.n_threads = n_threads or os.cpu_count() or 1
        self.warmup = warmup
        self.step_tokens = step_tokens
        self.share_prefixes = share_prefixes  # off only to measure what it saves
        self.max_context = 0
        self.eos_token_ids = frozenset()
        self._init_lifecycle()
        self._tokenizer: Any = None
        self._llama: Any = None
        self._model: Any = None
        self._ctx: Any = None
        self._batch_loop: BatchLoop | None = None

    # ------------------------------------------------------------------ lifecycle
    def _load(self) -> None:
        gguf = find_gguf(self.model_path)
        if gguf is None:
            raise EngineError(
                f"no single .gguf file at {self.model_path}: the llama.cpp engine runs a GGUF "
                "(`make model` keeps one beside the real model); use CHATBUS_ENGINE=transformers "
                "for a Hugging Face folder without one"
            )
        if not llama_cpp_available():
            raise EngineError(
                "the llama.cpp engine needs llama-cpp-python: `make install` "
                "builds it once (or CHATBUS_ENGINE=transformers)"
            )
        folder = gguf.parent
        try:  # without importing transformers where the folder allows (21 s of CPU here)
            tokenizer: Any = load_chat_tokenizer(folder)
        except (OSError, ValueError) as exc:
            raise EngineError(f"no Hugging Face tokenizer beside {gguf}: {exc}") from exc
        import llama_cpp
        import llama_cpp._logger

        # llama.cpp prints its load report through this logger's level (some of it as level 0,
        # "none", which maps to CRITICAL): above CRITICAL keeps the worker's log structured.
        llama_cpp._logger.logger.setLevel(logging.CRITICAL + 1)
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), model_params)
        if not model:
            raise EngineError(f"llama.cpp could not load {gguf}")
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = params.n_ubatch = N_BATCH
        params.n_seq_max = self.max_batch
        params.kv_unified = True  # one cache for every sequence: a long one may use it all
        params.n_threads = params.n_threads_batch = self.n_threads
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, params)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise EngineError(
                f"llama.cpp could not make a context of {self.n_ctx} tokens for "
                f"{self.max_batch} sequences"
            )
        vocab = llama_cpp.llama_model_get_vocab(model)
        self.max_context = min(int(llama_cpp.llama_model_n_ctx_train(model)), self.n_ctx)
        self.eos_token_ids = _eos_ids(folder, tokenizer)
        if not self.eos_token_ids:
            raise EngineError(f"the model at {folder} names no EOS token")
        self._tokenizer, self._llama, self._model, self._ctx = tokenizer, llama_cpp, model, ctx
        batch_loop = BatchLoop(
            llama_cpp,
            ctx,
            n_vocab=int(llama_cpp.llama_vocab_n_tokens(vocab)),
            n_batch=N_BATCH,
            step_tokens=self.step_tokens,
            # a sliding window prunes old cells, a recurrent state cannot be cut at a position:
            # only a plain attention cache can lend a prefix's cells to another sequence
            share_prefixes=self.share_prefixes
            and int(llama_cpp.llama_model_n_swa(model)) == 0
            and not llama_cpp.llama_model_is_recurrent(model)
            and not llama_cpp.llama_model_is_hybrid(model),
            n_ctx=self.n_ctx,
            max_batch=self.max_batch,
            eos_token_ids=self.eos_token_ids,
            deliver=self._deliver_threadsafe,
        )
        batch_loop.start()
        self._batch_loop = batch_loop
        if self.n_threads != params.n_threads:  # set_threads ran while the model loaded
            batch_loop.set_threads(self.n_threads)
        log.info(
            "engine started: %s (llama.cpp, %s), max_context=%d, max_batch=%d, threads=%d",
            self.model_name,
            gguf.name,
            self.max_context,
            self.max_batch,
            self.n_threads,
        )

    async def _after_start(self) -> None:
        if not self.warmup:
            return
        prompt = self.encode_chat([{"role": "user", "content": "warm up"}])
        request = GenerationRequest("warmup", prompt, 2, temperature=0.0)
        async for event in self.generate(request):
            if event.finished and event.finish_reason == "error":
                raise EngineError(f"the model failed its warm-up request: {event.error}")

    def _shutdown(self) -> None:
        batch_loop, self._batch_loop = self._batch_loop, None
        if batch_loop is not None:
            batch_loop.stop(STOP_TIMEOUT_S)
        llama = self._llama
        if llama is not None:
            if self._ctx:
                llama.llama_free(self._ctx)
            if self._model:
                llama.llama_model_free(self._model)
        self._ctx = self._model = None

    # ------------------------------------------------------------------ text
    # ------------------------------------------------------------------ generation
    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        batch_loop = self._batch_loop
        if self._state is not EngineState.STARTED or batch_loop is None:
            raise EngineError("engine not started: call start() first")
        if not batch_loop.alive:
            raise EngineError(f"the llama.cpp loop stopped: {batch_loop.fatal_error}")
        request_id = request.request_id
        if request_id in self._streams:
            raise EngineError(f"request {request_id!r} is already running")
        room = room_for(request, self.max_context)
        if request.max_new_tokens > room:
            request = dataclasses.replace(request, max_new_tokens=room)
        stream = EngineStream(request_id)
        self._streams[request_id] = stream
        batch_loop.submit(request)
        return self._events(stream)

    def _events(self, stream: EngineStream) -> AsyncIterator[TokenEvent]:
        def abandoned() -> None:
            if not stream.done:
                stream.done = True
                self._streams.pop(stream.request_id, None)
                if self._batch_loop is not None:
                    self._batch_loop.cancel(stream.request_id)

        return read_events(stream.queue, abandoned=abandoned)

    def set_threads(self, threads: int) -> bool:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        self.n_threads = threads
        if self._batch_loop is not None:  # else the context is made with them
            self._threads_applied = self._batch_loop.set_threads(threads)
        log.info("engine threads: %d", threads)
        return True

    def wait_for_threads(self, timeout: float) -> bool:
        applied = self._threads_applied
        return applied is None or applied.wait(timeout)

    async def cancel(self, request_id: str) -> None:
        stream = self._streams.get(request_id)
        if stream is None:
            return
        if self._batch_loop is not None:
            self._batch_loop.cancel(request_id)
        self._finish(stream, "cancelled")

    # ------------------------------------------------------------------ outputs (loop thread)
    def _deliver_threadsafe(self, outputs: list[LoopOutput]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_outputs, outputs)

    def _on_outputs(self, outputs: list[LoopOutput]) -> None:
        for output in outputs:
            stream = self._streams.get(output.request_id)
            if stream is None or stream.done:
                continue
            if output.finish_reason is None:
                stream.queue.put_nowait(TokenEvent(stream.request_id, output.token_ids))
            else:
                self._finish(stream, output.finish_reason, output.token_ids, error=output.error)


def _eos_ids(folder: Path, tokenizer: Any) -> frozenset[int]:
    """The EOS ids of ``generation_config.json`` (read as JSON: transformers' GenerationConfig
    import costs seconds) and the tokenizer's."""
    configured = None
    with contextlib.suppress(OSError, ValueError):
        configured = json.loads((folder / "generation_config.json").read_text()).get("eos_token_id")
    return eos_ids(configured, tokenizer.eos_token_id)
