"""Indexes that let FerretDB v1 on PostgreSQL find one document without reading them all.

FerretDB v1 keeps each collection as a PostgreSQL table of one ``jsonb`` column and passes an
equality filter down as ``_jsonb->'field' @> '"value"'``. The indexes it creates itself (that of
``_id`` too) are B-trees on ``(_jsonb->'field')``, which PostgreSQL cannot use for ``@>``: every
``find_one`` by ``_id``, and every update (FerretDB reads the document before it writes it), scans
the whole table. Its cost grows with the collection: ``benchmarks.history_lookup`` measures it.

A GIN index (``jsonb_path_ops``) on the same expression does serve ``@>``. This module creates one
per field the history filters on by equality, from PostgreSQL, in the table FerretDB's metadata
names for the collection. FerretDB does not know of them (``listIndexes`` does not show them);
they go with the table when the collection is dropped. On a collection that is already large,
the first start builds them while writes to it wait (``CREATE INDEX``, not ``CONCURRENTLY``: a
concurrent build that fails leaves an invalid index that ``IF NOT EXISTS`` would then keep).

An index alone is not enough: FerretDB prepares its statements with the field as a parameter
(``_jsonb->$1 @> $2``), and after five runs of a prepared statement PostgreSQL may keep a generic
plan, one made without the field's name, which cannot match an index on ``_jsonb->'_id'``. It does
so whenever the generic plan looks no dearer, as it does while a table is small. The database
FerretDB stores in therefore gets ``plan_cache_mode = force_custom_plan``
(:func:`keep_custom_plans`): ``make up`` sets it before FerretDB connects; set here later, it
reaches FerretDB's connections only once FerretDB reconnects (a warning says to restart it).

Nothing is done when the server is not FerretDB 1.x (a real MongoDB indexes ``_id`` itself) or
``mongo.ferretdb_postgres_url`` is empty. When the URL does not reach the PostgreSQL FerretDB
stores in, a warning says so and the history still works, only slower.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from chatbus.logging import get_logger
from chatbus.settings import Settings

log = get_logger(__name__)

METADATA_TABLE = "_ferretdb_database_metadata"  # FerretDB v1: collection name -> table
CONNECT_TIMEOUT_S = 5


def is_ferretdb_v1(build_info: Mapping[str, Any]) -> bool:
    """Whether ``buildInfo`` comes from FerretDB 1.x (it adds ``ferretdbVersion``)."""
    return str(build_info.get("ferretdbVersion", "")).startswith("v1.")


def index_name(table: str, field: str) -> str:
    """``<table>_<field>_lookup`` within PostgreSQL's 63 bytes: a long table name loses its
    middle, not the hash FerretDB ends it with (``_7550b62f``), so two tables never share one."""
    suffix = f"_{field.replace('.', '_')}_lookup"
    room = 63 - len(suffix)
    head = table if len(table) <= room else table[: room - 9] + table[-9:]
    return f"{head}{suffix}"


def ensure_lookup_indexes(
    settings: Settings, build_info: Mapping[str, Any], lookups: Mapping[str, Sequence[str]]
) -> list[str]:
    """Create the GIN lookup index of each ``collection: fields`` of ``lookups`` that FerretDB
    has a table for in ``settings.mongo.db``; returns the names of those now present.

    Idempotent and safe to run from several processes at once. Never raises for PostgreSQL: a
    store that cannot be reached or is not FerretDB's is logged and skipped."""
    url = settings.mongo.ferretdb_postgres_url.get_secret_value()
    if not url or not is_ferretdb_v1(build_info) or _local_ferretdb_on_sqlite(settings, url):
        return []
    schema = settings.mongo.db
    present: list[str] = []
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
            rows = conn.execute(
                sql.SQL("SELECT _jsonb->>'_id', _jsonb->>'table' FROM {}").format(
                    sql.Identifier(schema, METADATA_TABLE)
                )
            ).fetchall()
            tables = {str(name): str(table) for name, table in rows}
            _keep_custom_plans_or_warn(conn)
            for collection, fields in lookups.items():
                table = tables.get(collection)
                if table is None:
                    continue  # not created yet; the next start indexes it
                for field in fields:
                    name = index_name(table, field)
                    _create(conn, schema, table, field, name)
                    present.append(name)
    except psycopg.errors.UndefinedTable:
        log.info(
            "ferretdb_lookup_indexes_skipped",
            reason=f"no FerretDB metadata for database {schema!r} in this PostgreSQL",
            hint="FerretDB stores elsewhere (SQLite, another server); set "
            "CHATBUS_MONGO_FERRETDB_POSTGRES_URL to its PostgreSQL, or to nothing to skip this",
        )
        return []
    except psycopg.Error as exc:
        log.warning(
            "ferretdb_lookup_indexes_skipped",
            reason=str(exc).strip(),
            hint="every lookup by _id scans its collection until this works: set "
            "CHATBUS_MONGO_FERRETDB_POSTGRES_URL to the PostgreSQL FerretDB stores in "
            "(or to nothing when the store is not FerretDB on PostgreSQL)",
        )
        return []
    if present:
        log.info("ferretdb_lookup_indexes", database=schema, indexes=len(present))
    return present


def keep_custom_plans(conn: psycopg.Connection[Any]) -> bool:
    """Make the connected database plan every statement with its parameters (see above); True
    when this changed it (sessions opened before keep their setting)."""
    current = conn.execute(
        "SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
        "WHERE d.datname = current_database() AND s.setrole = 0"
    ).fetchone()
    if current and "plan_cache_mode=force_custom_plan" in (current[0] or []):
        return False
    database = conn.execute("SELECT current_database()").fetchone()
    assert database is not None
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET plan_cache_mode = force_custom_plan").format(
            sql.Identifier(str(database[0]))
        )
    )
    return True


def _local_ferretdb_on_sqlite(settings: Settings, url: str) -> bool:
    """The local FerretDB of ``make up`` keeps SQLite files: the local PostgreSQL holds none of
    its tables (CHATBUS_FERRETDB_BACKEND=sqlite)."""
    parts = urlsplit(url)
    local = (
        parts.hostname in ("127.0.0.1", "localhost") and parts.port == settings.local.postgres_port
    )
    return settings.local.ferretdb_backend == "sqlite" and local


def _keep_custom_plans_or_warn(conn: psycopg.Connection[Any]) -> None:
    try:
        changed = keep_custom_plans(conn)
    except psycopg.errors.InsufficientPrivilege:
        log.warning(
            "ferretdb_plan_cache_mode_not_set",
            detail="FerretDB's prepared lookups may keep plans that skip the lookup indexes",
            hint="as the database's owner: ALTER DATABASE <FerretDB's database> "
            "SET plan_cache_mode = force_custom_plan; then restart FerretDB",
        )
        return
    if changed:
        log.warning(
            "ferretdb_plan_cache_mode_set",
            detail="lookups use their indexes once FerretDB opens new connections",
            hint="restart FerretDB",
        )


def _create(conn: psycopg.Connection[Any], schema: str, table: str, field: str, name: str) -> None:
    statement = sql.SQL(
        "CREATE INDEX IF NOT EXISTS {} ON {} USING gin ((_jsonb->{}) jsonb_path_ops)"
    ).format(sql.Identifier(name), sql.Identifier(schema, table), sql.Literal(field))
    try:
        conn.execute(statement)
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
        pass  # another process created it between the check and the insert of its name
