"""A Responses request in chatbus's terms: refuse what is not served, turn ``input`` into chat.

``instructions`` become a system message before the input; ``input`` (a string, or a list of
messages whose content is a string or ``input_text`` parts; an assistant message may carry
``output_text`` parts, as clients replaying a transcript send it) becomes the bus's
:class:`~schemas.events.ChatMessage` list. Everything refused is a 400 naming the parameter, down
to the input item and its part: ``tools``, a ``tool_choice`` that asks for tools, a service tier,
log probabilities or a ``text.verbosity`` other than the default (the client hints both APIs
share, :mod:`~producers.gateway.client_hints`), a ``text.format`` other than plain text,
``reasoning``, ``include``, non-message items and non-text parts. Nothing is
dropped silently; what clients send that asks for nothing (``tools: []``, ``tool_choice:
"auto"``, ``include: []``, ``truncation: "disabled"``, ``store``, ``metadata``, prompt-cache
hints, ``safety_identifier``) is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from producers.gateway.client_hints import refuse_unserved, refuse_verbosity
from producers.gateway.errors import APIError, invalid, unsupported
from producers.gateway.protocol import ChatCompletionRequest, RequestMessage
from producers.gateway.responses.protocol import (
    InputItem,
    InputMessage,
    InputText,
    OutputMessage,
    OutputText,
    ResponseCreateRequest,
)

_ROLES = ("user", "assistant", "system", "developer")
_TEXT_PARTS = {"user": "input_text", "system": "input_text", "developer": "input_text"}


def check_supported(body: ResponseCreateRequest) -> None:
    """Refuse (400, naming it) every parameter chatbus would otherwise have to ignore."""
    refuse_unserved(body)
    if body.text is not None and body.text.format is not None and body.text.format.type != "text":
        raise unsupported("text.format", f"The text format '{body.text.format.type}'")
    refuse_verbosity(None if body.text is None else body.text.verbosity, "text.verbosity")
    if body.reasoning and any(value is not None for value in body.reasoning.values()):
        raise unsupported("reasoning", "Reasoning configuration ('reasoning')")
    if body.include:
        raise unsupported("include", "Including extra output data ('include')")
    if body.previous_response_id is not None and body.conversation is not None:
        raise invalid(
            "Send either 'previous_response_id' or 'conversation', not both.",
            "previous_response_id",
            "mutually_exclusive",
        )


@dataclass(frozen=True)
class TranslatedInput:
    """The request's messages as chat completions would carry them, and its input turns."""

    messages: list[RequestMessage]
    turns: list[tuple[str, str]]  # (role, text) of each input message, instructions apart

    def items(self, prefix: str) -> list[InputItem]:
        """The input as ``input_items`` lists it, ids ``<prefix>_<n>``."""
        return [_item(f"{prefix}_{i}", role, text) for i, (role, text) in enumerate(self.turns)]


def translate_input(body: ResponseCreateRequest) -> TranslatedInput:
    """``instructions`` + ``input`` as chat messages (400 naming what is not served)."""
    turns: list[tuple[str, str]] = []
    if isinstance(body.input, str):
        turns.append(("user", body.input))
    else:
        if not body.input:
            raise invalid("'input' must hold at least one message.", "input", "empty_input")
        turns.extend(_message(item, f"input.{i}") for i, item in enumerate(body.input))
    pairs = turns if body.instructions is None else [("system", body.instructions), *turns]
    messages = [RequestMessage.model_validate({"role": r, "content": t}) for r, t in pairs]
    return TranslatedInput(messages, turns)


def _message(item: Any, param: str) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise invalid(f"'{param}' must be a message object.", param, "invalid_type")
    kind = item.get("type", "message")
    if kind != "message":
        raise unsupported(f"{param}.type", f"An input item of type '{kind}'")
    role = item.get("role")
    if role not in _ROLES:
        raise invalid(
            f"'{param}.role' must be one of {', '.join(_ROLES)}.", f"{param}.role", "invalid_value"
        )
    content = item.get("content")
    if isinstance(content, str):
        return role, content
    if not isinstance(content, list):
        raise invalid(
            f"'{param}.content' must be a string or a list of text parts.",
            f"{param}.content",
            "invalid_type",
        )
    wanted = _TEXT_PARTS.get(role, "output_text")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != wanted or not isinstance(part.get("text"), str):
            raise unsupported(
                f"{param}.content.{j}",
                f"A '{kind}' content part in a {role} message (only '{wanted}')",
            )
        texts.append(part["text"])
    return role, "".join(texts)


def _item(item_id: str, role: str, text: str) -> InputItem:
    if role == "assistant":
        return OutputMessage(id=item_id, status="completed", content=[OutputText(text=text)])
    return InputMessage.model_validate(
        {"id": item_id, "role": role, "content": [InputText(text=text)]}
    )


def chat_request(
    body: ResponseCreateRequest, messages: list[RequestMessage]
) -> ChatCompletionRequest:
    """The chat completion the response is served as (same model, sampling and limits)."""
    return ChatCompletionRequest(
        model=body.model,
        messages=messages,
        temperature=body.temperature,
        top_p=body.top_p,
        max_completion_tokens=body.max_output_tokens,
        user=body.user,
    )


_MESSAGE_PARAM = re.compile(r"^messages\.(\d+)(.*)$")


def rename_param(error: APIError, body: ResponseCreateRequest) -> APIError:
    """``error`` (raised judging the chat request) naming the Responses parameter instead."""
    old = error.body.error.param
    if old is None:
        return error
    new = old
    if old == "max_completion_tokens":
        new = "max_output_tokens"
    elif old == "messages":
        new = "input"
    elif (found := _MESSAGE_PARAM.match(old)) is not None:
        index = int(found[1]) - (body.instructions is not None)
        if index < 0:
            new = "instructions"
        elif isinstance(body.input, str):
            new = "input"
        else:
            new = f"input.{index}{found[2]}"
    error.body.error.param = new
    error.body.error.message = error.body.error.message.replace(f"'{old}'", f"'{new}'")
    return error
