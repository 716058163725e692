"""Offsets are committed only past requests that are finished."""

from __future__ import annotations

from aiokafka.structs import TopicPartition

from inference_consumers.offsets import OffsetTracker

TP = TopicPartition("chat.requests", 0)


def test_commit_never_passes_the_oldest_unfinished_request() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.started(TP, offset)
    tracker.finished(TP, 11)
    tracker.finished(TP, 12)
    assert tracker.committable() == {TP: 10}
    tracker.mark_committed({TP: 10})
    assert tracker.committable() == {}
    tracker.finished(TP, 10)
    assert tracker.committable() == {TP: 13}


def test_revoked_partitions_are_forgotten() -> None:
    tracker = OffsetTracker()
    tracker.started(TP, 1)
    tracker.forget({TP})
    assert tracker.committable() == {} and tracker.inflight == 0
