"""OpenAI's Responses wire format: the request we accept, the response object, its parts.

The request model accepts every parameter chatbus honours and, so that a refusal can name it,
the ones it does not honour yet (``tools``, ``reasoning``, ``background``...):
:func:`~producers.gateway.responses.translate.check_supported` refuses those with a 400. Anything
else unknown is refused by ``extra="forbid"``. ``input`` stays loosely typed here, its items are
checked one by one in :mod:`~producers.gateway.responses.translate` so an error names
``input.2.content.0`` rather than a union pydantic could not pick a branch of.

Ids: a response is ``resp_<hex>`` where ``req-<hex>`` is its request on the bus, its output
message ``msg_<hex>``: one response id maps to exactly one bus request id and back.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from producers.gateway.protocol import DEFAULT_VERBOSITY, ClientHints, UsageInfo

ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]
ItemStatus = Literal["in_progress", "completed", "incomplete"]

_ID_CHARS = r"[A-Za-z0-9_.:\-]"
_RESPONSE_ID = re.compile(r"^resp_([0-9a-f]{32})$")
_REQUEST_PREFIX = "req-"


def response_id(request_id: str) -> str:
    """The response id of bus request ``request_id`` (``req-<hex>`` → ``resp_<hex>``)."""
    return "resp_" + request_id.removeprefix(_REQUEST_PREFIX)


def request_id_of(response_id: str) -> str | None:
    """The bus request id of ``response_id``; None when it is not one of ours."""
    found = _RESPONSE_ID.match(response_id)
    return None if found is None else _REQUEST_PREFIX + found[1]


def message_id(request_id: str) -> str:
    """The id of the response's one output message."""
    return "msg_" + request_id.removeprefix(_REQUEST_PREFIX)


# --- the request ----------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")  # a json_schema format's fields: refused by type

    type: str


class TextConfig(_Strict):
    format: TextFormat | None = None
    verbosity: str | None = None  # only the default, "medium", is served


class ConversationRef(_Strict):
    id: str = Field(min_length=1, max_length=128, pattern=rf"^{_ID_CHARS}+$")


class ResponseCreateRequest(ClientHints):
    """``POST /v1/responses``: what chatbus serves, what it names when refusing, and the client
    hints both APIs accept (:class:`~producers.gateway.protocol.ClientHints`)."""

    model: str = Field(min_length=1, max_length=256)
    input: str | list[Any]
    instructions: str | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    store: bool = True
    stream: bool = False
    previous_response_id: str | None = Field(None, min_length=1, max_length=128)
    conversation: str | ConversationRef | None = Field(
        None, description="continue this chatbus conversation (an id or {'id': ...})"
    )
    user: str | None = Field(None, max_length=256)
    # accepted only while they ask for nothing chatbus would have to ignore
    text: TextConfig | None = None
    reasoning: dict[str, Any] | None = None
    background: bool | None = None
    include: list[str] | None = None
    truncation: Literal["disabled"] | None = None

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation


# --- the response ---------------------------------------------------------------------------
class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[Any] = Field(default_factory=list)


class InputText(BaseModel):
    type: Literal["input_text"] = "input_text"
    text: str


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class InputMessage(BaseModel):
    """One input item as ``GET /v1/responses/{id}/input_items`` lists it."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer"]
    status: ItemStatus = "completed"
    content: list[InputText]


InputItem = InputMessage | OutputMessage  # an assistant turn sent as input lists as output


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int

    @classmethod
    def of(cls, usage: UsageInfo) -> ResponseUsage:
        return cls(
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            total_tokens=usage.total_tokens,
        )


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(BaseModel):
    """OpenAI's ``response`` object (what ``openai.types.responses.Response`` parses)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: ResponseStatus
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputMessage] = Field(default_factory=list)
    parallel_tool_calls: bool = False
    previous_response_id: str | None = None
    conversation: ConversationRef | None = None
    background: bool = False
    store: bool = True
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int = 0
    text: dict[str, Any] = Field(
        default_factory=lambda: {"format": {"type": "text"}, "verbosity": DEFAULT_VERBOSITY}
    )
    reasoning: dict[str, Any] = Field(default_factory=lambda: {"effort": None, "summary": None})
    tool_choice: str = "none"
    tools: list[Any] = Field(default_factory=list)
    truncation: Literal["disabled"] = "disabled"
    service_tier: Literal["default"] = "default"
    prompt_cache_key: str | None = None
    prompt_cache_retention: Literal["in_memory", "24h"] | None = None
    safety_identifier: str | None = None
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[InputItem]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False
