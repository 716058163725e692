"""Which partitions a consumer fetches: paused while any reason or hold applies, else resumed."""

from __future__ import annotations

from aiokafka.structs import TopicPartition

from chatbus.kafka.pausing import PauseGate

A, B, C = (TopicPartition("chat.requests", p) for p in range(3))


class Partitions:
    """The assignment and pause state of a consumer, as the gate sees it (pure bookkeeping)."""

    def __init__(self, *assigned: TopicPartition) -> None:
        self.assigned = set(assigned)
        self.paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, *partitions: TopicPartition) -> None:
        assert set(partitions) <= self.assigned, "only assigned partitions can be paused"
        self.paused |= set(partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        assert set(partitions) <= self.assigned, "only assigned partitions can be resumed"
        self.paused -= set(partitions)


def test_back_pressure_pauses_every_partition_until_its_reason_goes() -> None:
    consumer = Partitions(A, B)
    gate = PauseGate(consumer)
    assert gate.pause_all("no capacity")
    assert consumer.paused == {A, B}
    assert not gate.pause_all("no capacity"), "already paused for that reason"
    assert gate.resume_all("no capacity")
    assert consumer.paused == set()
    assert not gate.resume_all("no capacity")


def test_partitions_stay_paused_while_any_reason_holds() -> None:
    consumer = Partitions(A, B)
    gate = PauseGate(consumer)
    gate.pause_all("no capacity")
    gate.pause_all("object store unavailable")
    gate.resume_all("no capacity")
    assert consumer.paused == {A, B}
    assert gate.reasons == {"object store unavailable"}
    gate.resume_all("object store unavailable")
    assert consumer.paused == set()


def test_pauses_count_each_time_fetching_stopped_not_each_reason() -> None:
    gate = PauseGate(Partitions(A))
    gate.pause_all("no capacity")
    gate.pause_all("stopping")
    assert gate.pauses == 1
    gate.resume_all("no capacity")
    gate.resume_all("stopping")
    gate.pause_all("no capacity")
    assert gate.pauses == 2


def test_a_held_partition_stays_paused_when_back_pressure_ends() -> None:
    consumer = Partitions(A, B)
    gate = PauseGate(consumer)
    gate.hold([A])
    assert consumer.paused == {A}
    gate.pause_all("object store unavailable")
    gate.resume_all("object store unavailable")
    assert consumer.paused == {A}
    gate.release([A])
    assert consumer.paused == set()


def test_a_partition_assigned_during_back_pressure_is_paused_too() -> None:
    consumer = Partitions(A)
    gate = PauseGate(consumer)
    gate.pause_all("no capacity")
    consumer.assigned.add(C)  # a rebalance gave this member another partition
    gate.apply()
    assert consumer.paused == {A, C}


def test_a_revoked_partition_is_forgotten() -> None:
    consumer = Partitions(A, B)
    gate = PauseGate(consumer)
    gate.hold([B])
    consumer.assigned.discard(B)
    gate.forget([B])
    consumer.assigned.add(B)  # assigned again later: fetched, not held from before
    gate.apply()
    assert consumer.paused == set() and not gate.is_held(B)
