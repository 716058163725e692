"""Run the ledger's reader in this process until SIGTERM/SIGINT (then leave the group)."""

from __future__ import annotations

from chatbus.kafka.serve import serve
from chatbus.settings import Settings
from stream_processors.ledger.reader import LedgerReader


async def run_ledger(settings: Settings) -> None:
    """Ready once every assigned partition resumed from the offsets stored with the rows."""
    await serve(settings, "ledger", lambda health: LedgerReader(settings, health=health))
