"""Run the processors' Faust worker in this process until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import faust
from prometheus_client import start_http_server

from chatbus.logging import get_logger
from chatbus.settings import Settings
from stream_processors.app import create_app
from stream_processors.topic_setup import ensure_app_topics_sync

log = get_logger(__name__)


def run_processors(settings: Settings) -> None:
    """Start the app as a Faust worker; returns (exits) when the worker stops."""
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1")
    app = create_app(settings)
    ensure_app_topics_sync(settings, app)
    log.info("processors_starting", app_id=app.conf.id, broker=settings.kafka_bootstrap)
    worker = faust.Worker(app, loglevel=max(logging.WARNING, logging.getLogger().level),
                          quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
