"""The one settings object: env prefix, local addresses that follow their ports, topic prefix."""

from __future__ import annotations

import pytest

from chatbus.settings import Settings


def test_moving_a_local_port_moves_its_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_KAFKA_PORT", "49092")
    monkeypatch.setenv("CHATBUS_REDIS_PORT", "46379")
    settings = Settings()
    assert settings.kafka_bootstrap == "127.0.0.1:49092"
    assert settings.redis_url == "redis://127.0.0.1:46379/0"
    assert settings.s3_endpoint == "http://127.0.0.1:39000"


def test_an_explicit_address_wins_over_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("CHATBUS_KAFKA_PORT", "49092")
    assert Settings().kafka_bootstrap == "broker-1:9092,broker-2:9092"


def test_topic_names_carry_the_prefix() -> None:
    assert Settings(topic_prefix="staging.").topic("chat.tokens") == "staging.chat.tokens"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.max_inflight = 3  # type: ignore[misc]
