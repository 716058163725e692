"""What is written to the document store holds no NUL character (PostgreSQL under FerretDB
refuses it): every string inside a document, filter or update has it replaced, nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chatbus.history.storable import StorableCollection, storable


def test_every_string_inside_loses_its_nul_and_nothing_else_changes() -> None:
    when = datetime(2026, 12, 2, tzinfo=UTC)
    doc = {
        "_id": "a\x00b",
        "n": 3,
        "when": when,
        "messages": [{"content": "x\x00\x00y", "role": "user"}],
        "pair": ("k\x00", 1),
        "key\x00": None,
    }
    assert storable(doc) == {
        "_id": "a\ufffdb",
        "n": 3,
        "when": when,
        "messages": [{"content": "x\ufffd\ufffdy", "role": "user"}],
        "pair": ("k\ufffd", 1),
        "key\ufffd": None,
    }
    clean = "no nul here"
    assert storable(clean) is clean


def test_a_collection_passes_every_argument_through_it() -> None:
    calls: list[tuple[Any, ...]] = []

    class Recording:
        name = "turns"

        def update_one(self, selector: Any, update: Any, upsert: bool = False) -> str:
            calls.append((selector, update, upsert))
            return "result"

    collection = StorableCollection(Recording())
    assert collection.name == "turns"
    assert collection.update_one({"_id": "r\x00"}, {"$set": {"t": "\x00"}}, upsert=True) == "result"
    assert calls == [({"_id": "r\ufffd"}, {"$set": {"t": "\ufffd"}}, True)]
