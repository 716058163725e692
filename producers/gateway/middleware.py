"""A pure ASGI middleware: body-size guard, ``x-request-id`` and rate-limit headers, metrics, and
the wall-clock moment the request arrived (where a chat request's trace begins).

Pure ASGI (not ``BaseHTTPMiddleware``) so streamed answers pass through untouched and a client
disconnect still reaches the streaming generator.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chatbus.logging import get_logger
from chatbus.tracing import now_ms
from producers.gateway import metrics
from producers.gateway.admission import HEADERS_STATE
from producers.gateway.errors import APIError
from schemas.events import new_id

log = get_logger(__name__)

REQUEST_ID_STATE = "chatbus_request_id"  # request.state field: the chat request_id, once known
RECEIVED_MS_STATE = "chatbus_received_ms"  # request.state field: epoch ms the request arrived


async def send_error(send: Send, error: APIError) -> None:
    """Answer with ``error`` directly (for failures outside the routes)."""
    body = error.body.model_dump_json().encode()
    headers = {
        **error.headers,
        "content-type": "application/json",
        "content-length": str(len(body)),
    }
    await send(
        {
            "type": "http.response.start",
            "status": error.status,
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state[RECEIVED_MS_STATE] = now_ms()
        started = time.perf_counter()
        status = 500
        response_started = False

        def extra_headers() -> dict[str, str]:
            headers = dict(state.get(HEADERS_STATE) or {})
            headers["x-request-id"] = state.get(REQUEST_ID_STATE) or fallback_id
            return headers

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                present = {k.lower() for k, _ in message.get("headers", [])}
                added = [
                    (k.encode(), v.encode())
                    for k, v in extra_headers().items()
                    if k.encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        fallback_id = new_id("http")
        try:
            length = _content_length(scope)
            if length is not None and length > self.max_body_bytes:
                await send_error(
                    send_wrapper,
                    APIError(
                        413,
                        f"The request body is {length} bytes, more than the "
                        f"{self.max_body_bytes} allowed (CHATBUS_GATEWAY_MAX_BODY_BYTES).",
                        code="request_too_large",
                    ),
                )
                return
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled_error", path=scope.get("path"))
            if response_started:
                raise
            await send_error(
                send_wrapper,
                APIError(
                    500,
                    "The gateway failed to process the request; see its log.",
                    type="server_error",
                    code="internal_error",
                ),
            )
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "other"
            method = scope.get("method", "")
            metrics.REQUESTS.labels(method, label, str(status)).inc()
            metrics.LATENCY.labels(method, label).observe(time.perf_counter() - started)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
