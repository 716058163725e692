"""Publish typed events to their topics, keyed by the registry."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, UnknownTopicOrPartitionError
from aiokafka.structs import RecordMetadata
from pydantic import BaseModel

from chatbus.errors import ConfigurationError
from chatbus.kafka.codec import encode_event, event_headers
from chatbus.kafka.factories import kafka_unavailable, make_producer
from chatbus.kafka.startup import start_client
from chatbus.settings import Settings
from schemas.topics import topic as topic_entry


class Publisher(Protocol):
    """What a component needs of a publisher: queue an event (the future resolves on the
    broker's ack), or send and wait. :class:`EventPublisher` is the Kafka one; unit tests give a
    recorder."""

    async def send(
        self,
        topic: str,
        event: BaseModel,
        *,
        key: str | bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> asyncio.Future[Any]: ...

    async def publish(
        self,
        topic: str,
        event: BaseModel,
        *,
        key: str | bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> Any: ...


class EventPublisher:
    """An idempotent producer of events; ``start``/``stop`` are safe to call twice."""

    def __init__(self, settings: Settings, *, client_id: str | None = None) -> None:
        self._settings = settings
        self._producer: AIOKafkaProducer = make_producer(settings, client_id=client_id)
        self._started = False

    async def start(self) -> None:
        if self._started:
            return
        await start_client(self._settings, self._producer)
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        await self._producer.stop()

    async def __aenter__(self) -> EventPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def producer(self) -> AIOKafkaProducer:
        return self._producer

    async def partitions_for(self, topic: str) -> set[int]:
        """The partitions of registry topic ``topic`` (raises when the topic does not exist)."""
        name = self._settings.topic(topic)
        try:
            return set(await self._producer.partitions_for(name))
        except UnknownTopicOrPartitionError:
            raise ConfigurationError(
                f"topic {name!r} does not exist; run `chatbus topics create` (make up does it)"
            ) from None

    async def publish(
        self,
        topic: str,
        event: BaseModel,
        *,
        key: str | bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> RecordMetadata:
        """Send ``event`` to registry topic ``topic`` and wait for the broker's ack (acks=all)."""
        return await (await self.send(topic, event, key=key, partition=partition, headers=headers))

    async def send(
        self,
        topic: str,
        event: BaseModel,
        *,
        key: str | bytes | None = None,
        partition: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> asyncio.Future[RecordMetadata]:
        """Queue ``event`` for registry topic ``topic``; the future resolves on the broker's ack.

        Sends to one partition keep their order (idempotent producer), so a caller may queue
        many and await only the last. ``headers`` (e.g. the request's trace) follow the event's
        own content-type, event-type and schema-version headers.
        """
        if key is None:
            key = getattr(event, topic_entry(topic).key, None)
        raw_key = key.encode() if isinstance(key, str) else key
        try:
            return await self._producer.send(
                self._settings.topic(topic),
                encode_event(event),
                key=raw_key,
                partition=partition,
                headers=[*event_headers(event), *headers],
            )
        except KafkaConnectionError as exc:
            raise kafka_unavailable(self._settings, exc) from exc
