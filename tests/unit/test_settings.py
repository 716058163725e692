"""The one settings object: one section per concern under the CHATBUS_ variables users already
set, local addresses that follow their ports, the topic prefix, and the environment it renders
for a subprocess."""

from __future__ import annotations

import os

import pytest

from chatbus.settings import Settings, section_variables


def test_moving_a_local_port_moves_its_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_KAFKA_PORT", "49092")
    monkeypatch.setenv("CHATBUS_REDIS_PORT", "46379")
    settings = Settings()
    assert settings.kafka.bootstrap == "127.0.0.1:49092"
    assert settings.redis.url == "redis://127.0.0.1:46379/0"
    assert settings.s3.endpoint == "http://127.0.0.1:19000"


def test_an_explicit_address_wins_over_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_KAFKA_BOOTSTRAP", "broker-1:9092,broker-2:9092")
    monkeypatch.setenv("CHATBUS_KAFKA_PORT", "49092")
    assert Settings().kafka.bootstrap == "broker-1:9092,broker-2:9092"


def test_topic_names_carry_the_prefix() -> None:
    assert Settings(topic_prefix="staging.").topic("chat.tokens") == "staging.chat.tokens"


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.worker.max_inflight = 3  # type: ignore[misc]


def test_each_variable_lands_in_the_section_of_its_concern(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_MAX_INFLIGHT", "3")
    monkeypatch.setenv("CHATBUS_TOPIC_PREFIX", "staging.")
    monkeypatch.setenv("CHATBUS_MODEL_NAME", "my-model")
    monkeypatch.setenv("CHATBUS_AWS_ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("CHATBUS_ARCHIVE_FLUSH_S", "2.5")
    settings = Settings()
    assert settings.worker.max_inflight == 3
    assert settings.kafka.topic_prefix == "staging."
    assert settings.model.name == "my-model"
    assert settings.s3.access_key_id.get_secret_value() == "AKIA"
    assert settings.archive.flush_s == 2.5


def test_json_variables_are_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_GATEWAY_MODELS", '["a", "b"]')
    monkeypatch.setenv("CHATBUS_MODERATION_THRESHOLDS", '{"hate": 0.3}')
    settings = Settings()
    assert settings.gateway.models == ("a", "b")
    assert settings.moderation.thresholds == {"hate": 0.3}


def test_a_bad_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATBUS_MAX_INFLIGHT", "zero")
    with pytest.raises(ValueError, match="max_inflight"):
        Settings()


def test_flat_names_and_sections_are_both_accepted_in_code() -> None:
    flat = Settings(kafka_bootstrap="b:1", max_inflight=2)
    nested = Settings(kafka={"bootstrap": "b:1"}, worker={"max_inflight": 2})
    assert flat == nested


def test_replace_validates_the_copy_again() -> None:
    settings = Settings(topic_prefix="a.")
    copy = settings.replace(max_inflight=5, mongo_db="other")
    assert (copy.worker.max_inflight, copy.mongo.db, copy.kafka.topic_prefix) == (5, "other", "a.")
    assert settings.worker.max_inflight == 8
    with pytest.raises(ValueError, match="SASL"):
        settings.replace(kafka_security_protocol="SASL_SSL")


def test_the_rendered_environment_reproduces_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        topic_prefix="t.",
        gateway_models=("x", "y"),
        log_json=False,
        moderation_thresholds={"hate": 0.4},
        mongo_url="mongodb://h:1/",
    )
    env = settings.as_env()
    assert env["CHATBUS_TOPIC_PREFIX"] == "t." and env["CHATBUS_LOG_JSON"] == "false"
    for name in [n for n in os.environ if n.startswith("CHATBUS_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert Settings() == settings


def test_every_section_field_has_one_variable() -> None:
    variables = [variable for variable, _, _ in section_variables()]
    assert len(variables) == len(set(variables))
    assert "CHATBUS_KAFKA_BOOTSTRAP" in variables and "CHATBUS_WORKER_ID" in variables


def test_replacing_a_local_port_moves_the_addresses_that_followed_it() -> None:
    settings = Settings()
    copy = settings.replace(local_metrics_base_port=23400, redis_port=26379, kafka_port=29092)
    assert copy.moderation.service_url == "http://127.0.0.1:23400"  # the processors' ops port
    assert copy.redis.url == "redis://127.0.0.1:26379/0"
    assert copy.kafka.bootstrap == "127.0.0.1:29092"
    assert copy.s3.endpoint == settings.s3.endpoint


def test_replacing_a_port_keeps_an_address_set_by_hand_or_in_the_same_change() -> None:
    remote = Settings(redis_url="redis://cache.internal:6379/0")
    assert remote.replace(redis_port=26379).redis.url == "redis://cache.internal:6379/0"
    both = Settings().replace(redis_port=26379, redis_url="redis://elsewhere:1/0")
    assert both.redis.url == "redis://elsewhere:1/0"
