"""Settings of a private set of local services: free ports and a state dir of a test's own, so
the suite's shared services (default ports, ``.chatbus/``) are never touched."""

from __future__ import annotations

import socket
from pathlib import Path

from chatbus.settings import Settings

PORTS = (
    "kafka_port",
    "kafka_controller_port",
    "kafka_secure_port",
    "redis_port",
    "mongo_port",
    "postgres_port",
    "s3_port",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_settings(state_dir: Path, **overrides: object) -> Settings:
    fields: dict[str, object] = {
        "state_dir": state_dir,
        "log_json": False,
        **{name: free_port() for name in PORTS},
    }
    fields.update(overrides)
    return Settings(**fields)  # type: ignore[arg-type]
