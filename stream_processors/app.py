"""The Faust app of chatbus's stream processors: input and output moderation, and history.

``create_app(settings)`` builds an app whose broker, topic names, app id (= consumer group and
internal-topic prefix) and table state all come from the settings, so a test's topic prefix
isolates everything. ``chatbus processors`` runs it as a worker until SIGTERM.
"""

from __future__ import annotations

import faust

from chatbus.kafka.security import faust_credentials
from chatbus.settings import Settings
from stream_processors.agents import history, moderation, output_moderation
from stream_processors.moderation.classifier import Classifier


def app_id(settings: Settings) -> str:
    return f"{settings.kafka.topic_prefix}{settings.moderation.processors_app_id}"


def create_app(settings: Settings, *, classifier: Classifier | None = None) -> faust.App:
    """The processors' Faust app; ``classifier`` overrides the configured one (tests, plugins)."""
    return build_app(settings, classifier=classifier)[0]


def build_app(
    settings: Settings, *, classifier: Classifier | None = None
) -> tuple[faust.App, moderation.ModerationRuntime]:
    """The app and its moderation runtime (whose classifier readiness waits for)."""
    ident = app_id(settings)
    datadir = settings.state_dir / "faust" / ident
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        ident,
        broker=[f"kafka://{host}" for host in settings.kafka.bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",  # tables rebuild from their changelog topics on start
        datadir=str(datadir),
        topic_partitions=settings.kafka.topic_partitions,
        topic_replication_factor=settings.kafka.topic_replication,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        web_enabled=False,
        autodiscover=False,
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
    )
    runtime = moderation.ModerationRuntime(settings, classifier=classifier)
    app.add_dependency(runtime)
    moderation.register(app, settings, runtime)
    if settings.moderation.output:
        output_moderation.register(app, settings, runtime)
    output_moderation.register_control_audit(app, settings, runtime)
    history_runtime = history.HistoryRuntime(settings)
    app.add_dependency(history_runtime)
    history.register(app, settings, history_runtime)
    return app, runtime
