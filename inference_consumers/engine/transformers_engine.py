"""The real engine: any Hugging Face causal LM, served with transformers' continuous batching.

One ``ContinuousBatchingManager`` is kept warm for the engine's whole life. Its background thread
runs every forward pass (never the asyncio loop), takes new requests and cancellations between
decode steps, and hands each step's outputs to the loop in one ``call_soon_threadsafe`` call; the
engine turns them into ``TokenEvent``s on a per-request ``asyncio.Queue``.

What the 5.x manager can and cannot do per request, and what this engine does about it:

- ``max_new_tokens`` and the EOS ids: per request, natively.
- ``temperature`` and ``top_p``: per request through its per-request logits processors. The manager
  has one ``do_sample`` flag; a greedy request (``temperature == 0``) gets ``top_p < 0``, which
  leaves one candidate, so sampling returns exactly the argmax token. Sampling costs a sort of the
  logits and a multinomial draw per step, so while **every** request in flight is greedy the
  engine switches the manager's model runner to plain argmax (:class:`GreedySwitch`), and back
  before the next sampled request is queued. ``sampling=False`` builds a greedy-only manager
  (every request is greedy; temperature and top_p are ignored).
- ``seed``: ignored. The manager draws from one process-wide torch generator shared by the whole
  batch, so a per-request seed cannot make a request reproducible.
- cancel: ``cancel_request`` frees the request's cache blocks before the next step but sends no
  final output, so the engine ends the stream itself (``cancelled``) at once.
"""

from __future__ import annotations

import importlib.util
import logging
import queue
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.generation import ContinuousBatchingConfig
from transformers.generation.continuous_batching import RequestStatus

from inference_consumers.engine.base import (
    EngineError,
    EngineFinishReason,
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

if TYPE_CHECKING:
    from transformers.generation.continuous_batching import ContinuousBatchingManager
    from transformers.generation.continuous_batching.requests import GenerationOutput

    from chatbus.settings import Settings

__all__ = ["TransformersEngine"]

log = logging.getLogger(__name__)

# Paged KV cache on CPU: automatic sizing probes GPU memory (slow on CPU and wants psutil), so a
# fixed size is used there: 64 blocks of 256 tokens hold 8 sequences of 2,048 tokens.
CPU_NUM_BLOCKS = 64
CPU_MAX_BATCH_TOKENS = 512
STOP_TIMEOUT_S = 30.0


@dataclass(eq=False, slots=True)
class _Stream(EngineStream):
    eos_token_ids: frozenset[int] = frozenset()
    sent: int = 0  # generated tokens already put on the queue


# A top_p below 0 makes the top-p processor drop every token but the most likely one (it always
# keeps one), so sampling returns exactly the argmax: greedy inside a sampling batch.
GREEDY_TOP_P = -1.0


def sampling_kwargs(request: GenerationRequest) -> dict[str, Any]:
    """Per-request logits processor arguments of ``request``."""
    if request.temperature <= 0:
        return {"temperature": 1.0, "top_p": GREEDY_TOP_P}
    return {
        "temperature": float(request.temperature),
        "top_p": min(max(float(request.top_p), 0.0), 1.0),  # 0 keeps only the top token
    }


def finish_reason(output: GenerationOutput, eos_token_ids: frozenset[int]) -> EngineFinishReason:
    """Why a finished output ended: ``stop`` on an EOS id, ``length`` otherwise."""
    if output.status == RequestStatus.FAILED:
        return "error"
    tokens = output.generated_tokens
    return "stop" if tokens and tokens[-1] in eos_token_ids else "length"


class GreedySwitch:
    """Runs the manager's decode steps as plain argmax while no sampled request is in flight.

    The model runner reads ``do_sample`` and its processors' ``do_processing`` on every step (the
    varlen path on CPU, not a captured graph), so flipping them between steps is safe in both
    directions: sampling is switched on *before* a sampled request is queued, so no step that holds
    it runs greedy; it is switched off only once no sampled request is left, and a greedy request
    gets the same token from argmax as from its top-p-of-one sampling. On a CUDA-graph path, or a
    transformers without these attributes, the switch stays on sampling (correct, just slower).
    """

    def __init__(self, manager: Any) -> None:
        self._manager = manager
        self._runner: Any = None
        self._processing = False
        self.greedy = False

    def _resolve(self) -> Any:
        """The manager's model runner, once its batch processor exists (after the first step)."""
        if self._runner is None:
            batch_processor = getattr(self._manager, "batch_processor", None)
            runner = getattr(batch_processor, "model_runner", None)
            processors: Any = getattr(runner, "logit_processor", None)
            if (
                runner is not None
                and hasattr(runner, "do_sample")
                and hasattr(processors, "do_processing")
                and not getattr(runner, "use_cuda_graph_varlen", False)
                and getattr(runner, "_compiled_varlen", None) is None
            ):
                self._runner, self._processing = runner, bool(processors.do_processing)
        return self._runner

    def set_greedy(self, greedy: bool) -> None:
        if greedy == self.greedy:
            return
        runner = self._resolve()
        if runner is None:
            return
        runner.do_sample = not greedy
        runner.logit_processor.do_processing = self._processing and not greedy
        self.greedy = greedy


class TransformersEngine(ThreadLoadedEngine[_Stream], InferenceEngine):
    """``InferenceEngine`` over a Hugging Face causal LM folder, with continuous batching.

    ``generate`` raises ``EngineError`` at once for a request it cannot take (engine not started,
    empty or too long prompt, duplicate id); a failure during generation ends the stream with an
    ``error`` event instead.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        model_name: str,
        device: str = "auto",
        max_batch: int = 8,
        num_blocks: int | None = None,
        max_batch_tokens: int | None = None,
        block_size: int = 256,
        sampling: bool = True,
        warmup: bool = True,
        threads: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        self.model_path = Path(model_path)
        self.model_name = model_name
        self.requested_device = device
        self.max_batch = max_batch
        self.num_blocks = num_blocks
        self.max_batch_tokens = max_batch_tokens
        self.block_size = block_size
        self.sampling = sampling
        self.warmup = warmup
        self.threads = threads  # CPU threads of the forward passes (None: torch's default)
        self._threads_applied: int | None = None  # what the generation thread runs on
        # Known once started.
        self.max_context = 0
        self.eos_token_ids = frozenset()
        self.device: torch.device | None = None
        self._init_lifecycle()
        self._tokenizer: Any = None
        self._model: Any = None
        self._manager: ContinuousBatchingManager | None = None
        self._sampled: set[str] = set()  # requests in flight that sample (not greedy)
        self._greedy_switch: GreedySwitch | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TransformersEngine:
        kwargs: dict[str, Any] = {
            "model_name": settings.model.name,
            "device": settings.model.device,
            "max_batch": settings.worker.max_inflight,
        }
        kwargs.update(overrides)
        return cls(settings.resolved_model_path, **kwargs)

    # ------------------------------------------------------------------ lifecycle
    def _resolve_device(self) -> tuple[torch.device, torch.dtype]:
        wanted = self.requested_device
        if wanted == "auto":
            wanted = "cuda" if torch.cuda.is_available() else "cpu"
        if wanted.startswith("cuda"):
            if not torch.cuda.is_available():
                raise EngineError(f"device {wanted!r} asked for but CUDA is not available")
            return torch.device(wanted), torch.bfloat16
        return torch.device("cpu"), torch.float32

    def _load(self) -> None:
        """Load the model and start the manager (runs in a worker thread)."""
        if not (self.model_path / "config.json").is_file():
            raise EngineError(
                f"no model at {self.model_path}: build the demo model "
                "(python -m inference_consumers.demo_model) or set CHATBUS_MODEL_PATH"
            )
        device, dtype = self._resolve_device()
        if device.type == "cpu" and importlib.util.find_spec("psutil") is None:
            # 5.x sizes (and checks) the paged cache from psutil's memory numbers on CPU; without
            # psutil it sees 0 bytes free and the generation loop dies on its first batch.
            raise EngineError("continuous batching on CPU needs psutil: pip install psutil")
        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(self.model_path)
            model: Any = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise EngineError(f"cannot load the model at {self.model_path}: {exc}") from exc
        model = model.to(device).eval()
        if device.type == "cpu":
            model.register_forward_pre_hook(self._apply_threads)
        text_config = model.config.get_text_config()
        self.max_context = int(getattr(text_config, "max_position_embeddings", 0) or 0) or int(
            tokenizer.model_max_length
        )
        self.eos_token_ids = _eos_ids(model, tokenizer)
        if not self.eos_token_ids:
            raise EngineError(f"the model at {self.model_path} names no EOS token")

        manager = model.init_continuous_batching(
            generation_config=self._generation_config(tokenizer),
            continuous_batching_config=self._cb_config(device),
        )
        manager.start()
        self._tokenizer, self._model, self._manager, self.device = tokenizer, model, manager, device
        try:
            if self.warmup:
                self._warm_up()
        except BaseException:
            self._shutdown()
            raise
        if self.sampling:
            self._greedy_switch = GreedySwitch(manager)
            self._greedy_switch.set_greedy(True)  # nothing in flight (needs the warm-up's step)
        log.info(
            "engine started: %s on %s (%s), max_context=%d, max_batch=%d",
            self.model_name,
            device,
            dtype,
            self.max_context,
            self.max_batch,
        )

    def set_threads(self, threads: int) -> bool:
        """On CPU: run the forward passes on ``threads`` threads from the next step (a GPU
        engine's are fixed: False)."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1, not {threads}")
        if self.device is not None and self.device.type != "cpu":
            return False
        self.threads = threads
        log.info("engine threads: %d", threads)
        return True

    def _apply_threads(self, *_: object) -> None:
        """Before each forward pass, on the manager's generation thread: torch's intra-op thread
        count is that thread's own, so a change is made there."""
        wanted = self.threads
        if wanted is not None and wanted != self._threads_applied:
            torch.set_num_threads(wanted)
            self._threads_applied = wanted

    def _generation_config(self, tokenizer: Any) -> GenerationConfig:
        pad = tokenizer.pad_token_id
        common: dict[str, Any] = {
            "max_new_tokens": 64,
            "eos_token_id": sorted(self.eos_token_ids),
            "pad_token_id": pad if pad is not None else min(self.eos_token_ids),
        }
        if not self.sampling:
            return GenerationConfig(do_sample=False, **common)
        # The manager has one do_sample flag and builds a processor only for a value that is not
        # its neutral default; every request then sets its own values (see sampling_kwargs).
        return GenerationConfig(
            do_sample=True,
            temperature=0.7,
            top_k=0,  # no top-k processor: it would sort the logits once more per step
            top_p=0.95,
            **common,
        )

    def _request_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        return sampling_kwargs(request) if self.sampling else {}

    def _cb_config(self, device: torch.device) -> ContinuousBatchingConfig:
        num_blocks, max_batch_tokens = self.num_blocks, self.max_batch_tokens
        if device.type == "cpu":
            num_blocks = num_blocks or CPU_NUM_BLOCKS
            max_batch_tokens = max_batch_tokens or CPU_MAX_BATCH_TOKENS
        return ContinuousBatchingConfig(
            block_size=self.block_size,
            num_blocks=num_blocks,
            max_batch_tokens=max_batch_tokens,
            max_requests_per_batch=self.max_batch,
            per_request_processors=True,
        )

    def _warm_up(self) -> None:
        """One tiny request through the manager, so the first real one pays no set-up cost."""
        assert self._manager is not None
        prompt = self.encode_chat([{"role": "user", "content": "warm up"}])
        request_id = f"warmup-{uuid.uuid4().hex}"
        accepted = self._manager.add_request(
            prompt,
            request_id=request_id,
            max_new_tokens=2,
            eos_token_id=sorted(self.eos_token_ids),
            **self._request_kwargs(GenerationRequest(request_id, prompt, 2, temperature=0)),
        )
        finished = None
        if accepted is not None:
            for output in self._manager.request_id_iter(request_id):
                finished = output
        if finished is None or finished.status != RequestStatus.FINISHED:
            fatal = self._manager.background_thread_status.fatal_error
            reason = fatal or (finished.error if finished is not None else "no output")
            raise EngineError(f"the model failed its warm-up request: {reason}")

    def _shutdown(self) -> None:
        manager, self._manager = self._manager, None
        if manager is not None:
            manager.stop(block=True, timeout=STOP_TIMEOUT_S, hard_stop=True)
            manager.destroy()
        self._model = None
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ text
    # ------------------------------------------------------------------ generation
    def generate(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        manager = self._manager
        if self._state is not EngineState.STARTED or manager is None:
            raise EngineError("engine not started: call start() first")
        request_id = request.request_id
        if request_id in self._streams:
            raise EngineError(f"request {request_id!r} is already running")
        prompt = [int(i) for i in request.prompt_ids]
        room = room_for(request, self.max_context)
        self._discard_unrouted_outputs()

        stream = _Stream(request_id, eos_token_ids=self.eos_token_ids)
        self._streams[request_id] = stream
        switch = self._greedy_switch
        if self.sampling and request.temperature > 0:
            self._sampled.add(request_id)
            if switch is not None:
                switch.set_greedy(False)  # before the request can be scheduled
        elif switch is not None and not self._sampled:
            switch.set_greedy(True)
        try:
            manager.register_result_handler(request_id, lambda out: self._on_output(stream, out))
        except RuntimeError as exc:  # no running event loop
            del self._streams[request_id]
            raise EngineError("generate() must be called from the engine's event loop") from exc
        try:
            accepted = manager.add_request(
                prompt,
                request_id=request_id,
                max_new_tokens=min(request.max_new_tokens, room),
                streaming=True,
                eos_token_id=sorted(self.eos_token_ids),
                **self._request_kwargs(request),
            )
        except Exception as exc:  # queue.Full, and whatever else the manager raises
            self._forget(stream)
            raise EngineError(f"the engine refused request {request_id!r}: {exc}") from exc
        if accepted is None:
            self._forget(stream)
            raise EngineError(f"the engine refused request {request_id!r}: generation loop stopped")
        return self._events(stream)

    def _events(self, stream: _Stream) -> AsyncIterator[TokenEvent]:
        def abandoned() -> None:
            if not stream.done:
                self._cancel_stream(stream, emit=False)

        return read_events(stream.queue, abandoned=abandoned)

    async def cancel(self, request_id: str) -> None:
        stream = self._streams.get(request_id)
        if stream is not None:
            self._cancel_stream(stream, emit=True)

    def _cancel_stream(self, stream: _Stream, *, emit: bool) -> None:
        manager = self._manager
        if manager is not None:
            manager.cancel_request(stream.request_id)
        if emit:
            self._finish(stream, "cancelled")
        else:
            stream.done = True
            self._forget(stream)

    # ------------------------------------------------------------------ outputs (loop thread)
    def _on_output(self, stream: _Stream, output: GenerationOutput) -> None:
        if stream.done:
            return
        new_tokens = [int(t) for t in output.generated_tokens[stream.sent :]]
        stream.sent += len(new_tokens)
        if output.status == RequestStatus.FAILED:
            self._finish(stream, "error", new_tokens, error=output.error or "generation failed")
        elif output.is_finished():
            self._finish(stream, finish_reason(output, stream.eos_token_ids), new_tokens)
        elif new_tokens:
            stream.queue.put_nowait(TokenEvent(stream.request_id, new_tokens))

    def _forget(self, stream: _Stream) -> None:
        if self._streams.get(stream.request_id) is stream:
            del self._streams[stream.request_id]
            self._sampled.discard(stream.request_id)
            if not self._sampled and self._greedy_switch is not None:
                self._greedy_switch.set_greedy(True)
        manager = self._manager
        if manager is not None:
            # A request that ends without a final output (cancelled) keeps its handler otherwise.
            router = manager.output_router
            with router._lock:
                router.result_handlers.pop(stream.request_id, None)

    def _discard_unrouted_outputs(self) -> None:
        """Drop outputs that arrived after their handler was removed (a cancelled request's last
        step); every live request has a handler, so nothing else lands in the shared queue."""
        manager = self._manager
        if manager is None:
            return
        output_queue = manager.output_router.output_queue
        while True:
            try:
                output_queue.get_nowait()
            except queue.Empty:
                return

    @property
    def greedy_path(self) -> bool:
        """Whether decode steps run as plain argmax right now (no sampled request in flight)."""
        return not self.sampling or bool(self._greedy_switch and self._greedy_switch.greedy)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    return eos_ids(model.generation_config.eos_token_id, tokenizer.eos_token_id)
