"""OpenAI's chat-completions wire format: the request we accept and the objects we return.

Only what chatbus can honour is accepted; an unknown or unsupported parameter is refused with a
400 naming it rather than silently ignored.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

OpenAIFinishReason = Literal["stop", "length", "content_filter"]
DEFAULT_VERBOSITY = "medium"  # OpenAI's default verbosity, the only one chatbus serves


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class RequestMessage(BaseModel):
    """One message as OpenAI clients send it (``name`` and other extras are ignored)."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ClientHints(_Strict):
    """What clients send beside the request proper: accepted here, and refused by
    :func:`~producers.gateway.client_hints.refuse_unserved` when a value asks for what chatbus
    does not serve. Both APIs' requests carry them."""

    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = Field(None, max_length=16)
    service_tier: str | None = None
    prompt_cache_key: str | None = Field(None, max_length=1024)
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    safety_identifier: str | None = Field(None, max_length=64)
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("metadata")
    @classmethod
    def _metadata_sizes(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if len(key) > 64 or len(item) > 512:
                raise ValueError("keys are at most 64 characters, values at most 512")
        return value


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatCompletionRequest(ClientHints):
    """``POST /v1/chat/completions``: the parameters chatbus supports, and the client hints."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[RequestMessage] = Field(min_length=1)
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=256)
    n: Literal[1] = 1
    logprobs: bool | None = None
    verbosity: str | None = None
    conversation_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="chatbus extension: continue this conversation (``messages`` then carry "
        "only the new message(s)); the openai SDK sends it with ``extra_body``.",
    )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    @property
    def max_tokens_param(self) -> str:
        """The name the client used for the token limit (errors name it)."""
        return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"


# --- responses ------------------------------------------------------------------------------
class UsageInfo(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: OpenAIFinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: UsageInfo
    system_fingerprint: str | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    logprobs: None = None
    finish_reason: OpenAIFinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    system_fingerprint: str | None = None
    usage: UsageInfo | None = None

    def sse(self, *, with_usage_field: bool) -> str:
        """This chunk as one SSE event; ``usage: null`` rides on content chunks when asked."""
        data = self.model_dump(mode="json")
        for choice in data["choices"]:
            choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
        if not with_usage_field:
            data.pop("usage")
        return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "chatbus"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


ErrorType = Annotated[str, Field(description="'invalid_request_error', 'requests', ...")]


class ErrorBody(BaseModel):
    message: str
    type: ErrorType
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


DONE_EVENT = "data: [DONE]\n\n"
