"""One partition's records waiting to be archived, and when they are due."""

from __future__ import annotations

import gzip
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class PartitionBatch:
    """JSON lines of consecutive offsets of one partition."""

    topic: str  # registry name (no deployment prefix)
    partition: int
    lines: list[bytes] = field(default_factory=list)
    first_offset: int = -1
    last_offset: int = -1
    first_timestamp_ms: int = 0
    size: int = 0
    opened_at: float = 0.0

    def add(self, offset: int, timestamp_ms: int, record: dict[str, Any]) -> int:
        """Append ``record`` (the next offset's line); returns its index."""
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        if not self.lines:
            self.first_offset, self.first_timestamp_ms = offset, timestamp_ms
            self.opened_at = time.monotonic()
        self.lines.append(line)
        self.last_offset = offset
        self.size += len(line)
        return len(self.lines) - 1

    def replace(self, index: int, record: dict[str, Any]) -> None:
        """Write line ``index`` again from ``record`` (redaction that later lines revealed)."""
        line = orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
        self.size += len(line) - len(self.lines[index])
        self.lines[index] = line

    def __len__(self) -> int:
        return len(self.lines)

    def due(self, *, max_bytes: int, max_age_s: float, now: float | None = None) -> bool:
        """Full, or its oldest record has waited long enough."""
        if not self.lines:
            return False
        now = time.monotonic() if now is None else now
        return self.size >= max_bytes or now - self.opened_at >= max_age_s


def compress(lines: list[bytes]) -> tuple[bytes, str]:
    """The gzip object of ``lines`` (mtime 0: the same lines always give the same bytes) and its
    sha256."""
    body = gzip.compress(b"".join(lines), compresslevel=5, mtime=0)
    return body, hashlib.sha256(body).hexdigest()
