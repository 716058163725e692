"""Kafka client security from the one settings object: what each protocol adds to every aiokafka
client and to the Faust app, and the errors that name the setting to fix."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
from faust.auth import SASLCredentials, SSLCredentials

from chatbus.errors import ConfigurationError
from chatbus.kafka.security import client_options, faust_credentials
from chatbus.settings import Settings
from infra.local.tls import ensure_server_tls

SASL: dict[str, Any] = {"kafka_sasl_username": "svc-chat", "kafka_sasl_password": "s3cret"}


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_server_tls(tmp_path_factory.mktemp("tls"), "unit").ca_cert


def test_plaintext_adds_nothing_but_the_protocol() -> None:
    assert client_options(Settings()) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings()) is None


def test_sasl_ssl_gives_every_client_the_mechanism_credentials_and_a_verifying_tls_context(
    ca_file: Path,
) -> None:
    settings = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_ssl_cafile=ca_file,
        **SASL,
    )
    options = client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "svc-chat",
        "s3cret",
    )
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any("chatbus local CA" in str(ca["subject"]) for ca in context.get_ca_certs())


def test_faust_gets_the_same_credentials(ca_file: Path) -> None:
    sasl_ssl = faust_credentials(
        Settings(kafka_security_protocol="SASL_SSL", kafka_ssl_cafile=ca_file, **SASL)
    )
    assert isinstance(sasl_ssl, SASLCredentials)
    assert sasl_ssl.protocol.value == "SASL_SSL" and sasl_ssl.mechanism.value == "PLAIN"
    assert (sasl_ssl.username, sasl_ssl.password) == ("svc-chat", "s3cret")
    plain = Settings(kafka_security_protocol="SASL_PLAINTEXT", **SASL)  # type: ignore[arg-type]
    sasl_plain = faust_credentials(plain)
    assert isinstance(sasl_plain, SASLCredentials)
    assert sasl_plain.protocol.value == "SASL_PLAINTEXT" and sasl_plain.ssl_context is None
    tls_only = faust_credentials(Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file))
    assert isinstance(tls_only, SSLCredentials)


def test_sasl_without_credentials_is_refused_naming_the_variables() -> None:
    with pytest.raises(ValueError, match=r"needs CHATBUS_KAFKA_SASL_USERNAME and .*_PASSWORD"):
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="svc-chat")


def test_a_missing_ca_file_names_the_setting(tmp_path: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem")
    with pytest.raises(ConfigurationError, match=r"_SSL_CAFILE=.*nope\.pem: no such file"):
        client_options(settings)


def test_a_ca_file_that_is_not_pem_names_the_setting(tmp_path: Path) -> None:
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=junk)
    with pytest.raises(ConfigurationError, match="cannot load the Kafka TLS files"):
        client_options(settings)


def test_a_client_key_without_its_certificate_is_refused(ca_file: Path) -> None:
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file, kafka_ssl_keyfile=ca_file
    )
    with pytest.raises(ConfigurationError, match=r"KEYFILE is set without .*_SSL_CERTFILE"):
        client_options(settings)


def test_the_local_server_certificate_is_made_once_and_reused(tmp_path: Path) -> None:
    first = ensure_server_tls(tmp_path, "kafka")
    pem = first.server_pem.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----") and pem.count(b"CERTIFICATE-----") == 4
    assert ensure_server_tls(tmp_path, "kafka").server_pem.read_bytes() == pem
    assert first.server_pem.stat().st_mode & 0o777 == 0o600
