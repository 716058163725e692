"""Run the gateway with uvicorn until SIGTERM/SIGINT (uvicorn handles both: graceful stop)."""

from __future__ import annotations

import uvicorn

from chatbus.ports import ensure_free
from chatbus.settings import Settings
from producers.gateway.app import create_app


def uvicorn_config(settings: Settings, *, port: int | None = None) -> uvicorn.Config:
    """uvicorn's configuration for this gateway (logs go through structlog/stdlib)."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.gateway.host,
        port=settings.gateway.port if port is None else port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


def run_gateway(settings: Settings) -> None:
    """Serve until stopped; a taken port is a ConfigurationError naming the setting."""
    if settings.gateway.port:
        ensure_free(settings.gateway.port, "CHATBUS_GATEWAY_PORT", settings.gateway.host)
    server = uvicorn.Server(uvicorn_config(settings))
    server.run()
    if not server.started:
        raise SystemExit(1)
