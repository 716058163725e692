"""Erase a user's history: every conversation and turn in MongoDB, every cached context in Redis.

Requests of the user still on the bus (not yet read by the history processor) would be recorded
after this runs; erase once the user can no longer send (their keys deleted first).
"""

from __future__ import annotations

import asyncio

from chatbus.history.context import ContextStore
from chatbus.history.repository import HistoryRepository
from chatbus.settings import Settings


async def erase_user_history(settings: Settings, user_id: str) -> list[str]:
    """Delete ``user_id``'s conversations everywhere; returns their ids."""
    repository = HistoryRepository(settings)
    context = ContextStore(settings, repository)
    try:
        conversation_ids = await asyncio.to_thread(repository.delete_user, user_id)
        await context.forget(*conversation_ids)
        return conversation_ids
    finally:
        await context.close()
        repository.close()
