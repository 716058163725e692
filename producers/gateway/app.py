"""The FastAPI application of the gateway: lifespan, middleware, error handlers, routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from chatbus.errors import ChatbusError
from chatbus.logging import get_logger
from chatbus.settings import Settings
from producers.gateway.appeals import router as appeals_router
from producers.gateway.conversations import router as conversations_router
from producers.gateway.errors import APIError, from_chatbus
from producers.gateway.feedback import router as feedback_router
from producers.gateway.middleware import GatewayMiddleware
from producers.gateway.moderations import router as moderations_router
from producers.gateway.openapi import gateway_openapi
from producers.gateway.responses.routes import router as responses_router
from producers.gateway.routes import router
from producers.gateway.runtime import GatewayRuntime
from producers.gateway.usage import router as usage_router
from producers.gateway.web import mount_web

log = get_logger(__name__)


def _error_response(error: APIError) -> JSONResponse:
    return JSONResponse(
        error.body.model_dump(mode="json"), status_code=error.status, headers=error.headers
    )


async def _on_api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return _error_response(exc)


async def _on_chatbus_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChatbusError)
    error = from_chatbus(exc)
    log.warning("request_failed", path=request.url.path, status=error.status, error=str(exc))
    return _error_response(error)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return _error_response(APIError(400, str(first.get("msg")), param=param))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    return _error_response(APIError(exc.status_code, str(exc.detail), code=code))


def create_app(settings: Settings, runtime: GatewayRuntime | None = None) -> FastAPI:
    """The gateway app; its lifespan starts ``runtime`` (by default one for ``settings``)."""
    gateway = runtime or GatewayRuntime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="chatbus gateway",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = gateway_openapi(app, settings.model.name)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.gateway = gateway
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.gateway.max_body_bytes)
    app.add_exception_handler(APIError, _on_api_error)
    app.add_exception_handler(ChatbusError, _on_chatbus_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.include_router(router)
    app.include_router(conversations_router)
    app.include_router(responses_router)
    app.include_router(moderations_router)
    app.include_router(appeals_router)
    app.include_router(feedback_router)
    app.include_router(usage_router)
    mount_web(app)
    return app


__all__ = ["create_app"]
