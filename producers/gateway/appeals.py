"""``POST /v1/appeals``: a user marks a moderation refusal of their own request as wrong.

The body names the refused request by any of its ids (``chatcmpl-…``, ``resp_…`` or ``req-…``)
and may say why. The gateway checks, in the history store, that the request is the caller's
and was refused (blocked on input, or its answer stopped), then publishes an
:class:`~schemas.events.Appeal` on ``chat.feedback``: the history agent stores it with the turn,
the archive keeps it, and the analytics report's moderation section counts appeals and samples
the appealed texts for review. A second appeal of the same request replaces the first.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producers.gateway.errors import APIError, from_validation
from producers.gateway.routes import admit
from schemas.events import Appeal

router = APIRouter()

# A chat completion, a response or a request: all name one request (see request_id_of).
ANSWER_ID_PATTERN = r"^(chatcmpl-|resp_|req-)[A-Za-z0-9]+$"


class AppealRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1,
        max_length=140,
        pattern=ANSWER_ID_PATTERN,
        description="The refused chat completion, response or request.",
    )
    comment: str = Field("", max_length=2000, description="Why the refusal was wrong.")


class AppealReceived(BaseModel):
    id: str
    object: Literal["appeal"] = "appeal"
    request_id: str
    stage: Literal["input", "output"]
    categories: list[str]
    status: Literal["received"] = "received"


def request_id_of(any_id: str) -> str:
    """``chatcmpl-<hex>``, ``resp_<hex>`` and ``req-<hex>`` all name request ``req-<hex>``."""
    for prefix in ("chatcmpl-", "resp_", "req-"):
        if any_id.startswith(prefix):
            return "req-" + any_id.removeprefix(prefix)
    return any_id


@router.post("/v1/appeals")
async def create_appeal(request: Request) -> AppealReceived:
    admitted = await admit(request)  # authenticated, and counted like any request
    runtime, principal = admitted.runtime, admitted.principal
    try:
        body = AppealRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise from_validation(exc) from None
    request_id = request_id_of(body.id)
    refusal = await runtime.conversations.refusal(principal.user, request_id)
    if refusal is None:
        raise APIError(
            404,
            f"No refused request of yours found with id '{body.id}' (an answer that was not "
            "refused cannot be appealed; a refusal of the last seconds may not be recorded yet: "
            "retry shortly).",
            param="id",
            code="refusal_not_found",
        )
    appeal = Appeal(
        request_id=request_id,
        conversation_id=refusal.conversation_id,
        user_id=principal.user,
        stage=refusal.stage,
        categories=refusal.categories,
        comment=body.comment,
    )
    await runtime.bus.publish_feedback(appeal)
    return AppealReceived(
        id=appeal.event_id,
        request_id=request_id,
        stage=refusal.stage,
        categories=refusal.categories,
    )
