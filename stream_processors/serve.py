"""Run the processors' Faust worker in this process until SIGTERM/SIGINT.

Faust's worker owns the event loop and the signals here, so the process uses the shared pieces of
:mod:`chatbus.kafka.serve` inside it: the same health endpoint, beaten by an app timer, and the
same lag reporter (``chatbus_consumer_lag_records`` of the app's consumer group) on a timer.
The ops port also serves the moderation check (``POST /v1/moderations``) the gateway forwards.
"""

from __future__ import annotations

import logging

import faust

from chatbus.health import Health, PostHandler
from chatbus.kafka.lag import LagReporter
from chatbus.kafka.serve import health_endpoint
from chatbus.logging import get_logger
from chatbus.settings import Settings
from stream_processors.agents import moderation_check
from stream_processors.app import app_id, build_app
from stream_processors.topic_setup import ensure_app_topics_sync

log = get_logger(__name__)


def run_processors(settings: Settings) -> None:
    """Start the app as a Faust worker; returns (exits) when the worker stops."""
    routes: dict[str, PostHandler] = {}
    with health_endpoint(settings, "processors", routes) as health:
        _run(settings, health, routes)


def _run(settings: Settings, health: Health, routes: dict[str, PostHandler]) -> None:
    app, moderation = build_app(settings)
    routes[moderation_check.PATH] = moderation_check.check_handler(moderation)
    lag = LagReporter(
        settings,
        app_id(settings),
        topics={t for agent in app.agents.values() for t in agent.channel.topics},
    )

    @app.timer(0.25)
    async def beat() -> None:
        """Runs once the app (its agents and tables) has started; ready once the classifier is
        loaded and warm too, so the first request after a start is as fast as the next."""
        health.beat("faust")
        if moderation.classifier_ready:
            health.set_ready(True, "agents running, classifier warm")
        else:
            health.set_ready(False, "loading the moderation classifier")

    @app.timer(lag.interval_s)
    async def report_lag() -> None:
        await lag.report_once()

    ensure_app_topics_sync(settings, app)
    log.info("processors_starting", app_id=app.conf.id, broker=settings.kafka.bootstrap)
    worker = faust.Worker(
        app,
        loglevel=max(logging.WARNING, logging.getLogger().level),
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.execute_from_commandline()
