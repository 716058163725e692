"""Pydantic v2 models of every event on the bus.

Each event is a JSON object with an envelope (``type``, ``schema_version``, ``event_id``,
``created_at``) and its own fields. Producers build these models, consumers validate with
:func:`parse_event`; a message that does not validate goes to ``chat.dlq`` with the reason.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

SCHEMA_VERSION: Literal[1] = 1

FinishReason = Literal["stop", "length", "cancelled", "content_filter", "error"]
Role = Literal["system", "user", "assistant"]
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]


def new_id(prefix: str) -> str:
    """A fresh unique id such as ``req-2f0c…``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Envelope(_Model):
    """Fields every event carries."""

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: Id = Field(default_factory=lambda: new_id("evt"))
    created_at: datetime = Field(default_factory=utcnow)


class ReplyTo(_Model):
    """Where the requester reads its token stream: one partition of a token topic."""

    topic: str = "chat.tokens"
    partition: int = Field(ge=0)


class SamplingParams(_Model):
    """How to sample. ``temperature=0`` is greedy decoding."""

    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=32768, description="None: the worker's default")
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=4
    )
    seed: int | None = Field(None, ge=0, le=2**63 - 1)


class ChatMessage(_Model):
    role: Role
    content: str = Field(max_length=200_000)


class ChatRequest(Envelope):
    """A client asks for an answer (topic ``chat.requests``, key ``conversation_id``)."""

    type: Literal["chat.request"] = "chat.request"
    request_id: Id = Field(default_factory=lambda: new_id("req"))
    conversation_id: Id = Field(default_factory=lambda: new_id("conv"))
    user_id: Id = "anonymous"
    key_id: Annotated[str, Field(max_length=128)] = Field(
        "", description="The API key the request came with (the usage ledger counts by it)."
    )
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=512)
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    reply_to: ReplyTo
    use_history: bool = Field(
        False,
        description="Continue the conversation: the worker prepends its stored context "
        "(earlier turns) to ``messages``, which then carry only the new message(s).",
    )


class ErrorInfo(_Model):
    """Why a request failed, in terms a client can act on."""

    code: str = Field(description="Machine-readable, e.g. 'invalid_parameter', 'model_not_found'.")
    message: str
    param: str | None = None


class Usage(_Model):
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    total_tokens: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _total_is_sum(self) -> Usage:
        if self.total_tokens != self.prompt_tokens + self.completion_tokens:
            raise ValueError("total_tokens must equal prompt_tokens + completion_tokens")
        return self


class TokenChunk(Envelope):
    """Some tokens of one answer (topic ``chat.tokens``, key ``request_id``).

    ``seq`` starts at 0 and increases by one per chunk of a request; consumers drop a chunk whose
    (request_id, seq) they have seen. The last chunk of a stream has ``finish_reason`` set.
    """

    type: Literal["chat.token"] = "chat.token"
    request_id: Id
    conversation_id: Id
    seq: int = Field(ge=0)
    text: str = ""
    token_ids: list[int] = Field(default_factory=list)
    finish_reason: FinishReason | None = None
    error: ErrorInfo | None = None
    usage: Usage | None = Field(None, description="On the last chunk: the request's usage.")
    worker_id: str = ""

    @property
    def is_last(self) -> bool:
        return self.finish_reason is not None


class Timings(_Model):
    """Per-stage timings of one request, in milliseconds."""

    queue_wait_ms: float = Field(0.0, ge=0)
    time_to_first_token_ms: float | None = Field(None, ge=0)
    inter_token_mean_ms: float | None = Field(None, ge=0)
    inter_token_p99_ms: float | None = Field(None, ge=0)
    total_ms: float = Field(0.0, ge=0)


class Completion(Envelope):
    """The whole answer (topic ``chat.completions``, key ``conversation_id``)."""

    type: Literal["chat.completion"] = "chat.completion"
    request_id: Id
    conversation_id: Id
    user_id: Id = "anonymous"
    key_id: Annotated[str, Field(max_length=128)] = Field(
        "", description="The request's API key, copied from it ('' when it had none)."
    )
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage = Field(default_factory=Usage)
    timings: Timings = Field(default_factory=Timings)
    worker_id: str = ""
    error: ErrorInfo | None = None


class CancelRequest(Envelope):
    """Stop a request wherever it runs (topic ``chat.control``, key ``request_id``)."""

    type: Literal["chat.cancel"] = "chat.cancel"
    request_id: Id
    reason: str = "client_cancelled"


class PiiSpan(_Model):
    """Personal data found in a message, to redact downstream (``text[start:end]``)."""

    kind: Literal["email", "phone", "payment_card"]
    message_index: int = Field(ge=0, description="Index of the message in the request.")
    start: int = Field(ge=0)
    end: int = Field(ge=0)


#: OpenAI's moderation taxonomy: the keys of a verdict's ``categories`` and ``category_scores``.
MODERATION_CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)


class ModerationVerdict(Envelope):
    """A moderation decision on a request or an answer (topic ``chat.moderation``)."""

    type: Literal["chat.moderation"] = "chat.moderation"
    request_id: Id
    conversation_id: Id
    user_id: Id = "anonymous"
    stage: Literal["input", "output"]
    flagged: bool
    categories: dict[str, bool] = Field(default_factory=dict)
    category_scores: dict[str, float] = Field(default_factory=dict)
    action: Literal["allow", "block", "stop_generation"] = "allow"
    pii: list[PiiSpan] = Field(
        default_factory=list, description="Personal data spans to redact downstream."
    )

    @field_validator("category_scores")
    @classmethod
    def _scores_are_probabilities(cls, value: dict[str, float]) -> dict[str, float]:
        for name, score in value.items():
            if not 0.0 <= score <= 1.0:
                raise ValueError(f"score of {name!r} must be within [0, 1], got {score}")
        return value


class Appeal(Envelope):
    """A user says a moderation refusal of their own request was wrong (topic ``chat.feedback``,
    key ``conversation_id``): stored with the turn, counted and sampled for review."""

    type: Literal["chat.appeal"] = "chat.appeal"
    request_id: Id
    conversation_id: Id
    user_id: Id
    stage: Literal["input", "output"] = Field(
        description="The refusal appealed: the request blocked, or the answer stopped."
    )
    categories: list[str] = Field(
        default_factory=list, description="What moderation flagged (from the stored verdict)."
    )
    comment: str = Field("", max_length=2000, description="The user's reason, if any.")


RatingCategory = Literal[
    "helpful", "accurate", "incorrect", "unhelpful", "harmful", "biased", "refused", "other"
]


class Rating(Envelope):
    """A user rates one of their own answers up or down (topic ``chat.feedback``, key
    ``conversation_id``): stored with the turn (a second rating replaces the first), archived,
    reported by model and over time, and the up-rated answers feed the fine-tuning set."""

    type: Literal["chat.rating"] = "chat.rating"
    request_id: Id
    conversation_id: Id
    user_id: Id
    model: str = Field("", max_length=256, description="The model that answered (from the turn).")
    rating: Literal["up", "down"]
    category: RatingCategory | None = Field(
        None, description="What was good or wrong about the answer, if the user said."
    )
    comment: str = Field("", max_length=2000, description="The user's words, if any.")


class DeadLetter(Envelope):
    """A message a consumer could not process (topic ``chat.dlq``, key = the original key)."""

    type: Literal["chat.dead_letter"] = "chat.dead_letter"
    original_topic: str
    original_partition: int = Field(ge=0)
    original_offset: int = Field(ge=0)
    original_key_b64: str | None = None
    original_value_b64: str
    error: str
    consumer: str


Event = Annotated[
    ChatRequest
    | TokenChunk
    | Completion
    | CancelRequest
    | ModerationVerdict
    | Appeal
    | Rating
    | DeadLetter,
    Field(discriminator="type"),
]
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)

ALL_EVENTS: tuple[type[Envelope], ...] = (
    ChatRequest,
    TokenChunk,
    Completion,
    CancelRequest,
    ModerationVerdict,
    Appeal,
    Rating,
    DeadLetter,
)


def parse_event(data: bytes | str) -> Event:
    """Validate a JSON message as one of the bus's events (raises ``pydantic.ValidationError``)."""
    return _EVENT_ADAPTER.validate_json(data)  # type: ignore[no-any-return]
