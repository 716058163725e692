"""How every Kafka client of chatbus authenticates and encrypts, from the one settings object.

``client_options`` goes into every aiokafka producer, consumer and admin client;
``faust_credentials`` into the processors' Faust app. PLAINTEXT (the local default) adds nothing.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any

from aiokafka.helpers import create_ssl_context

from chatbus.errors import ConfigurationError
from chatbus.settings import Settings

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT


def uses_tls(settings: Settings) -> bool:
    return settings.kafka.security_protocol in ("SSL", "SASL_SSL")


def uses_sasl(settings: Settings) -> bool:
    return settings.kafka.security_protocol.startswith("SASL_")


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """The TLS context of the configured CA bundle and optional client certificate; a file that
    is missing or not PEM is a ConfigurationError naming the setting."""
    files = {
        "CHATBUS_KAFKA_SSL_CAFILE": settings.kafka.ssl_cafile,
        "CHATBUS_KAFKA_SSL_CERTFILE": settings.kafka.ssl_certfile,
        "CHATBUS_KAFKA_SSL_KEYFILE": settings.kafka.ssl_keyfile,
    }
    for env, path in files.items():
        if path is not None and not path.is_file():
            raise ConfigurationError(f"{env}={path}: no such file")
    if settings.kafka.ssl_keyfile is not None and settings.kafka.ssl_certfile is None:
        raise ConfigurationError(
            "CHATBUS_KAFKA_SSL_KEYFILE is set without CHATBUS_KAFKA_SSL_CERTFILE; set both for "
            "mutual TLS, or neither"
        )
    try:
        return create_ssl_context(
            cafile=str(settings.kafka.ssl_cafile) if settings.kafka.ssl_cafile else None,
            certfile=str(settings.kafka.ssl_certfile) if settings.kafka.ssl_certfile else None,
            keyfile=str(settings.kafka.ssl_keyfile) if settings.kafka.ssl_keyfile else None,
        )
    except ssl.SSLError as exc:
        named = ", ".join(f"{env}={path}" for env, path in files.items() if path is not None)
        raise ConfigurationError(
            f"cannot load the Kafka TLS files ({named or 'system trust store'}): {exc}"
        ) from exc


def client_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of an aiokafka client for the configured security protocol."""
    options: dict[str, Any] = {"security_protocol": settings.kafka.security_protocol}
    if uses_tls(settings):
        options["ssl_context"] = ssl_context(settings)
    if uses_sasl(settings):
        options["sasl_mechanism"] = settings.kafka.sasl_mechanism
        # aiokafka takes SCRAM's username and password under these names too
        options["sasl_plain_username"] = settings.kafka.sasl_username
        options["sasl_plain_password"] = settings.kafka.sasl_password.get_secret_value()
    return options


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The Faust app's ``broker_credentials`` (None for PLAINTEXT)."""
    from faust.auth import SASLCredentials, SSLCredentials  # only the processors import Faust

    context = ssl_context(settings) if uses_tls(settings) else None
    if uses_sasl(settings):
        return SASLCredentials(
            username=settings.kafka.sasl_username,
            password=settings.kafka.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.kafka.sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None
