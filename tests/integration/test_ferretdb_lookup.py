"""The history's lookups use an index under FerretDB on the real PostgreSQL (ferretdb_lookup)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from chatbus.history import HistoryRepository
from chatbus.history.ferretdb_lookup import METADATA_TABLE, ensure_lookup_indexes, index_name
from chatbus.history.repository import CONVERSATIONS, LOOKUPS, TURNS
from chatbus.polling import poll_until
from chatbus.settings import Settings
from tests.conftest import mongo_database

pytestmark = [pytest.mark.integration]

STATS_DEADLINE_S = 30


@pytest.fixture
def settings(local_services: Settings) -> Iterator[Settings]:
    if local_services.local.ferretdb_backend != "postgresql":
        pytest.skip("FerretDB stores in SQLite here (CHATBUS_FERRETDB_BACKEND=sqlite)")
    settings = local_services.replace(mongo_db=f"lookup_{uuid.uuid4().hex[:10]}")
    yield settings
    with mongo_database(settings) as db:
        db.client.drop_database(db.name)


@pytest.fixture
def repository(settings: Settings) -> Iterator[HistoryRepository]:
    repo = HistoryRepository(settings)
    repo.ensure_indexes()
    yield repo
    repo.close()


def ferretdb_postgres(settings: Settings) -> psycopg.Connection[Any]:
    return psycopg.connect(
        settings.mongo.ferretdb_postgres_url.get_secret_value(), autocommit=True, connect_timeout=5
    )


def table_of(conn: psycopg.Connection[Any], schema: str, collection: str) -> str:
    row = conn.execute(
        sql.SQL("SELECT _jsonb->>'table' FROM {} WHERE _jsonb->>'_id' = %s").format(
            sql.Identifier(schema, METADATA_TABLE)
        ),
        (collection,),
    ).fetchone()
    assert row is not None, f"FerretDB has no table for {collection}"
    return str(row[0])


def scans(conn: psycopg.Connection[Any], schema: str, table: str) -> tuple[int, int]:
    """(sequential scans, index scans) of ``table`` so far, as PostgreSQL counts them."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute(
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables "
        "WHERE schemaname = %s AND relname = %s",
        (schema, table),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def scans_after(
    conn: psycopg.Connection[Any], schema: str, table: str, before: tuple[int, int], n: int
) -> tuple[int, int]:
    """The scans of ``table`` since ``before``, once ``n`` of them are counted (PostgreSQL
    publishes a session's counts within seconds, not at once)."""

    def counted() -> tuple[int, int] | None:
        seq, idx = scans(conn, schema, table)
        since = (seq - before[0], idx - before[1])
        return since if sum(since) >= n else None

    return poll_until(
        counted, timeout_s=STATS_DEADLINE_S, interval=0.2, what=f"{n} scans of {table} counted"
    )


def test_lookups_through_ferretdb_use_an_index_as_the_history_grows(
    settings: Settings, repository: HistoryRepository
) -> None:
    db = settings.mongo.db
    with mongo_database(settings) as mongo, ferretdb_postgres(settings) as conn:
        turns = mongo[TURNS]
        table = table_of(conn, db, TURNS)
        start = scans(conn, db, table)
        # FerretDB's prepared lookups are first planned while the table is small ...
        turns.insert_many([{"_id": f"r{i}", "conversation_id": "c0"} for i in range(5)])
        for i in range(10):
            turns.find_one({"_id": f"r{i % 5}"})
        early = scans_after(conn, db, table, start, 10)
        # ... and must still use the index once it has grown
        turns.insert_many(
            [{"_id": f"r{i}", "conversation_id": f"c{i % 97}"} for i in range(5, 2005)]
        )
        before = (start[0] + early[0], start[1] + early[1])
        for i in range(40):
            assert turns.find_one({"_id": f"r{i * 50}"}) is not None
            assert len(list(turns.find({"conversation_id": f"c{i}"}))) > 0
        seq, idx = scans_after(conn, db, table, before, 80)
    assert (seq, idx) == (0, 80), f"{seq} sequential and {idx} index scans for 80 lookups"


def test_creating_the_indexes_again_changes_nothing(
    settings: Settings, repository: HistoryRepository
) -> None:
    with mongo_database(settings) as mongo:
        build_info = mongo.client.admin.command("buildInfo")
    first = ensure_lookup_indexes(settings, build_info, LOOKUPS)
    again = ensure_lookup_indexes(settings, build_info, LOOKUPS)
    assert first == again
    assert len(first) == len(LOOKUPS[CONVERSATIONS]) + len(LOOKUPS[TURNS])  # uncounted: not yet


def test_a_collection_created_later_is_indexed_on_the_next_start(
    settings: Settings, repository: HistoryRepository
) -> None:
    with mongo_database(settings) as mongo:
        mongo["uncounted_turns"].insert_one({"_id": "c1", "turn_ids": ["r1"]})
    repository.ensure_indexes()
    with ferretdb_postgres(settings) as conn:
        table = table_of(conn, settings.mongo.db, "uncounted_turns")
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
            (settings.mongo.db, table),
        ).fetchall()
    assert index_name(table, "_id") in {name for (name,) in indexes}
