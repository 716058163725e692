"""Reading an engine's token stream in tests, within a deadline, and the greedy reference it is
compared with (``generate`` on the same model)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

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


def generate_greedy(
    model: Any, prompt: list[int], max_new_tokens: int, eos: frozenset[int], **options: Any
) -> Any:
    """``model.generate`` greedy on ``prompt`` alone, stopping at ``eos``; ``options`` add to it."""
    import torch

    with torch.no_grad():
        return model.generate(
            torch.tensor([prompt]),
            attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=sorted(eos),
            pad_token_id=min(eos),
            **options,
        )
