"""Run the processors' Faust worker in this process until SIGTERM/SIGINT."""

from __future__ import annotations

import logging

import faust

from chatbus.health import Health, HealthServer
from chatbus.logging import get_logger
from chatbus.settings import Settings
from stream_processors.app import build_app
from stream_processors.topic_setup import ensure_app_topics_sync

log = get_logger(__name__)


def run_processors(settings: Settings) -> None:
    """Start the app as a Faust worker; returns (exits) when the worker stops."""
    health = Health("processors")
    server = HealthServer(health, settings.metrics_port) if settings.metrics_port else None
    if server:
        server.start()
    app, moderation = build_app(settings)

    @app.timer(0.25)
    async def beat() -> None:
        """Runs once the app (its agents and tables) has started; ready once the classifier is
        loaded and warm too, so the first request after a start is as fast as the next."""
        health.beat("faust")
        if moderation.classifier_ready:
            health.set_ready(True, "agents running, classifier warm")
        else:
            health.set_ready(False, "loading the moderation classifier")

    ensure_app_topics_sync(settings, app)
    log.info("processors_starting", app_id=app.conf.id, broker=settings.kafka_bootstrap)
    worker = faust.Worker(app, loglevel=max(logging.WARNING, logging.getLogger().level),
                          quiet=True, redirect_stdouts=False, override_logging=False)
    worker.execute_from_commandline()
