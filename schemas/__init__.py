"""The bus contract: every event chatbus puts on Kafka, the topics, their keys and versions."""

from schemas.events import (
    SCHEMA_VERSION,
    CancelRequest,
    ChatMessage,
    ChatRequest,
    Completion,
    DeadLetter,
    ErrorInfo,
    Event,
    FinishReason,
    ModerationVerdict,
    ReplyTo,
    SamplingParams,
    Timings,
    TokenChunk,
    Usage,
    parse_event,
)
from schemas.topics import TOPICS, Topic, TopicName, topic

__all__ = [
    "SCHEMA_VERSION",
    "TOPICS",
    "CancelRequest",
    "ChatMessage",
    "ChatRequest",
    "Completion",
    "DeadLetter",
    "ErrorInfo",
    "Event",
    "FinishReason",
    "ModerationVerdict",
    "ReplyTo",
    "SamplingParams",
    "Timings",
    "TokenChunk",
    "Topic",
    "TopicName",
    "Usage",
    "parse_event",
    "topic",
]
