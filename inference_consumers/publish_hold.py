"""Whether a stream may publish now: held while its partition is being rebalanced.

Kafka's eager rebalance revokes every partition of every member, then assigns them again, most
often to the member that had them. A worker that handed its streams over on every revoke would
stop them all and prefill them again when they come back; one that kept publishing could double
tokens when a partition does move. So a revoke *holds* the revoked partitions' streams: they keep
generating, but publish nothing until the assignment says whether each stays (the hold opens and
the buffered tokens go out) or moves (it is handed over, and the new owner continues after what
is on the broker).

:meth:`PublishHold.close` returns only once no publish is under way, so after it nothing more of
the stream reaches the broker until :meth:`PublishHold.open`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class PublishHold:
    """Open: the stream publishes. Closed: each publish waits for :meth:`open`."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._publishing = asyncio.Lock()  # held through each publish

    @contextlib.asynccontextmanager
    async def publishing(self) -> AsyncIterator[None]:
        """Wait until the hold is open, then publish inside the block (a close waits for it)."""
        while True:
            await self._open.wait()
            await self._publishing.acquire()
            if self._open.is_set():
                break
            self._publishing.release()  # closed while we queued for the lock: wait again
        try:
            yield
        finally:
            self._publishing.release()

    async def close(self) -> None:
        """Hold the stream: returns once a publish under way has ended."""
        self._open.clear()
        async with self._publishing:
            pass

    def open(self) -> None:
        self._open.set()

    @property
    def held(self) -> bool:
        return not self._open.is_set()
