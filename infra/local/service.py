"""What every local service provides, and the shared start/health-wait logic."""

from __future__ import annotations

import abc
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from chatbus import programs
from chatbus.console import say
from chatbus.errors import ConfigurationError, ServiceUnavailable
from chatbus.programs import tail
from chatbus.settings import Settings
from infra.local import process


@dataclass(frozen=True)
class Command:
    """How to start a service's process."""

    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    user: str | None = None  # run as this system user (a server that refuses root)


@dataclass(frozen=True)
class ServiceStatus:
    """One service as ``status`` sees it."""

    name: str
    running: bool
    healthy: bool
    pid: int | None
    address: str
    detail: str


class Service(abc.ABC):
    """A local service: installed once into the cache, run as one background process."""

    name: str
    title: str
    start_timeout: float = 60.0
    stop_timeout: float = 15.0

    @abc.abstractmethod
    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        """The loopback ports it listens on, each with the env var that changes it."""

    @abc.abstractmethod
    def address(self, settings: Settings) -> str:
        """Where clients reach it."""

    def install(self, settings: Settings) -> None:  # noqa: B027 - optional step
        """Make the program available (idempotent; cached under ``settings.cache_dir``)."""

    def prepare(self, settings: Settings) -> None:  # noqa: B027 - optional step
        """Write config files and initialise data under ``settings.state_dir`` (idempotent)."""

    @abc.abstractmethod
    def command(self, settings: Settings) -> Command:
        """The process to start."""

    @abc.abstractmethod
    def check(self, settings: Settings, timeout: float) -> str:
        """One health probe: return a short detail when healthy, raise otherwise."""

    def after_start(self, settings: Settings) -> None:  # noqa: B027 - optional step
        """Run once it is healthy (e.g. create the bucket); must be idempotent."""

    def data_dir(self, settings: Settings) -> Path:
        return settings.state_dir.resolve() / self.name

    def wait_healthy(self, settings: Settings, pid: int | None, timeout: float) -> str:
        """Poll ``check`` until it passes or ``timeout`` s pass; fail fast when ``pid`` dies."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while True:
            if pid is not None and not process.is_alive(pid):
                raise ServiceUnavailable(
                    f"{self.name} exited during start-up; see "
                    f"{process.log_file(settings, self.name)}:\n"
                    f"{tail(process.log_file(settings, self.name))}"
                )
            remaining = deadline - time.monotonic()
            try:
                return self.check(settings, timeout=max(0.5, min(3.0, remaining)))
            except Exception as exc:  # noqa: BLE001 - any probe failure means "not yet"
                last = exc
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(
                    f"{self.name} on {self.address(settings)} not healthy after {timeout:.0f} s "
                    f"({type(last).__name__}: {last}); see {process.log_file(settings, self.name)}"
                ) from last
            time.sleep(0.2)  # poll interval of the deadline loop


def apt_install(package: str, found: Callable[[], object], hint: str) -> None:
    """Install Debian's ``package`` unless ``found()`` already finds its program (root only;
    ``apt-get update`` and a retry when the package lists are stale)."""
    if found():
        return
    what = f"{package} is not installed; {hint}"
    if os.geteuid() != 0:
        raise ConfigurationError(what)
    apt = programs.require("apt-get", f"this is not a Debian-like system; {hint}")
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    say(f"installing {package} from Debian's packages (apt-get)…")
    argv = [apt, "install", "-y", "--no-install-recommends", package]
    try:
        programs.run(argv, f"apt-get install {package}", env=env)
    except ConfigurationError:
        say("apt-get install failed; running apt-get update and retrying…")
        programs.run([apt, "update"], "apt-get update", env=env)
        programs.run(argv, f"apt-get install {package}", env=env)
    if not found():
        raise ConfigurationError(f"{package} still not found after apt-get; {hint}")
