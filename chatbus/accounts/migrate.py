"""The accounts database's schema, migrated by Alembic (``chatbus db upgrade``).

The migrations live in ``chatbus/accounts/migrations/versions``; Alembic is configured here, in
code, so no ``alembic.ini`` has to be found: ``upgrade`` takes the database from the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from chatbus.accounts.database import postgres_errors, url
from chatbus.settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def sqlalchemy_url(libpq_url: str) -> str:
    """SQLAlchemy's name for a libpq URL, on the psycopg 3 driver."""
    scheme, sep, rest = libpq_url.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+psycopg"}:
        raise ValueError(f"not a PostgreSQL URL: {libpq_url!r} (postgresql://user@host:port/db)")
    return f"postgresql+psycopg://{rest}"


def config(database_url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head", *, database_url: str | None = None) -> str:
    """Migrate the database to ``revision`` (the newest by default); returns where it is now."""
    from alembic import command

    target = database_url or url(settings)
    with postgres_errors("migrate the accounts schema"):
        command.upgrade(config(target), revision)
    return current(settings, database_url=target) or "base"


def current(settings: Settings, *, database_url: str | None = None) -> str | None:
    """The revision the database is at (None: never migrated)."""
    import sqlalchemy
    from alembic.runtime.migration import MigrationContext

    engine = sqlalchemy.create_engine(
        sqlalchemy_url(database_url or url(settings)), poolclass=sqlalchemy.NullPool
    )
    try:
        with postgres_errors("read the schema revision"), engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def head() -> str | None:
    """The newest revision the code knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(config("postgresql://x@localhost/x")).get_current_head()
