"""Engines: the interface the worker depends on, and its implementations."""

from inference_consumers.engine.base import (
    EngineError,
    GenerationRequest,
    InferenceEngine,
    TokenEvent,
)

__all__ = ["EngineError", "GenerationRequest", "InferenceEngine", "TokenEvent"]
