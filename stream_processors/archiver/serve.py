"""Run the archiver in this process until SIGTERM/SIGINT (then flush everything and leave)."""

from __future__ import annotations

from chatbus.kafka.serve import serve
from chatbus.settings import Settings
from stream_processors.archiver.archiver import Archiver


async def run_archiver(settings: Settings) -> None:
    """The archiver reports its own readiness (once it knows where each partition starts); a
    loop that fails leaves the group cleanly and exits non-zero, to be restarted."""
    await serve(settings, "archiver", lambda health: Archiver(settings, health=health))
