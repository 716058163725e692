"""FerretDB v1.x (MongoDB wire protocol), built from its Go module at an exact version.

Its documents live in the local PostgreSQL (database ``ferretdb``, the default) or in SQLite files
under ``.chatbus/ferretdb/data`` (``CHATBUS_FERRETDB_BACKEND=sqlite``). On PostgreSQL it waits for
that server to answer before it starts (both start together under ``make up``), and its database
plans each statement with its parameters, so that the lookup indexes of
:mod:`chatbus.history.ferretdb_lookup` serve FerretDB's prepared statements.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import structlog

from chatbus import ports, programs
from chatbus.console import say
from chatbus.errors import ServiceUnavailable
from chatbus.history.ferretdb_lookup import keep_custom_plans
from chatbus.settings import Settings
from infra.local.postgres import Postgres
from infra.local.service import Command, Service

log = structlog.get_logger(__name__)

MODULE = "github.com/FerretDB/FerretDB"
PACKAGE = f"{MODULE}/cmd/ferretdb"
GO_MOD = Path(__file__).parent / "ferretdb" / "go.mod"
PG_DATABASE = "ferretdb"
GO_HINT = "install Go 1.24 or newer (https://go.dev/dl/, or Debian's golang-go if recent enough)"


def binary(settings: Settings) -> Path:
    return settings.cache_dir.expanduser().resolve() / "bin" / "ferretdb"


def module_dir(settings: Settings) -> Path:
    """The Go module (a copy of infra/local/ferretdb/go.mod) that pins FerretDB as a tool."""
    return settings.cache_dir.expanduser().resolve() / "go"


class FerretDB(Service):
    name = "ferretdb"
    title = "FerretDB"
    start_timeout = 30.0
    stop_timeout = 10.0

    def ports(self, settings: Settings) -> list[tuple[int, str]]:
        return [(settings.local.mongo_port, "CHATBUS_MONGO_PORT")]

    def address(self, settings: Settings) -> str:
        return f"{ports.HOST}:{settings.local.mongo_port}"

    def install(self, settings: Settings) -> None:
        version = settings.local.ferretdb_version
        target = binary(settings)
        marker = target.with_name("ferretdb.version")
        if target.exists() and programs.marker_ok(marker, version):
            return
        go = programs.require("go", GO_HINT)
        say(f"building FerretDB {version} from its Go module (a minute or two)…")
        mod = module_dir(settings)
        mod.mkdir(parents=True, exist_ok=True)
        if not (mod / "go.mod").exists():
            shutil.copyfile(GO_MOD, mod / "go.mod")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Go's module and build caches for this one build live in a scratch folder that is removed
        # afterwards: they peak at ~1 GB that nothing needs once the binary exists.
        with tempfile.TemporaryDirectory(prefix="ferretdb-build-", dir=target.parent.parent) as tmp:
            scratch = Path(tmp)
            env = {
                "GOFLAGS": "-mod=mod",
                "CGO_ENABLED": "0",
                "GOMODCACHE": str(scratch / "mod"),
                "GOCACHE": str(scratch / "build"),
            }
            try:
                _build(go, version, mod, scratch / "src", target, env)
            finally:
                # module cache files are read-only; `go clean -modcache` is how Go removes them
                subprocess.run(
                    [go, "clean", "-modcache"],
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
        programs.write_marker(marker, version)

    def prepare(self, settings: Settings) -> None:
        (self.data_dir(settings) / "data").mkdir(parents=True, exist_ok=True)
        if settings.local.ferretdb_backend == "postgresql":
            postgres = Postgres()
            try:
                postgres.wait_healthy(settings, None, timeout=postgres.start_timeout)
            except ServiceUnavailable as exc:
                raise ServiceUnavailable(
                    f"FerretDB keeps its documents in PostgreSQL, which does not answer: {exc}; "
                    "start it (`python -m infra.local up postgres`) or set "
                    "CHATBUS_FERRETDB_BACKEND=sqlite"
                ) from exc
            postgres.create_database(settings, PG_DATABASE)
            with psycopg.connect(
                postgres.local_url(settings, PG_DATABASE), autocommit=True, connect_timeout=5
            ) as conn:
                keep_custom_plans(conn)  # before FerretDB connects: see ferretdb_lookup

    def _backend(self, settings: Settings) -> list[str]:
        if settings.local.ferretdb_backend == "postgresql":
            return [
                "--handler=postgresql",
                f"--postgresql-url={Postgres().local_url(settings, PG_DATABASE)}",
            ]
        return ["--handler=sqlite", f"--sqlite-url=file:{self.data_dir(settings) / 'data'}/"]

    def command(self, settings: Settings) -> Command:
        base = self.data_dir(settings)
        return Command(
            argv=[
                str(binary(settings)),
                *self._backend(settings),
                f"--listen-addr={ports.HOST}:{settings.local.mongo_port}",
                f"--state-dir={base}",
                "--debug-addr=-",  # no debug HTTP listener
                "--telemetry=disable",
                "--log-level=info",
            ],
            env={"FERRETDB_TELEMETRY": "disable"},
            cwd=base,
        )

    def check(self, settings: Settings, timeout: float) -> str:
        from pymongo import MongoClient

        ms = int(timeout * 1000)
        client: MongoClient[dict[str, object]] = MongoClient(
            f"mongodb://{self.address(settings)}/",
            directConnection=True,
            serverSelectionTimeoutMS=ms,
            connectTimeoutMS=ms,
            socketTimeoutMS=ms,
        )
        try:
            client.admin.command("ping")
            info = client.server_info()
            version = info.get("ferretdbVersion") or info.get("version", "?")
        finally:
            client.close()
        return f"ferretdb {version}, ping ok"


def _build(go: str, version: str, mod: Path, src: Path, target: Path, env: dict[str, str]) -> None:
    """Fetch FerretDB ``version`` as a Go tool of module ``mod`` and build it into ``target``."""
    programs.run(
        [go, "get", "-tool", f"{PACKAGE}@{version}"],
        f"go get {PACKAGE}@{version}",
        cwd=mod,
        env=env,
    )
    src_in_cache = (
        programs.run(
            [go, "list", "-m", "-f", "{{.Dir}}", MODULE], "go list FerretDB", cwd=mod, env=env
        )
        .strip()
        .splitlines()[-1]
    )
    # `go install` of the tool builds a binary that panics at start ("Invalid
    # build/version/version.txt"): FerretDB embeds its version from a generated file that
    # the published module lacks. So build from a writable copy of the module with that file.
    shutil.copytree(src_in_cache, src)
    for path in [src, *src.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    (src / "build" / "version" / "version.txt").write_text(version + "\n")
    tmp = target.with_name("ferretdb.tmp")
    programs.run(
        [go, "build", "-trimpath", "-buildvcs=false", "-o", str(tmp), "./cmd/ferretdb"],
        f"go build FerretDB {version}",
        cwd=src,
        env=env,
    )
    out = programs.run([str(tmp), "--version"], "ferretdb --version")
    if f"version: {version}" not in out:
        raise ServiceUnavailable(f"built ferretdb reports an unexpected version:\n{out}")
    tmp.replace(target)
