"""The progress store when Redis does not answer: renewals fail soft and say so once."""

from __future__ import annotations

from structlog.testing import capture_logs

from chatbus.ports import free_port
from chatbus.settings import Settings
from inference_consumers.progress import ProgressStore


async def test_renewals_while_redis_is_down_return_none_and_warn_once_per_outage() -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"  # a port nothing listens on
    store = ProgressStore(Settings().replace(redis={"url": unreachable}), "worker-a")
    try:
        with capture_logs() as logs:
            results = [await store.renew(["req-1", "req-2"]) for _ in range(4)]
        assert results == [None, None, None, None]
        warnings = [e for e in logs if e["event"] == "lease_renewal_failing"]
        assert len(warnings) == 1, logs
        assert warnings[0]["leases"] == 2
    finally:
        await store.stop()
