"""When the history adds its lookup indexes beneath FerretDB, and when it leaves the store alone."""

from __future__ import annotations

from structlog.testing import capture_logs

from chatbus.history.ferretdb_lookup import ensure_lookup_indexes, index_name, is_ferretdb_v1
from chatbus.ports import free_port
from chatbus.settings import Settings

FERRETDB_1 = {"version": "7.0.42", "ferretdbVersion": "v1.24.2"}
LOOKUPS = {"turns": ("_id", "conversation_id")}


def settings_with(url: str) -> Settings:
    return Settings().replace(mongo_ferretdb_postgres_url=url)


def test_only_ferretdb_1_is_indexed_from_beneath() -> None:
    assert is_ferretdb_v1(FERRETDB_1)
    assert not is_ferretdb_v1({"version": "7.0.14"})  # MongoDB: it indexes _id itself
    assert not is_ferretdb_v1({"version": "7.0.77", "ferretdbVersion": "v2.1.0"})


def test_a_real_mongodb_or_an_empty_url_is_left_alone_without_connecting() -> None:
    unreachable = settings_with(f"postgresql://x@127.0.0.1:{free_port()}/ferretdb")
    with capture_logs() as logs:
        assert ensure_lookup_indexes(unreachable, {"version": "7.0.14"}, LOOKUPS) == []
        assert ensure_lookup_indexes(settings_with(""), FERRETDB_1, LOOKUPS) == []
    assert logs == []


def test_a_local_ferretdb_on_sqlite_is_left_alone() -> None:
    on_sqlite = Settings().replace(ferretdb_backend="sqlite", postgres_port=free_port())
    with capture_logs() as logs:
        assert ensure_lookup_indexes(on_sqlite, FERRETDB_1, LOOKUPS) == []
    assert logs == []


def test_a_postgresql_that_does_not_answer_is_a_warning_that_says_what_to_set() -> None:
    unreachable = settings_with(f"postgresql://x@127.0.0.1:{free_port()}/ferretdb")
    with capture_logs() as logs:
        assert ensure_lookup_indexes(unreachable, FERRETDB_1, LOOKUPS) == []
    (warning,) = [e for e in logs if e["event"] == "ferretdb_lookup_indexes_skipped"]
    assert warning["log_level"] == "warning"
    assert "CHATBUS_MONGO_FERRETDB_POSTGRES_URL" in warning["hint"]


def test_the_local_url_follows_the_local_postgresql_port() -> None:
    moved = Settings().replace(postgres_port=25432)
    assert moved.mongo.ferretdb_postgres_url.get_secret_value().endswith(":25432/ferretdb")


def test_index_names_fit_postgresql_and_keep_the_table_apart() -> None:
    long_table = "conversations_with_a_rather_long_collection_name_12345678_7550b62f"
    name = index_name(long_table, "conversation_id")
    assert len(name.encode()) <= 63
    assert name.endswith("_7550b62f_conversation_id_lookup")
    assert index_name("turns_c35ba42b", "_id") == "turns_c35ba42b__id_lookup"
