"""Which assigned partitions a consumer fetches, and why not: pause/resume by reason.

Back-pressure pauses every assigned partition for a reason (no free slot, the store is down, the
consumer is stopping) and resumes them when the last reason goes; a single partition can be held
on its own (say, until where it starts is decided). The records wait on the broker meanwhile, as
consumer lag, which is what an autoscaler reads. Partitions assigned later follow the same rule
once :meth:`PauseGate.apply` runs (the runtime calls it on every assignment).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from aiokafka.structs import TopicPartition

from chatbus.logging import get_logger

log = get_logger(__name__)

__all__ = ["PausableConsumer", "PauseGate"]


class PausableConsumer(Protocol):
    """The part of an aiokafka consumer the gate drives."""

    def assignment(self) -> set[TopicPartition]: ...
    def pause(self, *partitions: TopicPartition) -> None: ...
    def resume(self, *partitions: TopicPartition) -> None: ...


class PauseGate:
    """Pauses a consumer's partitions while any reason holds them; resumes them when none does."""

    def __init__(self, consumer: PausableConsumer) -> None:
        self._consumer = consumer
        self._reasons: set[str] = set()  # each pauses every assigned partition
        self._held: set[TopicPartition] = set()  # paused one by one
        self.pauses = 0  # times every partition was paused (from none)

    @property
    def reasons(self) -> frozenset[str]:
        return frozenset(self._reasons)

    def pause_all(self, reason: str) -> bool:
        """Pause every assigned partition for ``reason``; True when it was not paused for it."""
        if reason in self._reasons:
            return False
        if not self._reasons:
            self.pauses += 1
        self._reasons.add(reason)
        log.debug("partitions_paused", reason=reason)
        self.apply()
        return True

    def resume_all(self, reason: str) -> bool:
        """``reason`` no longer holds; True when it did (the partitions resume if nothing else
        holds them)."""
        if reason not in self._reasons:
            return False
        self._reasons.discard(reason)
        log.debug("partitions_resumed", reason=reason, still_paused_for=sorted(self._reasons))
        self.apply()
        return True

    def hold(self, partitions: Iterable[TopicPartition]) -> None:
        """Pause these partitions until :meth:`release`."""
        self._held |= set(partitions)
        self.apply()

    def release(self, partitions: Iterable[TopicPartition]) -> None:
        self._held -= set(partitions)
        self.apply()

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """The partitions left this consumer (revoked): nothing to remember about them."""
        self._held -= set(partitions)

    def is_held(self, partition: TopicPartition) -> bool:
        return partition in self._held

    def apply(self) -> None:
        """Pause and resume the assigned partitions as the reasons and holds say."""
        assigned = set(self._consumer.assignment())
        paused = assigned if self._reasons else assigned & self._held
        if paused:
            self._consumer.pause(*paused)
        if assigned - paused:
            self._consumer.resume(*(assigned - paused))
