"""Redis from Debian's packages, run as our own process on its own port and data dir."""

from __future__ import annotations

import os
import shutil

import structlog

from chatbus import ports
from chatbus.errors import ConfigurationError, ServiceUnavailable
from chatbus.settings import Settings
from infra.local.service import Command, Service, apt_install

log = structlog.get_logger(__name__)

INSTALL_HINT = "install it with: sudo apt-get install -y redis-server"


def find_redis_server() -> str | None:
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )


class Redis(Service):
    name = "redis"
    title = "Redis"
    start_timeout = 20.0
    stop_timeout = 10.0

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        return [(settings.local.redis_port, "CHATBUS_REDIS_PORT")]

    def address(self, settings: Settings) -> str:
        return f"{ports.HOST}:{settings.local.redis_port}"

    def install(self, settings: Settings) -> None:
        apt_install("redis-server", find_redis_server, INSTALL_HINT)

    def prepare(self, settings: Settings) -> None:
        self.data_dir(settings).mkdir(parents=True, exist_ok=True)

    def command(self, settings: Settings) -> Command:
        server = find_redis_server()
        if server is None:
            raise ConfigurationError(f"redis-server is not installed; {INSTALL_HINT}")
        # no config file: nothing of a system redis (/etc/redis, port 6379, its pidfile) is shared
        return Command(
            argv=[
                server,
                "--port",
                str(settings.local.redis_port),
                "--bind",
                ports.HOST,
                "--dir",
                str(self.data_dir(settings)),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
                "--unixsocket",
                "",
                "--logfile",
                "",
            ],
            cwd=self.data_dir(settings),
        )

    def check(self, settings: Settings, timeout: float) -> str:
        import redis

        client = redis.Redis(
            host=ports.HOST,
            port=settings.local.redis_port,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
        )
        try:
            if not client.ping():
                raise ServiceUnavailable("PING did not answer PONG")
            version = client.info("server").get("redis_version", "?")
        finally:
            client.close()
        return f"redis {version}, PING ok"
