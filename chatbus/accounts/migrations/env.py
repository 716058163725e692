"""Alembic's environment for the accounts database (configured by chatbus.accounts.migrate)."""

from __future__ import annotations

import sqlalchemy
from alembic import context

LOCK = sqlalchemy.text("SELECT pg_advisory_lock(7411025)")  # one migrator at a time
UNLOCK = sqlalchemy.text("SELECT pg_advisory_unlock(7411025)")

engine = sqlalchemy.create_engine(
    str(context.config.get_main_option("sqlalchemy.url")), poolclass=sqlalchemy.NullPool
)
with engine.connect() as connection:
    connection.execute(LOCK)
    connection.commit()
    try:
        context.configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
    finally:
        connection.execute(UNLOCK)
        connection.commit()
engine.dispose()
