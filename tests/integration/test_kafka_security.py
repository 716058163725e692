"""Every client speaks SASL_SSL when told to: the same code against the local broker's SECURE
listener (SASL PLAIN over TLS, as managed clusters run it), and clear errors when the
credentials or the trust are wrong."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from chatbus.errors import ServiceUnavailable
from chatbus.kafka import make_consumer, make_producer
from chatbus.kafka.lag import log_offsets
from chatbus.kafka.topic_setup import admin_client, ensure_topics
from chatbus.polling import eventually
from chatbus.settings import Settings
from infra.local.kafka import secure_client_settings
from producers.sdk import ChatClient
from schemas.events import ChatRequest, ModerationVerdict
from schemas.topics import TopicName
from tests.integration.processors import running_processors
from tests.integration.test_moderation_processor import TopicReader, about

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def secure(bus: Settings) -> Settings:
    """The test's bus, reached through the SECURE listener with the local user's password."""
    return Settings(**{**bus.model_dump(), **secure_client_settings(bus)})


async def test_a_sasl_ssl_client_produces_consumes_and_administers(secure: Settings) -> None:
    assert secure.kafka.security_protocol == "SASL_SSL"
    topic = secure.topic(TopicName.DLQ)
    await ensure_topics(secure)  # the admin client over SASL_SSL (the topics exist: a no-op)
    producer = make_producer(secure)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"over tls", key=b"k")
    finally:
        await producer.stop()

    consumer = make_consumer(secure, topic, group_id=None)
    await consumer.start()
    try:

        async def read() -> bytes | None:
            batches = await consumer.getmany(timeout_ms=200)
            return next((r.value for rs in batches.values() for r in rs), None)

        assert await eventually(read, timeout_s=30, what="the record back") == b"over tls"
    finally:
        await consumer.stop()
    _, ends = await log_offsets(secure, [topic])
    assert {tp.partition: end for tp, end in ends.items()}[sent.partition] == sent.offset + 1


async def test_a_wrong_password_is_refused_with_a_reason(secure: Settings) -> None:
    wrong = Settings(**{**secure.model_dump(), "kafka_sasl_password": "not-the-password"})
    with pytest.raises(ServiceUnavailable) as err:
        async with admin_client(wrong):
            pass
    message = str(err.value)
    assert wrong.kafka.bootstrap in message and "SASL_SSL settings" in message
    assert "SaslAuthenticationFailed" in message and "Invalid username or password" in message


async def test_a_broker_certificate_the_client_does_not_trust_is_refused(secure: Settings) -> None:
    untrusting = Settings(**{**secure.model_dump(), "kafka_ssl_cafile": None})  # system CAs
    with pytest.raises(ServiceUnavailable) as err:
        async with admin_client(untrusting):
            pass
    assert "CERTIFICATE_VERIFY_FAILED" in str(err.value)
    assert "CHATBUS_KAFKA_SSL_CAFILE" in str(err.value)


@pytest.fixture
async def secure_processors(
    bus: Settings, secure: Settings, tmp_path: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    env = {
        "CHATBUS_KAFKA_BOOTSTRAP": secure.kafka.bootstrap,
        "CHATBUS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "CHATBUS_KAFKA_SASL_MECHANISM": secure.kafka.sasl_mechanism,
        "CHATBUS_KAFKA_SASL_USERNAME": secure.kafka.sasl_username,
        "CHATBUS_KAFKA_SASL_PASSWORD": secure.kafka.sasl_password.get_secret_value(),
        "CHATBUS_KAFKA_SSL_CAFILE": str(secure.kafka.ssl_cafile),
    }
    async with running_processors(bus, tmp_path, **env) as proc:
        yield proc


@pytest.mark.model
async def test_the_faust_processors_moderate_over_sasl_ssl(
    secure: Settings, secure_processors: subprocess.Popen[bytes]
) -> None:
    async with (
        ChatClient(secure, reply_partition=0) as client,
        TopicReader(secure, TopicName.REQUESTS_APPROVED) as approved,
        TopicReader(secure, TopicName.MODERATION) as verdicts,
    ):
        request = await client.send(
            [{"role": "user", "content": "How do kites fly?"}], model=secure.model.name
        )
        forwarded = await approved.wait_for(about(request, ChatRequest), what="the approval")
        verdict = await verdicts.wait_for(about(request, ModerationVerdict), what="a verdict")
    assert forwarded == request
    assert isinstance(verdict, ModerationVerdict) and verdict.action == "allow"
    assert secure_processors.poll() is None
