"""Which offsets may be committed: only up to the oldest request still in flight."""

from __future__ import annotations

from aiokafka.structs import TopicPartition


class OffsetTracker:
    """Tracks in-flight offsets per partition; commits never pass an unfinished request."""

    def __init__(self) -> None:
        self._inflight: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}  # one past the highest offset seen
        self._committed: dict[TopicPartition, int] = {}

    def started(self, tp: TopicPartition, offset: int) -> None:
        self._inflight.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        self._inflight.get(tp, set()).discard(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Partition → offset to commit, for partitions that moved since the last commit."""
        out: dict[TopicPartition, int] = {}
        for tp, nxt in self._next.items():
            pending = self._inflight.get(tp)
            offset = min(pending) if pending else nxt
            if offset > self._committed.get(tp, -1):
                out[tp] = offset
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: set[TopicPartition]) -> None:
        """Partitions revoked from this worker."""
        for tp in tps:
            self._inflight.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    @property
    def inflight(self) -> int:
        return sum(len(s) for s in self._inflight.values())
