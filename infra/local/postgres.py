"""PostgreSQL from Debian's packages, run as our own server on its own port and data folder.

The cluster is initialised under ``.chatbus/postgres/data`` (``initdb``, superuser ``chatbus``,
``trust`` authentication on loopback only: it listens on 127.0.0.1 and on no Unix socket). Once
it answers, the ``chatbus`` database is created if missing and migrated to the newest schema
(:mod:`chatbus.accounts.migrate`), so ``make up`` leaves it ready.

PostgreSQL refuses to run as root. Run as root (a container, CI), the server runs as the
``postgres`` system user that Debian's package creates; when that user cannot reach the checkout
(a clone in a private ``mktemp -d`` folder), the data folder lives in
``/var/lib/chatbus/postgres/<hash of the state folder>`` instead, and ``.chatbus/postgres/data``
is a link to it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from chatbus import ports
from chatbus.console import say
from chatbus.errors import ConfigurationError
from chatbus.settings import Settings
from infra.local.service import Command, Service, apt_install

INSTALL_HINT = "install it with: sudo apt-get install -y postgresql"
SERVER_USER = "postgres"  # the system user Debian's package creates
SUPERUSER = "chatbus"
DATABASE = "chatbus"
OUTSIDE_ROOT = Path("/var/lib/chatbus/postgres")


def find_bindir() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


def _as_root() -> bool:
    return os.geteuid() == 0


def _reachable_by(user: str, path: Path) -> bool:
    """Whether ``user`` can enter ``path`` (every folder above it must let it through)."""
    probe = subprocess.run(
        ["test", "-x", str(path)],
        user=user,
        group=pwd.getpwnam(user).pw_gid,
        extra_groups=[],
        check=False,
    )
    return probe.returncode == 0


class Postgres(Service):
    name = "postgres"
    title = "PostgreSQL"
    start_timeout = 40.0
    stop_timeout = 15.0

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        return [(settings.local.postgres_port, "CHATBUS_POSTGRES_PORT")]

    def address(self, settings: Settings) -> str:
        return f"{ports.HOST}:{settings.local.postgres_port}"

    def install(self, settings: Settings) -> None:
        apt_install("postgresql", find_bindir, INSTALL_HINT)

    def _user(self) -> str | None:
        """The system user the server runs as (None: this process's own)."""
        if not _as_root():
            return None
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise ConfigurationError(
                f"running as root, PostgreSQL needs the system user {SERVER_USER!r} (Debian's "
                f"package creates it); {INSTALL_HINT}, or run as a normal user"
            ) from None
        return SERVER_USER

    def cluster_dir(self, settings: Settings) -> Path:
        return self.data_dir(settings) / "data"

    def prepare(self, settings: Settings) -> None:
        base = self.data_dir(settings)
        base.mkdir(parents=True, exist_ok=True)
        data = self.cluster_dir(settings)
        user = self._user()
        if user is not None and not data.exists() and not _reachable_by(user, base):
            outside = OUTSIDE_ROOT / hashlib.sha256(str(base).encode()).hexdigest()[:16]
            outside.mkdir(parents=True, exist_ok=True)
            data.symlink_to(outside, target_is_directory=True)
            say(f"postgres: {user} cannot reach {base}; its data lives in {outside} (linked)")
        target = data.resolve()
        if (target / "PG_VERSION").exists():
            return
        target.mkdir(parents=True, exist_ok=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(target, entry.pw_uid, entry.pw_gid)
        target.chmod(0o700)
        bindir = find_bindir()
        if bindir is None:
            raise ConfigurationError(f"PostgreSQL is not installed; {INSTALL_HINT}")
        say("postgres: initialising a new cluster (initdb)…")
        init = [
            str(bindir / "initdb"),
            "--pgdata",
            str(target),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--no-locale",
            "--no-sync",  # a new, empty cluster: nothing to lose before the server starts
        ]
        done = subprocess.run(
            init,
            user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd=str(target),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise ConfigurationError(
                f"initdb failed (exit {done.returncode}):\n{done.stdout[-2000:]}"
                f"{done.stderr[-2000:]}"
            )

    def remove_data(self, settings: Settings) -> None:
        """Delete the cluster's data (stopped first), wherever it lives."""
        data = self.cluster_dir(settings)
        if data.is_symlink():
            shutil.rmtree(data.resolve(), ignore_errors=True)
            data.unlink()
        shutil.rmtree(data, ignore_errors=True)

    def command(self, settings: Settings) -> Command:
        bindir = find_bindir()
        if bindir is None:
            raise ConfigurationError(f"PostgreSQL is not installed; {INSTALL_HINT}")
        data = self.cluster_dir(settings).resolve()
        options = {
            "listen_addresses": ports.HOST,
            "port": str(settings.local.postgres_port),
            "unix_socket_directories": "",  # TCP on loopback only
            "max_connections": "300",  # each gateway, ledger and test holds a small pool
            "shared_buffers": "64MB",
            "logging_collector": "off",  # logs go to stderr: the service's log file
            "log_min_messages": "warning",
        }
        argv = [str(bindir / "postgres"), "-D", str(data)]
        for name, value in options.items():
            argv += ["-c", f"{name}={value}"]
        return Command(argv=argv, cwd=data, user=self._user())

    def check(self, settings: Settings, timeout: float) -> str:
        import psycopg

        with psycopg.connect(
            self.local_url(settings, "postgres"), connect_timeout=max(1, int(timeout))
        ) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return f"postgres {row[0] if row else '?'}, SELECT ok"

    def local_url(self, settings: Settings, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@{ports.HOST}:{settings.local.postgres_port}/{database}"

    def create_database(self, settings: Settings, database: str) -> None:
        """Create ``database`` on the local server unless it exists (idempotent)."""
        import psycopg

        with psycopg.connect(
            self.local_url(settings, "postgres"), autocommit=True, connect_timeout=5
        ) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            if not exists:
                try:
                    conn.execute(f'CREATE DATABASE "{database}"')
                except psycopg.errors.DuplicateDatabase:
                    pass  # created by a concurrent `up` meanwhile

    def after_start(self, settings: Settings) -> None:
        """Create the ``chatbus`` database when missing and migrate it to the newest schema."""
        from chatbus.accounts.migrate import upgrade

        self.create_database(settings, DATABASE)
        upgrade(settings, database_url=self.local_url(settings))
