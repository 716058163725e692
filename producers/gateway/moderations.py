"""``POST /v1/moderations`` in OpenAI's shape, judged by the processors' classifier.

A client checks text before sending it (or an answer before showing it) and gets the decision
chat moderation would make: the gateway checks the request, forwards the texts to the
processors (:mod:`schemas.moderation_check`, ``CHATBUS_MODERATION_SERVICE_URL``), whose loaded
classifier, per-category thresholds and parent-category rule are the ones that moderate chat
requests on the bus, and answers with OpenAI's moderation object: one result per input, with
``flagged``, ``categories``, ``category_scores`` and ``category_applied_input_types``.

``input`` is a string, a list of strings, or a list of ``{"type": "text", "text": ...}`` parts;
an image part is refused with a 400 naming it. ``model`` may be left out or name OpenAI's
moderation models (clients default to them); the answer names the classifier that judged.
Admission is chat's: the same keys and requests-per-minute limit.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict

from producers.gateway.errors import APIError, invalid, unsupported
from producers.gateway.routes import admit, runtime_of
from schemas.moderation_check import (
    MAX_TEXT_CHARS,
    MAX_TEXTS,
    ModerationCheckResult,
)

router = APIRouter()

#: What clients send as ``model`` (OpenAI's names); answered by our one classifier.
ACCEPTED_MODELS = frozenset(
    {"omni-moderation-latest", "omni-moderation-2024-09-26", "text-moderation-latest",
     "text-moderation-stable", "chatbus-moderation"}
)  # fmt: skip


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[Any]
    model: str | None = None


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[Literal["text"]]]


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]


def texts_of(body: ModerationRequest) -> list[str]:
    """The texts to judge; a 400 naming the first input that is not one."""
    if body.model is not None and body.model not in ACCEPTED_MODELS:
        raise APIError(
            404,
            f"The moderation model '{body.model}' is not served here; leave 'model' out, or use "
            "'omni-moderation-latest' (both mean chatbus's moderation classifier).",
            param="model",
            code="model_not_found",
        )
    items = [body.input] if isinstance(body.input, str) else body.input
    if not items:
        raise invalid("'input' must hold at least one text.", "input", "empty_input")
    if len(items) > MAX_TEXTS:
        raise invalid(
            f"{len(items)} inputs are more than the {MAX_TEXTS} one request may carry.",
            "input",
            "too_many_inputs",
        )
    texts = []
    for i, item in enumerate(items):
        if (
            isinstance(item, dict)
            and item.get("type") == "text"
            and isinstance(item.get("text"), str)
        ):
            item = item["text"]
        elif isinstance(item, dict) and item.get("type") == "image_url":
            raise unsupported(f"input.{i}", "Moderating images")
        if not isinstance(item, str):
            raise invalid(
                f"input.{i} must be a string or a {{'type': 'text', 'text': ...}} part.",
                f"input.{i}",
                "invalid_input",
            )
        if len(item) > MAX_TEXT_CHARS:
            raise invalid(
                f"input.{i} is longer than the {MAX_TEXT_CHARS} characters one text may be.",
                f"input.{i}",
                "input_too_long",
            )
        texts.append(item)
    return texts


def openai_response(result: ModerationCheckResult) -> ModerationResponse:
    return ModerationResponse(
        id=f"modr-{secrets.token_hex(12)}",
        model=f"chatbus-moderation-{result.classifier}",
        results=[
            ModerationResult(
                flagged=judged.flagged,
                categories=judged.categories,
                category_scores=judged.category_scores,
                category_applied_input_types={
                    c: ["text"] for c, score in judged.category_scores.items() if score > 0
                },
            )
            for judged in result.results
        ],
    )


@router.post("/v1/moderations")
async def create_moderation(request: Request) -> ModerationResponse:
    admitted = await admit(request)
    body = await admitted.read(ModerationRequest)
    texts = texts_of(body)
    return openai_response(await runtime_of(request).moderation.check(texts))
