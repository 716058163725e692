"""An injectable clock for unit tests."""

from __future__ import annotations


class Clock:
    """Monotonic seconds that move only when the test says so (set ``now``)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
