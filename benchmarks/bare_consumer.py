"""The baseline of every sink benchmark: a bare aiokafka consumer that reads a backlog and
parses nothing — the most any Python consumer of this broker reaches on this machine."""

from __future__ import annotations

import time
from collections.abc import Sequence

from tqdm import tqdm

from chatbus.kafka.factories import make_consumer
from chatbus.settings import Settings


async def bare_consumer_rate(settings: Settings, topics: Sequence[str], total: int) -> float:
    """Records per second a group-less consumer reads ``total`` records of ``topics`` at."""
    consumer = make_consumer(
        settings, *topics, group_id=None, max_poll_records=5000, fetch_max_wait_ms=200
    )
    await consumer.start()
    seen, started = 0, time.perf_counter()
    try:
        with tqdm(total=total, desc="baseline: bare consumer", unit="rec") as bar:
            while seen < total:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    seen += len(records)
                    bar.update(len(records))
    finally:
        await consumer.stop()
    return total / (time.perf_counter() - started)
