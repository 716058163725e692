"""Producer and consumer factories with chatbus's delivery guarantees."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import create_conn

from chatbus.errors import ServiceUnavailable
from chatbus.kafka.security import client_options
from chatbus.settings import Settings


def make_producer(
    settings: Settings, *, client_id: str | None = None, **overrides: Any
) -> AIOKafkaProducer:
    """An idempotent producer (acks=all): retries never duplicate or reorder a partition."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka.bootstrap,
        "client_id": client_id or settings.kafka.client_id,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 0,
        "request_timeout_ms": 30_000,
        **client_options(settings),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def make_consumer(
    settings: Settings,
    *topics: str,
    group_id: str | None,
    client_id: str | None = None,
    **overrides: Any,
) -> AIOKafkaConsumer:
    """A consumer that commits only when told to (after the effect is durable)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka.bootstrap,
        "client_id": client_id or settings.kafka.client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "fetch_max_wait_ms": 50,
        **client_options(settings),
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def kafka_unavailable(
    settings: Settings, exc: BaseException, cause: str | None = None
) -> ServiceUnavailable:
    """Our error for a broker that cannot be reached, saying what to do (and, when known, what
    the broker said: ``cause``)."""
    if settings.kafka.security_protocol != "PLAINTEXT":
        hint = (
            f"check CHATBUS_KAFKA_BOOTSTRAP and the {settings.kafka.security_protocol} "
            "settings (CHATBUS_KAFKA_SASL_*, CHATBUS_KAFKA_SSL_CAFILE)"
        )
    else:
        hint = "start the local services with `make up`, or set CHATBUS_KAFKA_BOOTSTRAP"
    said = cause or f"{exc.__class__.__name__}: {exc}"
    return ServiceUnavailable(f"cannot reach Kafka at {settings.kafka.bootstrap} ({said}); {hint}")


async def kafka_unreachable(settings: Settings, exc: BaseException) -> ServiceUnavailable:
    """:func:`kafka_unavailable` with the reason one direct connection to the first bootstrap
    broker gives (a refused password, an untrusted certificate, …), which a client's own
    bootstrap error leaves out."""
    return kafka_unavailable(settings, exc, await connection_problem(settings))


async def connection_problem(settings: Settings, timeout_s: float = 5.0) -> str | None:
    """Why connecting (TLS handshake and SASL included) to the first bootstrap broker fails;
    None when it succeeds."""
    first = settings.kafka.bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    if not port.isdigit():
        host, port = first, "9092"  # Kafka's default, as aiokafka assumes
    try:
        async with asyncio.timeout(timeout_s):
            conn = await create_conn(
                host.strip("[]"),
                int(port),
                client_id="chatbus-diagnosis",
                request_timeout_ms=int(timeout_s * 1000),
                **client_options(settings),
            )
    except Exception as exc:  # noqa: BLE001 - the reason is what we want, whatever it is
        return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    conn.close()
    return None


async def partitions_of(consumer: AIOKafkaConsumer, *topics: str) -> list[TopicPartition]:
    """Every partition of ``topics`` as the broker has them now (a started consumer that has not
    subscribed knows no metadata yet; missing topics have none)."""
    await consumer._client.force_metadata_update()
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
