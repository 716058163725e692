"""The one backoff policy: delays that double from a start up to a cap, and retrying with it."""

from __future__ import annotations

import pytest

from chatbus.errors import ServiceUnavailable
from chatbus.kafka.backoff import Backoff, retrying


def test_delays_double_from_the_initial_delay_up_to_the_cap() -> None:
    policy = Backoff(initial_s=0.5, max_s=10.0)
    assert [policy.delay(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_huge_attempt_number_is_the_cap_not_an_overflow() -> None:
    assert Backoff(initial_s=1.0, max_s=30.0).delay(10_000) == 30.0


def test_a_negative_attempt_waits_the_initial_delay() -> None:
    assert Backoff(initial_s=0.2, max_s=5.0).delay(-3) == 0.2


class Sleeps:
    """Records the delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_retrying_waits_the_policy_between_retriable_failures_then_returns() -> None:
    failures = 3

    async def flaky() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise ServiceUnavailable("MongoDB unavailable")
        return "written"

    sleeps = Sleeps()
    result = await retrying(
        flaky,
        retry_on=(ServiceUnavailable,),
        backoff=Backoff(initial_s=0.2, max_s=0.5),
        what="write",
        sleep=sleeps,
    )
    assert result == "written"
    assert sleeps.delays == [0.2, 0.4, 0.5]


async def test_retrying_lets_any_other_error_through_at_once() -> None:
    async def broken() -> None:
        raise ValueError("a bug, not an outage")

    sleeps = Sleeps()
    with pytest.raises(ValueError, match="a bug"):
        await retrying(
            broken,
            retry_on=(ServiceUnavailable,),
            backoff=Backoff(initial_s=1.0, max_s=1.0),
            what="write",
            sleep=sleeps,
        )
    assert sleeps.delays == []
