"""Text every document store can hold: U+0000 is written, and looked up, as U+FFFD.

PostgreSQL, which holds FerretDB's data, cannot store the NUL character in text or jsonb
(``unsupported Unicode escape sequence``, SQLSTATE 22P05). One NUL in a chat message made every
write of its turn fail, and the history agent retried that write for ever, holding its partition
(`make fuzz` found it through a conversation's title). A real MongoDB stores NUL; replacing it on
every backend keeps what is stored, and what a lookup matches, the same everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

NUL, REPLACEMENT = "\x00", "\ufffd"


def storable(value: Any) -> Any:
    """``value`` with NUL replaced in every string inside it (keys included); other values are
    returned as they are."""
    if isinstance(value, str):
        return value.replace(NUL, REPLACEMENT) if NUL in value else value
    if isinstance(value, Mapping):
        return {storable(key): storable(item) for key, item in value.items()}
    if type(value) is list:  # exactly: pymongo's own tuples (options, requests) pass as they are
        return [storable(item) for item in value]
    if type(value) is tuple:
        return tuple(storable(item) for item in value)
    return value


class StorableCollection:
    """A pymongo collection (blocking or asyncio) whose every method gets its arguments —
    documents, filters, updates — through :func:`storable`; results come back untouched."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        if name in ("_collection", "bulk_write", "with_options"):  # not made storable: refused
            raise AttributeError(f"{type(self).__name__} has no {name!r}")
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute
        method: Callable[..., Any] = attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return method(
                *(storable(arg) for arg in args),
                **{key: storable(arg) for key, arg in kwargs.items()},
            )

        return call
