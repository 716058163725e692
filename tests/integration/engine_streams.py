"""Reading an engine's token stream in tests, within a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from inference_consumers.engine.base import TokenEvent


async def collect(
    events: AsyncIterator[TokenEvent], deadline_s: float = 60.0
) -> tuple[list[int], TokenEvent]:
    """All token ids of a stream and its final event, within ``deadline_s``."""
    tokens: list[int] = []
    async with asyncio.timeout(deadline_s):
        async for event in events:
            tokens.extend(event.token_ids)
            if event.finished:
                return tokens, event
    raise AssertionError("stream ended without a finished event")
