"""Run one inference worker process until SIGTERM/SIGINT (then drain and leave the group)."""

from __future__ import annotations

import asyncio
import signal

from chatbus.errors import ConfigurationError
from chatbus.health import Health, HealthServer
from chatbus.kafka.lag import LagReporter
from chatbus.logging import get_logger
from chatbus.settings import Settings
from inference_consumers.engine import InferenceEngine
from inference_consumers.worker import InferenceWorker, group_id_for

log = get_logger(__name__)


def engine_kind(settings: Settings) -> str:
    """Which engine serves the configured model: ``settings.engine``, or for ``auto`` llama.cpp
    on a machine without CUDA when the model has a GGUF and llama-cpp-python is installed."""
    if settings.engine != "auto":
        return settings.engine
    from inference_consumers.engine.llama_cpp_engine import find_gguf, llama_cpp_available

    if settings.device.startswith("cuda") or find_gguf(settings.resolved_model_path) is None \
            or not llama_cpp_available():
        return "transformers"
    if settings.device == "auto":
        import torch

        if torch.cuda.is_available():
            return "transformers"
    return "llama.cpp"


def build_engine(settings: Settings) -> InferenceEngine:
    """The real engine for the configured model path."""
    path = settings.resolved_model_path
    kind = engine_kind(settings)
    if kind == "llama.cpp":
        from inference_consumers.engine.llama_cpp_engine import LlamaCppEngine

        return LlamaCppEngine(path, model_name=settings.model_name,
                              max_batch=settings.max_inflight,
                              n_threads=settings.engine_threads or None)
    if not (path / "config.json").exists():
        raise ConfigurationError(
            f"no model at {path}: build the models with `make model`, or set "
            "CHATBUS_MODEL_PATH to a Hugging Face causal LM folder")
    from inference_consumers.engine.transformers_engine import TransformersEngine

    return TransformersEngine(path, model_name=settings.model_name, device=settings.device,
                              max_batch=settings.max_inflight, sampling=settings.engine_sampling)


async def _beat(health: Health, worker: InferenceWorker) -> None:
    """Liveness: the event loop turns and the worker's loops run."""
    while True:
        if worker.running:
            health.beat("worker")
        await asyncio.sleep(1.0)


async def run_worker(settings: Settings) -> None:
    health = Health("worker")
    server = HealthServer(health, settings.metrics_port) if settings.metrics_port else None
    if server:
        server.start()
    engine = build_engine(settings)
    log.info("engine_chosen", engine=type(engine).__name__, model=settings.model_name,
             setting=settings.engine)
    worker = InferenceWorker(settings, engine)
    lag = LagReporter(settings, group_id_for(settings, settings.model_name))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    beat = asyncio.create_task(_beat(health, worker), name="health-beat")
    try:
        await worker.start()
        await lag.start()
        health.set_ready(True, f"model {settings.model_name} loaded, consuming")
        await stop.wait()
        log.info("stop_signal", worker_id=worker.worker_id, inflight=worker.inflight)
        health.set_ready(False, "draining")
    finally:
        await lag.stop()
        await worker.stop()
        beat.cancel()
        await asyncio.gather(beat, return_exceptions=True)
        if server:
            server.stop()
