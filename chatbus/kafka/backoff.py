"""One backoff policy for everything that retries: a broker hiccup, a store that is down, a
process that crashed.

:class:`Backoff` is the policy (pure: attempt number in, seconds out); :func:`retrying` runs a call
again while it raises a retriable error, sleeping the policy's delay in between. The sleep is
injectable, so a unit test drives the retries without waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from chatbus.logging import get_logger

log = get_logger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[object]]

_MAX_EXPONENT = 64  # beyond this every delay is the cap (and a float power would overflow)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays that grow by ``factor`` from ``initial_s`` up to ``max_s``."""

    initial_s: float
    max_s: float
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry ``attempt + 1`` (``attempt`` 0: the first retry)."""
        exponent = min(max(0, attempt), _MAX_EXPONENT)
        return float(min(self.max_s, self.initial_s * self.factor**exponent))


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    retry_on: tuple[type[BaseException], ...],
    backoff: Backoff,
    what: str,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Await ``call()`` until it returns, retrying (for ever) while it raises ``retry_on``."""
    attempt = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            delay = backoff.delay(attempt)
            attempt += 1
            log.warning(
                "retrying",
                action=what,
                retry_in_s=delay,
                attempt=attempt,
                error=f"{type(exc).__name__}: {exc}",
            )
            await sleep(delay)
