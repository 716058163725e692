"""Short human progress lines on stderr (structured logs go through structlog separately)."""

from __future__ import annotations

import sys
import threading

_lock = threading.Lock()


def say(message: str) -> None:
    """Print one progress line to stderr (whole lines, also from worker threads)."""
    with _lock:
        print(message, file=sys.stderr, flush=True)
