"""Run one inference worker process until SIGTERM/SIGINT (then drain and leave the group)."""

from __future__ import annotations

import asyncio
import signal

from prometheus_client import start_http_server

from chatbus.errors import ConfigurationError
from chatbus.logging import get_logger
from chatbus.settings import Settings
from inference_consumers.engine import InferenceEngine
from inference_consumers.worker import InferenceWorker

log = get_logger(__name__)


def build_engine(settings: Settings) -> InferenceEngine:
    """The real engine for the configured model path."""
    path = settings.resolved_model_path
    if not (path / "config.json").exists():
        raise ConfigurationError(
            f"no model at {path}: build the demo model with `make model`, or set "
            "CHATBUS_MODEL_PATH to a Hugging Face causal LM folder")
    from inference_consumers.engine.transformers_engine import TransformersEngine

    return TransformersEngine(path, model_name=settings.model_name, device=settings.device,
                              max_batch=settings.max_inflight, sampling=settings.engine_sampling)


async def run_worker(settings: Settings) -> None:
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    worker = InferenceWorker(settings, build_engine(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await worker.start()
    try:
        await stop.wait()
        log.info("stop_signal", worker_id=worker.worker_id, inflight=worker.inflight)
    finally:
        await worker.stop()
