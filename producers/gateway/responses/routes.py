"""``/v1/responses`` over HTTP: thin routes on :class:`ResponsesService`.

``POST /v1/responses``                       create (``stream: true``: SSE events)
``GET /v1/responses/{id}``                   a stored response (``?stream=true``: its events
                                             again, then live: a stream resumed)
``DELETE /v1/responses/{id}``                forget it
``POST /v1/responses/{id}/cancel``           stop it on whichever worker holds it
``GET /v1/responses/{id}/input_items``       its input, as a list object
``WebSocket /v1/responses``                  OpenAI's WebSocket mode (:mod:`.websocket`)

Admission is chat's own (:func:`~producers.gateway.routes.admit`): the same keys, rate limits,
conversation claim, ``x-conversation-id`` header and trace.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from producers.gateway.admission import authenticate
from producers.gateway.responses.protocol import (
    InputItemList,
    ResponseCreateRequest,
    ResponseDeleted,
    ResponseObject,
)
from producers.gateway.responses.serving import ResponsesService
from producers.gateway.responses.websocket import responses_socket
from producers.gateway.routes import admit, event_stream, last_event_id, runtime_of

router = APIRouter()
router.add_api_websocket_route("/v1/responses", responses_socket)  # OpenAI's WebSocket mode


async def _caller(request: Request) -> tuple[ResponsesService, str]:
    runtime = runtime_of(request)
    principal = await authenticate(request, runtime.keys)
    return runtime.responses, principal.user


@router.post("/v1/responses")
async def create_response(request: Request) -> Response:
    admitted = await admit(request)
    body = await admitted.read(ResponseCreateRequest)
    responses = admitted.runtime.responses
    if body.background:
        queued = await responses.open_background(
            body, user_id=admitted.principal.user, submit=admitted.submit
        )
        if not body.stream:
            return JSONResponse(queued.model_dump(mode="json"))
        stream = await responses.resume(admitted.principal.user, queued.id)
        return event_stream(stream)
    run = await responses.open(body, user_id=admitted.principal.user, submit=admitted.submit)
    if body.stream:
        return event_stream(responses.stream(run))
    return JSONResponse((await responses.complete(run)).model_dump(mode="json"))


@router.get("/v1/responses/{response_id}", response_model=None)
async def retrieve_response(
    request: Request,
    response_id: str,
    stream: bool = False,
    starting_after: int | None = None,
) -> ResponseObject | Response:
    """The stored response; ``stream=true``: its events after ``starting_after`` (or the
    ``Last-Event-ID`` header), then the live ones: a stream resumed, on any gateway."""
    responses, user = await _caller(request)
    if not stream:
        return await responses.retrieve(user, response_id)
    after = starting_after if starting_after is not None else last_event_id(request)
    return event_stream(await responses.resume(user, response_id, starting_after=after))


@router.delete("/v1/responses/{response_id}")
async def delete_response(request: Request, response_id: str) -> ResponseDeleted:
    responses, user = await _caller(request)
    return await responses.delete(user, response_id)


@router.post("/v1/responses/{response_id}/cancel")
async def cancel_response(request: Request, response_id: str) -> ResponseObject:
    responses, user = await _caller(request)
    return await responses.cancel(user, response_id)


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(
    request: Request,
    response_id: str,
    limit: int = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> InputItemList:
    responses, user = await _caller(request)
    return await responses.input_items(user, response_id, limit=limit, order=order, after=after)
