"""OpenAI's WebSocket mode of the Responses API: a WebSocket on ``/v1/responses``.

The handshake carries the API key (``Authorization: Bearer``, as the SDK's
``responses.connect()`` sends it; a browser, which cannot set that header, offers the subprotocols
``chatbus.v1`` and ``bearer.<key>``, and the server picks ``chatbus.v1``); a bad key is refused
*before* the upgrade, as an HTTP 401 in OpenAI's error shape (the WebSocket Denial Response
extension; a server without it closes with 1008), so a peer that is not authenticated never
holds an open socket. Then the client sends
``{"type": "response.create", ...the POST /v1/responses body}`` messages (``stream`` is implicit
and ignored; ``background`` is refused) and gets back the very events of the SSE stream, each
as one text message of the same JSON: ``response.created`` … ``response.completed`` /
``incomplete`` / ``failed``, numbered from 0 per response (:class:`ResponsesService.stream`).

Several responses share a connection. As OpenAI's WebSocket mode does, creates run one at a
time in the order sent (a FIFO), per *lane*: an optional ``stream_id`` on ``response.create``
names the lane, and its events echo it; different lanes run concurrently. Each create is
admitted like one ``POST`` (requests and tokens per minute, usage settled at the end) and
``previous_response_id`` reads the stored response, so it works across responses, lanes and
connections.

A bad message (not JSON, an unknown ``type``, a body that fails validation) and a refusal
(rate limit, unknown model, ``previous_response_id`` not found) get one ``error`` event:
``{"type": "error", "status": 400, "error": {message, type, param, code[, headers]}}`` (with the
``stream_id`` when known); the connection and its other responses carry on. A client that goes
away cancels its unfinished responses on the bus, as an SSE disconnect does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

from chatbus.errors import ChatbusError
from chatbus.logging import get_logger
from chatbus.tracing import TRACEPARENT_HEADER, RequestTrace
from producers.gateway.admission import BROWSER_PROTOCOL, authenticate, browser_key
from producers.gateway.errors import APIError, from_chatbus, from_validation, invalid
from producers.gateway.responses.events import Encode
from producers.gateway.responses.protocol import ResponseCreateRequest
from producers.gateway.responses.serving import ResponseRun, ResponsesService
from producers.gateway.routes import admit_as, runtime_of

log = get_logger(__name__)

MAX_PENDING = 16  # responses queued or running on one connection, all lanes together
MAX_STREAM_ID = 128
_GONE = (WebSocketDisconnect, WebSocketDisconnected)

OpenRun = Callable[[ResponseCreateRequest], Awaitable[ResponseRun]]


def parse_create(raw: str | bytes, max_bytes: int) -> tuple[ResponseCreateRequest, str | None]:
    """A client message as a create body and its lane; :class:`ClientEventError` otherwise."""
    if len(raw) > max_bytes:
        raise ClientEventError(
            APIError(
                413,
                f"The message is more than the {max_bytes} bytes allowed "
                "(CHATBUS_GATEWAY_MAX_BODY_BYTES).",
                code="request_too_large",
            )
        )
    try:
        event = json.loads(raw)
    except ValueError:
        raise ClientEventError(
            APIError(400, "The message is not valid JSON.", code="invalid_json")
        ) from None
    if not isinstance(event, dict):
        raise ClientEventError(
            invalid("A client event is a JSON object with a 'type'.", None, "invalid_event")
        )
    lane = event.pop("stream_id", None)
    if lane is not None and (not isinstance(lane, str) or not 0 < len(lane) <= MAX_STREAM_ID):
        raise ClientEventError(
            invalid(
                f"Invalid value for 'stream_id': a string of 1 to {MAX_STREAM_ID} characters.",
                "stream_id",
                "invalid_value",
            )
        )
    kind = event.pop("type", None)
    if kind != "response.create":
        raise ClientEventError(
            invalid(
                f"Unsupported client event type {kind!r}: this server accepts "
                "'response.create' (the POST /v1/responses body).",
                "type",
                "unsupported_event_type",
            ),
            lane,
        )
    event.pop("stream", None)  # implicit over the WebSocket
    if event.get("background"):
        raise ClientEventError(
            invalid(
                "'background' is not supported over the WebSocket; use POST /v1/responses.",
                "background",
                "unsupported_parameter",
            ),
            lane,
        )
    try:
        return ResponseCreateRequest.model_validate(event), lane
    except ValidationError as exc:
        raise ClientEventError(from_validation(exc), lane) from None


class ClientEventError(Exception):
    """A client message refused: the error event it gets, on its lane."""

    def __init__(self, error: APIError, lane: str | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.lane = lane


def error_event(error: APIError, lane: str | None = None) -> str:
    """OpenAI's WebSocket ``error`` event for ``error``."""
    body: dict[str, Any] = error.body.error.model_dump(mode="json")
    if error.headers:
        body["headers"] = error.headers
    event: dict[str, Any] = {"type": "error", "status": error.status, "error": body}
    if lane is not None:
        event["stream_id"] = lane
    return json.dumps(event, separators=(",", ":"))


def _encoder(lane: str | None) -> Encode:
    def encode(event_type: str, data: dict[str, Any]) -> str:
        return json.dumps(
            data if lane is None else {**data, "stream_id": lane}, separators=(",", ":")
        )

    return encode


class ResponsesSocket:
    """One accepted connection: reads client events, runs each create on its lane in order,
    sends the events; :meth:`serve` returns when the client goes, its responses cancelled."""

    def __init__(
        self,
        websocket: WebSocket,
        responses: ResponsesService,
        open_run: OpenRun,
        *,
        max_bytes: int = 1 << 20,
    ) -> None:
        self._ws = websocket
        self._responses = responses
        self._open = open_run
        self._max_bytes = max_bytes
        self._lanes: dict[str | None, asyncio.Task[None]] = {}  # the last create of each lane
        self._tasks: set[asyncio.Task[None]] = set()
        self._sending = asyncio.Lock()

    async def serve(self) -> None:
        try:
            while True:
                message = await self._ws.receive()
                if message["type"] == "websocket.disconnect":
                    return
                raw = message.get("text")
                await self._on_message(raw if raw is not None else message.get("bytes") or b"")
        except _GONE:
            return
        finally:
            await self._stop()

    async def _on_message(self, raw: str | bytes) -> None:
        try:
            body, lane = parse_create(raw, self._max_bytes)
        except ClientEventError as exc:
            await self._send(error_event(exc.error, exc.lane))
            return
        if len(self._tasks) >= MAX_PENDING:
            refusal = APIError(
                429,
                f"{MAX_PENDING} responses are already queued or running on this connection; "
                "wait for one to end, or open another connection.",
                type="requests",
                code="too_many_pending_responses",
            )
            await self._send(error_event(refusal, lane))
            return
        task = asyncio.create_task(self._respond(body, lane, self._lanes.get(lane)))
        self._lanes[lane] = task
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._forget(lane, done))

    def _forget(self, lane: str | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._lanes.get(lane) is task:
            del self._lanes[lane]
        if not task.cancelled() and task.exception() is not None:
            log.warning("websocket_response_failed", error=repr(task.exception()))

    async def _respond(
        self, body: ResponseCreateRequest, lane: str | None, after: asyncio.Task[None] | None
    ) -> None:
        """One create, once the one before it on its lane has ended."""
        if after is not None:
            await asyncio.wait([after])
        try:
            try:
                run = await self._open(body)
                async with aclosing(self._responses.stream(run, _encoder(lane))) as events:
                    async for event in events:
                        await self._send(event)
            except APIError as exc:
                await self._send(error_event(exc, lane))
            except ChatbusError as exc:
                await self._send(error_event(from_chatbus(exc), lane))
        except _GONE:
            return  # the receiving loop sees the disconnect and stops the rest

    async def _send(self, text: str) -> None:
        async with self._sending:
            await self._ws.send_text(text)

    async def _stop(self) -> None:
        """The client is gone: cancel what runs (each stream's ``finally`` cancels on the bus)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # failures: logged by _forget


async def refuse(websocket: WebSocket, error: APIError) -> None:
    """Refuse the handshake: ``error`` as a plain HTTP answer where the server can send one,
    otherwise a close (1008, policy violation) before accepting."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        body = error.body.model_dump(mode="json")
        await websocket.send_denial_response(
            JSONResponse(body, status_code=error.status, headers=error.headers)
        )
    else:
        await websocket.close(code=1008, reason=error.body.error.message[:120])


async def responses_socket(websocket: WebSocket) -> None:
    """``/v1/responses`` as a WebSocket: authenticate the handshake, then serve the connection;
    each create is admitted like one ``POST`` (:func:`~producers.gateway.routes.admit_as`)."""
    runtime = runtime_of(websocket)
    try:
        principal = await authenticate(websocket, runtime.keys)
    except APIError as exc:
        await refuse(websocket, exc)
        return
    except ChatbusError as exc:
        await refuse(websocket, from_chatbus(exc))
        return
    traceparent = websocket.headers.get(TRACEPARENT_HEADER)

    async def open_run(body: ResponseCreateRequest) -> ResponseRun:
        admitted = await admit_as(websocket, principal, RequestTrace.begin(traceparent))
        return await runtime.responses.open(body, user_id=principal.user, submit=admitted.submit)

    # a browser authenticated through its offered subprotocol: the server must pick one
    await websocket.accept(subprotocol=BROWSER_PROTOCOL if browser_key(websocket) else None)
    log.info("websocket_opened", user=principal.user)
    max_bytes = runtime.settings.gateway.max_body_bytes
    await ResponsesSocket(websocket, runtime.responses, open_run, max_bytes=max_bytes).serve()
