"""``POST /v1/feedback``: a user rates one of their own answers up or down.

The body names the answer by any of its ids (``chatcmpl-…``, ``resp_…`` or ``req-…``), the
rating, and optionally a category and a comment. The gateway checks, in the history store, that
the answer is the caller's and has been recorded, then publishes a
:class:`~schemas.events.Rating` on ``chat.feedback`` (with the model that answered, from the
turn): the history agent stores it with the turn, the archive keeps it, the analytics report
shows rates by model and over time, and the Spark ``dataset`` job takes up-rated answers into
the fine-tuning set. A second rating of the same answer replaces the first.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producers.gateway.appeals import ANSWER_ID_PATTERN, request_id_of
from producers.gateway.errors import APIError, from_validation
from producers.gateway.routes import admit
from schemas.events import Rating, RatingCategory

router = APIRouter()


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        min_length=1,
        max_length=140,
        pattern=ANSWER_ID_PATTERN,
        description="The answer rated: its chat completion, response or request id.",
    )
    rating: Literal["up", "down"]
    category: RatingCategory | None = Field(
        None, description="What was good or wrong about the answer."
    )
    comment: str = Field("", max_length=2000, description="The user's words, if any.")


class FeedbackReceived(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    request_id: str
    rating: Literal["up", "down"]
    category: RatingCategory | None = None
    model: str
    status: Literal["received"] = "received"


@router.post("/v1/feedback")
async def create_feedback(request: Request) -> FeedbackReceived:
    admitted = await admit(request)  # authenticated, and counted like any request
    runtime, principal = admitted.runtime, admitted.principal
    try:
        body = FeedbackRequest.model_validate_json(await request.body() or b"{}")
    except ValidationError as exc:
        raise from_validation(exc) from None
    request_id = request_id_of(body.id)
    answer = await runtime.conversations.answer(principal.user, request_id)
    if answer is None:
        raise APIError(
            404,
            f"No answer of yours found with id '{body.id}' (only your own answers can be rated; "
            "an answer of the last seconds may not be recorded yet: retry shortly).",
            param="id",
            code="answer_not_found",
        )
    rating = Rating(
        request_id=request_id,
        conversation_id=answer.conversation_id,
        user_id=principal.user,
        model=answer.model,
        rating=body.rating,
        category=body.category,
        comment=body.comment,
    )
    await runtime.bus.publish_feedback(rating)
    return FeedbackReceived(
        id=rating.event_id,
        request_id=request_id,
        rating=rating.rating,
        category=rating.category,
        model=answer.model,
    )
