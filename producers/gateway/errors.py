"""HTTP errors of the gateway, in OpenAI's shape, and how ours map onto them.

APIError                  an answer the client gets as ``{"error": {message, type, param, code}}``
 ├── 400 invalid_request_error   a parameter is wrong (``param`` names it)
 ├── 401 invalid_api_key         no key, or a key we do not know
 ├── 404 model_not_found         a model nobody serves
 ├── 413 request_too_large       a body over CHATBUS_GATEWAY_MAX_BODY_BYTES
 ├── 429 rate_limit_exceeded     over the key's requests or tokens per minute
 ├── 503 service_unavailable     Kafka, Redis or MongoDB cannot be reached (retry later)
 └── 504 timeout                 no worker answered in time

A broken dependency is never a 400: only what the client can fix is.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError

from chatbus.errors import ChatbusError, ServiceUnavailable
from producers.gateway.protocol import ErrorBody, ErrorResponse
from producers.sdk import ChatError, ChatTimeout
from schemas.events import ErrorInfo

# worker error codes (ErrorInfo.code) → HTTP status
_CHAT_ERROR_STATUS = {
    "model_not_found": 404,
    "context_length_exceeded": 400,
    "invalid_request": 400,
    "invalid_parameter": 400,
    "content_policy_violation": 400,  # as OpenAI answers a prompt its moderation refuses
    "user_blocked": 429,  # repeated violations: retry after the block ends
    "service_unavailable": 503,  # a store the worker needs (history context) is down
}


class APIError(Exception):
    """An error answer: status, OpenAI error body, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorResponse(
            error=ErrorBody(message=message, type=type, param=param, code=code)
        )
        self.headers = dict(headers or {})


def invalid(message: str, param: str | None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def unsupported(param: str, what: str) -> APIError:
    """A 400 for a parameter whose value asks for what chatbus does not serve (yet)."""
    return invalid(f"{what} is not supported by chatbus yet.", param, "unsupported_parameter")


def from_validation(exc: ValidationError, rename: Mapping[str, str] | None = None) -> APIError:
    """A 400 naming the first invalid parameter (``messages.0.role`` style)."""
    first = exc.errors(include_url=False)[0]
    loc = [str(part) for part in first["loc"]]
    param = ".".join(loc) if loc else None
    if param and rename:
        head = loc[0]
        param = ".".join([rename.get(head, head), *loc[1:]])
    if first["type"] == "extra_forbidden":
        return invalid(
            f"Unrecognized request argument supplied: {param}", param, "unsupported_parameter"
        )
    message = f"Invalid value for '{param}': {first['msg']}" if param else first["msg"]
    return invalid(message, param, "invalid_value")


def from_chat_error(info: ErrorInfo) -> APIError:
    """A worker's refusal as the HTTP error OpenAI clients expect."""
    status = _CHAT_ERROR_STATUS.get(info.code)
    if status is None:
        return APIError(500, info.message, type="server_error", param=info.param, code=info.code)
    if status >= 500:
        return APIError(
            status,
            info.message,
            type="server_error",
            param=info.param,
            code=info.code,
            headers={"retry-after": "1"},
        )
    return APIError(status, info.message, param=info.param, code=info.code)


def from_chatbus(exc: ChatbusError) -> APIError:
    """Our internal errors at the HTTP boundary."""
    if isinstance(exc, ChatError):
        return from_chat_error(exc.info)
    if isinstance(exc, ChatTimeout):
        return APIError(504, str(exc), type="server_error", code="timeout")
    if isinstance(exc, ServiceUnavailable):
        return APIError(
            503,
            str(exc),
            type="server_error",
            code="service_unavailable",
            headers={"retry-after": "1"},
        )
    return APIError(500, str(exc), type="server_error", code="internal_error")
