"""/v1/models when the broker cannot be asked: the configured models, not an empty list."""

from __future__ import annotations

import socket

from chatbus.settings import Settings
from producers.gateway.served_models import ServedModels


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nobody listens once the socket is closed


async def test_an_unreachable_broker_lists_what_is_configured() -> None:
    settings = Settings(kafka_port=_closed_port(), local_models=("a", "b"), model_name="a")
    assert await ServedModels(settings).live() == ("a", "b")
