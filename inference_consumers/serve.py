"""Run one inference worker process until SIGTERM/SIGINT (then drain and leave the group)."""

from __future__ import annotations

from chatbus.errors import ConfigurationError
from chatbus.gpu import gpu_driver_present
from chatbus.health import Health, PostHandler
from chatbus.kafka.serve import serve
from chatbus.logging import get_logger
from chatbus.settings import Settings
from inference_consumers import threads_route
from inference_consumers.engine import InferenceEngine
from inference_consumers.worker import InferenceWorker

log = get_logger(__name__)


def engine_kind(settings: Settings) -> str:
    """Which engine serves the configured model: ``settings.model.engine``, or for ``auto``
    llama.cpp on a machine without CUDA when the model has a GGUF and llama-cpp-python is
    installed."""
    if settings.model.engine != "auto":
        return settings.model.engine
    from inference_consumers.engine.llama_cpp_engine import find_gguf, llama_cpp_available

    if (
        settings.model.device.startswith("cuda")
        or find_gguf(settings.resolved_model_path) is None
        or not llama_cpp_available()
    ):
        return "transformers"
    if settings.model.device == "auto" and gpu_driver_present():
        import torch  # 5 s of CPU: only where a GPU may be there to find

        if torch.cuda.is_available():
            return "transformers"
    return "llama.cpp"


def build_engine(settings: Settings) -> InferenceEngine:
    """The real engine for the configured model path."""
    path = settings.resolved_model_path
    kind = engine_kind(settings)
    if kind == "llama.cpp":
        from inference_consumers.engine.llama_cpp_engine import LlamaCppEngine

        return LlamaCppEngine(
            path,
            model_name=settings.model.name,
            max_batch=settings.worker.max_inflight,
            n_threads=settings.model.engine_threads or None,
        )
    if not (path / "config.json").exists():
        raise ConfigurationError(
            f"no model at {path}: build the models with `make model`, or set "
            "CHATBUS_MODEL_PATH to a Hugging Face causal LM folder"
        )
    from inference_consumers.engine.transformers_engine import TransformersEngine

    return TransformersEngine(
        path,
        model_name=settings.model.name,
        device=settings.model.device,
        max_batch=settings.worker.max_inflight,
        sampling=settings.model.engine_sampling,
        threads=settings.model.engine_threads or None,
    )


def build_worker(
    settings: Settings, health: Health, routes: dict[str, PostHandler] | None = None
) -> InferenceWorker:
    """The worker of the configured model, on its engine, reporting to ``health``; its engine's
    thread count is resized through ``routes`` (:mod:`inference_consumers.threads_route`)."""
    engine = build_engine(settings)
    if routes is not None:
        routes[threads_route.PATH] = threads_route.threads_handler(engine)
    log.info(
        "engine_chosen",
        engine=type(engine).__name__,
        model=settings.model.name,
        setting=settings.model.engine,
    )
    return InferenceWorker(settings, engine, health=health)


async def run_worker(settings: Settings) -> None:
    routes: dict[str, PostHandler] = {}
    await serve(
        settings,
        "worker",
        lambda health: build_worker(settings, health, routes),
        ready=f"model {settings.model.name} loaded, consuming",
        routes=routes,
    )
