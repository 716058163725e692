"""Starting an aiokafka client, the one way: a broker that cannot be reached is our error.

aiokafka raises :class:`~aiokafka.errors.KafkaConnectionError` for a refused connection and other
:class:`~aiokafka.errors.KafkaError` subclasses for what goes wrong later in ``start()`` (an
unknown topic, a refused SASL handshake, a metadata timeout). Every chatbus client starts through
:func:`start_client`, which catches the base class, closes what it started and raises
:class:`~chatbus.errors.ServiceUnavailable` saying what to do (:func:`kafka_unreachable`).
"""

from __future__ import annotations

from typing import Protocol

from aiokafka.errors import KafkaError

from chatbus.kafka.factories import kafka_unreachable
from chatbus.settings import Settings

__all__ = ["start_client"]


class _Client(Protocol):
    async def start(self) -> None: ...


async def _close(client: object) -> None:
    """``stop()`` for producers and consumers, ``close()`` for the admin client."""
    stop = getattr(client, "stop", None) or client.close  # type: ignore[attr-defined]
    await stop()


async def start_client(settings: Settings, client: _Client, *also: object) -> None:
    """Start ``client``; when that fails with a Kafka error, close it and ``also`` (clients
    started before it, in reverse order) and raise ServiceUnavailable."""
    try:
        await client.start()
    except KafkaError as exc:
        for started in (client, *reversed(also)):
            await _close(started)
        raise await kafka_unreachable(settings, exc) from exc
