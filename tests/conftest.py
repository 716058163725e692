"""Fixtures shared by every tier.

Integration tests run against the real local services (``chatbus infra up``). The session fixture
starts them when they are not running and stops, at the end, only what it started. Each test gets
its own topic prefix, so its topics and consumer groups are fresh.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from chatbus.settings import Settings

if TYPE_CHECKING:
    from pymongo import MongoClient
    from pymongo.database import Database

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest_plugins = ["tests.integration.gateway_fixtures", "tests.integration.processors"]
REPO = Path(__file__).resolve().parents[1]


def base_settings(**overrides: object) -> Settings:
    """Settings as the suite uses them: the checkout's state dir, logs readable by humans, and the
    tiny random model (tests of the real model name it)."""
    fields: dict[str, object] = {
        "state_dir": REPO / ".chatbus",
        "log_json": False,
        "model_name": "chatbus-tiny",
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]


@contextmanager
def mongo_database(settings: Settings) -> Iterator[Database[dict[str, Any]]]:
    """The settings' MongoDB database through a client of the test's own (closed after)."""
    from chatbus.stores import mongo_client

    client: MongoClient[dict[str, Any]] = mongo_client(settings)
    try:
        yield client[settings.mongo.db]
    finally:
        client.close()


@pytest.fixture(scope="session")
def local_services() -> Iterator[Settings]:
    """The real Kafka, Redis, FerretDB and S3, started for the session if not already running."""
    from infra.local import manager

    settings = base_settings()
    before = {s.name for s in manager.status(settings) if s.healthy}
    manager.up(settings)
    started = {s.name for s in manager.status(settings)} - before
    yield settings
    if started:
        manager.down(settings, sorted(started))


@pytest.fixture
async def bus(local_services: Settings) -> AsyncIterator[Settings]:
    """Settings with a topic prefix of this test alone, its topics created."""
    from chatbus.kafka.topic_setup import ensure_topics

    prefix = f"t{uuid.uuid4().hex[:10]}."
    # workers in tests read chat.requests directly; tests of moderation run the processor
    settings = base_settings(
        topic_prefix=prefix, topic_partitions=2, inference_input_topic="chat.requests"
    )
    await ensure_topics(settings)
    yield settings
    await _delete_topics(settings)


async def _delete_topics(settings: Settings) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from schemas.topics import TOPICS

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic(t) for t in TOPICS])
    finally:
        await admin.close()


@pytest.fixture
def history_settings(bus: Settings, demo_model_path: Path) -> Iterator[Settings]:
    """The test's bus, the demo model, and a MongoDB database of its own (dropped afterwards)."""
    from pymongo import MongoClient

    settings = bus.replace(
        **{
            "model_path": demo_model_path,
            "max_inflight": 4,
            "mongo_db": f"hist_{uuid.uuid4().hex[:10]}",
        }
    )
    yield settings
    client: MongoClient[dict[str, object]] = MongoClient(settings.mongo.url.get_secret_value())
    try:
        client.drop_database(settings.mongo.db)
    finally:
        client.close()


@pytest.fixture(scope="session")
def demo_model_path() -> Path:
    """The demo model, built once into the cache (``make model`` does the same)."""
    from inference_consumers.demo_model import build_demo_model

    return build_demo_model(base_settings().resolved_model_path, progress=False)
