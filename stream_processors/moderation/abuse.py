"""Per-user violation score: +weight per violation, exponential decay, temporary blocks.

The score halves every ``half_life_s`` seconds:
``score(t) = score(t0) * 2 ** (-(t - t0) / half_life_s)``.
Each violation first decays the stored score to now, then adds ``weight``. When the result reaches
``block_threshold`` the user is blocked until ``now + block_s``. While blocked, requests are
refused without being classified and do not add to the score, so a block ends on time.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from chatbus.settings import Settings


def decayed(score: float, elapsed_s: float, half_life_s: float) -> float:
    """``score`` after ``elapsed_s`` seconds of exponential decay with the given half-life."""
    if elapsed_s <= 0:
        return score
    return score * math.pow(2.0, -elapsed_s / half_life_s)


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    half_life_s: float = 3600.0
    weight: float = 1.0
    block_threshold: float = 2.5
    block_s: float = 900.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AbusePolicy:
        return cls(
            half_life_s=settings.moderation.abuse_half_life_s,
            weight=settings.moderation.abuse_violation_weight,
            block_threshold=settings.moderation.abuse_block_threshold,
            block_s=settings.moderation.abuse_block_s,
        )


@dataclass(frozen=True, slots=True)
class AbuseState:
    """What the table keeps per user (JSON-serialisable through :meth:`to_json`)."""

    score: float = 0.0
    updated_at: float = 0.0
    blocked_until: float = 0.0
    violations: int = 0

    def score_at(self, now: float, policy: AbusePolicy) -> float:
        return decayed(self.score, now - self.updated_at, policy.half_life_s)

    def is_blocked(self, now: float) -> bool:
        return now < self.blocked_until

    def with_violation(self, now: float, policy: AbusePolicy) -> AbuseState:
        score = self.score_at(now, policy) + policy.weight
        blocked_until = self.blocked_until
        if score >= policy.block_threshold:
            blocked_until = max(blocked_until, now + policy.block_s)
        return AbuseState(
            score=score, updated_at=now, blocked_until=blocked_until, violations=self.violations + 1
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> AbuseState:
        if not isinstance(data, dict):
            return cls()
        return cls(
            **{
                k: data[k]
                for k in ("score", "updated_at", "blocked_until", "violations")
                if k in data
            }
        )
