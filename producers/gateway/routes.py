"""The gateway's HTTP routes: thin, they authenticate, limit, parse and hand over to serving."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection

from chatbus.api_keys import Principal
from chatbus.tracing import TRACEPARENT_HEADER, RequestTrace
from producers.gateway.admission import Limits, authenticate
from producers.gateway.conversations import set_conversation_header
from producers.gateway.errors import APIError, from_validation
from producers.gateway.middleware import RECEIVED_MS_STATE, REQUEST_ID_STATE
from producers.gateway.protocol import ChatCompletionRequest, ModelCard, ModelList
from producers.gateway.runtime import GatewayRuntime
from producers.gateway.serving import Answer, ValidRequest

router = APIRouter()
Body = TypeVar("Body", bound=BaseModel)
_STARTED = int(time.time())


def runtime_of(request: HTTPConnection) -> GatewayRuntime:
    runtime: GatewayRuntime = request.app.state.gateway
    return runtime


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) once it grows past ``limit`` (chunked uploads included)."""
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise APIError(
                413,
                f"The request body is more than the {limit} bytes allowed "
                "(CHATBUS_GATEWAY_MAX_BODY_BYTES).",
                code="request_too_large",
            )
    return bytes(body)


def parse_json(raw: bytes, model: type[Body]) -> Body:
    """``raw`` as ``model``; a 400 naming the first bad parameter otherwise."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise APIError(
                400, "The request body is not valid JSON.", code="invalid_json"
            ) from None
        raise from_validation(exc) from None


def parse_request(raw: bytes) -> ChatCompletionRequest:
    return parse_json(raw, ChatCompletionRequest)


@dataclass(frozen=True)
class Admitted:
    """A request past authentication and the requests-per-minute limit (an HTTP request, or one
    ``response.create`` on a WebSocket, whose handshake was authenticated)."""

    request: HTTPConnection
    runtime: GatewayRuntime
    principal: Principal
    limits: Limits
    trace: RequestTrace

    async def read(self, model: type[Body]) -> Body:
        assert isinstance(self.request, Request), "a WebSocket's messages are read by its handler"
        raw = await read_body(self.request, self.runtime.settings.gateway.max_body_bytes)
        return parse_json(raw, model)

    async def submit(
        self,
        valid: ValidRequest,
        conversation_id: str | None,
        on_sent: Callable[[str], None] | None = None,
    ) -> Answer:
        """Open (or continue) the conversation, reserve tokens, put ``valid`` on the bus and
        wait for its first chunk; the answer names its conversation in ``x-conversation-id``.
        ``on_sent`` learns the request id once the request is on the bus."""
        runtime, request = self.runtime, self.request
        service = runtime.service
        prompt_tokens = await service.count_prompt(valid)
        conversation = await runtime.conversations.open(
            self.principal.user, conversation_id, valid.messages
        )
        set_conversation_header(request, conversation.id)
        reservation = await self.limits.reserve_tokens(prompt_tokens + valid.max_tokens)

        def sent(request_id: str) -> None:
            setattr(request.state, REQUEST_ID_STATE, request_id)
            if on_sent is not None:
                on_sent(request_id)

        return await service.submit(
            valid,
            user_id=self.principal.user,
            key_id=self.principal.key_id,
            prompt_tokens=prompt_tokens,
            on_usage=reservation.settle,
            on_sent=sent,
            conversation_id=conversation.id,
            use_history=conversation.continued,
            trace=self.trace,
        )


async def admit(request: Request) -> Admitted:
    """Authenticate and count the request; the trace starts when it arrived, continuing the
    caller's traceparent if valid."""
    trace = RequestTrace.begin(
        request.headers.get(TRACEPARENT_HEADER),
        received_ms=getattr(request.state, RECEIVED_MS_STATE, None),
    )
    principal = await authenticate(request, runtime_of(request).keys)
    return await admit_as(request, principal, trace)


async def admit_as(
    connection: HTTPConnection, principal: Principal, trace: RequestTrace
) -> Admitted:
    """Count one request of ``principal``, already authenticated (each ``response.create`` on a
    WebSocket counts like one ``POST``)."""
    runtime = runtime_of(connection)
    limits = Limits(runtime.limiter, principal, connection, runtime.budgets)
    await limits.admit_request()
    return Admitted(connection, runtime, principal, limits, trace)


def event_stream(events: AsyncIterator[str]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@router.post("/v1/chat/completions")
async def create_chat_completion(request: Request) -> Response:
    admitted = await admit(request)
    body = await admitted.read(ChatCompletionRequest)
    service = admitted.runtime.service
    answer = await admitted.submit(service.validate(body), body.conversation_id)
    if body.stream:
        return event_stream(service.stream(answer))
    completion = await service.complete(answer)
    return JSONResponse(completion.model_dump(mode="json"))


@router.get("/v1/chat/completions/{completion_id}/stream")
async def resume_chat_completion(
    request: Request, completion_id: str, starting_after: int | None = None
) -> Response:
    """Resume a streamed chat completion (``chatcmpl-…``, or its request id ``req-…``): every
    event after number ``starting_after`` (the ``id`` of the last event the client has; also
    read from the ``Last-Event-ID`` header), then the live stream, on any gateway."""
    runtime = runtime_of(request)
    principal = await authenticate(request, runtime.keys)
    after = starting_after if starting_after is not None else last_event_id(request)
    request_id = "req-" + completion_id.removeprefix("chatcmpl-").removeprefix("req-")
    service = runtime.service
    answer = await service.replay(await service.origin(principal.user, request_id))
    return event_stream(service.stream(answer, starting_after=after))


def last_event_id(request: Request) -> int:
    """The ``Last-Event-ID`` header as a number (-1 when absent: replay from the start)."""
    raw = request.headers.get("last-event-id")
    if raw is None or raw.strip() == "":
        return -1
    try:
        return int(raw)
    except ValueError:
        raise APIError(
            400,
            f"Last-Event-ID must be the number of an event of the stream, got {raw!r}.",
            param="Last-Event-ID",
            code="invalid_last_event_id",
        ) from None


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    runtime = runtime_of(request)
    await authenticate(request, runtime.keys)
    return ModelList(
        data=[ModelCard(id=name, created=_STARTED) for name in await runtime.models.live()]
    )


@router.get("/livez")
async def livez() -> JSONResponse:
    """Answering at all means the event loop runs."""
    return JSONResponse({"component": "gateway", "status": "ok"})


@router.get("/health")
@router.get("/readyz")
async def health(request: Request) -> JSONResponse:
    """Ready while this gateway holds the lease on its reply partition."""
    runtime = runtime_of(request)
    lease = runtime.lease
    healthy = lease.partition is not None and not lease.lost
    return JSONResponse(
        {
            "status": "ok" if healthy else "degraded",
            "reply_partition": lease.partition,
            "owner": lease.owner,
        },
        status_code=200 if healthy else 503,
    )


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
