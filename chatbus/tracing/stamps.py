"""Per-hop wall-clock stamps of one request, carried in the ``chatbus-stamps`` Kafka header.

The header value is a comma-separated list of ``name=epoch-ms`` (milliseconds since the Unix epoch,
three decimals), one entry per hop event, e.g.::

    received=1732430000123.412,published=1732430000131.904,moderation_in=1732430000134.020

Each hop copies the stamps it received onto what it publishes and appends its own, so the first
token chunk reaching the client carries every stamp taken before it. Entries that do not parse are
dropped (a header never breaks a consumer); unknown names are kept, so a newer hop's stamps pass
through an older one unchanged.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from enum import StrEnum

STAMPS_HEADER = "chatbus-stamps"
_MAX_ENTRIES = 64  # a header is bounded whatever a producer sends


class Hop(StrEnum):
    """The stamps of one request, in the order they are taken."""

    RECEIVED = "received"  # the gateway got the HTTP request (SDK: send() called)
    PUBLISHED = "published"  # the request handed to the producer for chat.requests
    MODERATION_IN = "moderation_in"  # moderation's first agent took it from chat.requests
    MODERATION_OUT = "moderation_out"  # the approved copy handed to the producer
    WORKER_IN = "worker_in"  # the worker took it from its poll
    ADMITTED = "admitted"  # the worker handed it to the engine (prompt built)
    FIRST_TOKEN = "first_token"  # noqa: S105 - the engine produced the first token
    CHUNK_PUBLISHED = "chunk_published"  # the first chunk handed to the producer for chat.tokens
    CLIENT_IN = "client_in"  # the gateway's / SDK's reply reader took the first chunk
    DELIVERED = "delivered"  # first byte written to the HTTP client (SDK: yielded)


HOP_ORDER: tuple[Hop, ...] = tuple(Hop)


def now_ms() -> float:
    """The wall clock in epoch milliseconds (what every hop stamps; hosts' clocks must agree)."""
    return round(time.time() * 1000, 3)


def encode_stamps(stamps: Mapping[str, float]) -> bytes:
    return ",".join(f"{name}={value:.3f}" for name, value in stamps.items()).encode()


def decode_stamps(value: bytes | str | None) -> dict[str, float]:
    """The stamps of a header value; malformed entries are skipped."""
    if not value:
        return {}
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    stamps: dict[str, float] = {}
    for entry in text.split(",")[:_MAX_ENTRIES]:
        name, sep, raw = entry.strip().partition("=")
        if not sep or not name or len(name) > 64:
            continue
        try:
            stamp = float(raw)
        except ValueError:
            continue
        if stamp == stamp and stamp >= 0 and stamp != float("inf"):  # not NaN, not negative
            stamps[name] = stamp
    return stamps


def ordered(stamps: Mapping[str, float]) -> list[tuple[Hop, float]]:
    """The known stamps present in ``stamps``, in hop order."""
    return [(hop, stamps[hop]) for hop in HOP_ORDER if hop in stamps]


def out_of_order(stamps: Mapping[str, float]) -> list[tuple[Hop, Hop]]:
    """Consecutive present hops whose stamps go backwards (clock skew between hosts)."""
    present = ordered(stamps)
    return [(a, b) for (a, ta), (b, tb) in itertools.pairwise(present) if tb < ta]


def merge(into: dict[str, float], stamps: Iterable[tuple[str, float]]) -> None:
    """Add ``stamps`` that ``into`` lacks (a hop's own stamps win over copies)."""
    for name, value in stamps:
        into.setdefault(name, value)
