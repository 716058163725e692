"""``chatbus db upgrade|current``: the accounts database's schema (Alembic)."""

from __future__ import annotations

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.group()
def db() -> None:
    """The PostgreSQL schema of accounts, keys and the usage ledger (CHATBUS_POSTGRES_URL)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def db_upgrade(revision: str) -> None:
    """Migrate the database to the newest schema (`make up` does this for the local one)."""
    from chatbus.accounts.migrate import upgrade

    try:
        now = upgrade(common.settings(), revision)
    except ChatbusError as exc:
        common.fail(exc)
    click.echo(f"accounts schema at revision {now}")


@db.command("current")
def db_current() -> None:
    """The revision the database is at, and the newest this code knows."""
    from chatbus.accounts.migrate import current, head

    try:
        at = current(common.settings())
    except ChatbusError as exc:
        common.fail(exc)
    newest = head()
    click.echo(f"database at {at or 'nothing (run `chatbus db upgrade`)'}; newest {newest}")
    if at != newest:
        raise SystemExit(1)
