"""Run the archiver in this process until SIGTERM/SIGINT (then flush everything and leave)."""

from __future__ import annotations

import asyncio
import signal

from chatbus.errors import ChatbusError
from chatbus.health import Health, HealthServer
from chatbus.kafka.lag import LagReporter
from chatbus.logging import get_logger
from chatbus.settings import Settings
from stream_processors.archiver.archiver import Archiver

log = get_logger(__name__)


async def run_archiver(settings: Settings) -> None:
    health = Health("archiver")
    server = HealthServer(health, settings.metrics_port) if settings.metrics_port else None
    if server:
        server.start()
    archiver = Archiver(settings, health=health)
    lag = LagReporter(settings, archiver.group)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    failed: BaseException | None = None
    try:
        await archiver.start()
        await lag.start()
        assert archiver.task is not None
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, archiver.task}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if archiver.task.done():  # the loop died: leave cleanly, exit non-zero, get restarted
            failed = archiver.task.exception()
        else:
            log.info("stop_signal", component="archiver")
    finally:
        await lag.stop()
        await archiver.stop()
        if server:
            server.stop()
    if failed is not None:
        raise ChatbusError(f"the archiver's loop failed ({type(failed).__name__}: {failed}); "
                           "its records stay uncommitted and a restart resumes them") from failed
