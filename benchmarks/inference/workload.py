"""What every system is asked: the prompts, the concurrency levels, tokens per answer, rounds."""

from __future__ import annotations

import math
from dataclasses import dataclass

Messages = list[dict[str, str]]

# Varied lengths so a batch mixes prompt sizes; the same list for every system.
PROMPTS: tuple[str, ...] = (
    "Hello! What is chatbus?",
    "Explain consumer groups in Apache Kafka in two sentences.",
    "Write a haiku about a message queue at night.",
    "What is the difference between a topic and a partition?",
    "Summarise why continuous batching helps LLM serving throughput.",
    "List three ways to make a Python service start faster.",
    "How does a paged KV cache work, roughly?",
    "Give me a short recipe for pancakes.",
    "Why would a streaming system commit offsets only after the effect is durable?",
    "Translate 'good morning, how are you' into French and Spanish.",
    "What does idempotence mean for a Kafka producer?",
    "Tell a two-line story about a robot that learns to paint.",
    "Compare Redis and MongoDB for storing chat history.",
    "What is time to first token and why do users notice it?",
    "Describe the water cycle to a ten-year-old.",
    "Suggest a name for a small cafe next to a train station.",
)


@dataclass(frozen=True, slots=True)
class Workload:
    """One benchmark run's shape; identical for every system."""

    concurrency: tuple[int, ...] = (1, 8, 32)
    max_new_tokens: int = 64
    rounds: int = 3
    min_requests: int = 16  # per round and level: each stream sends ceil(min_requests / c)
    warmup_requests: int = 8

    def __post_init__(self) -> None:
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError(f"concurrency levels must be >= 1, got {self.concurrency}")
        if self.max_new_tokens < 1 or self.rounds < 1 or self.min_requests < 1:
            raise ValueError("max_new_tokens, rounds and min_requests must be >= 1")

    def requests_per_stream(self, concurrency: int) -> int:
        return max(1, math.ceil(self.min_requests / concurrency))

    @property
    def max_concurrency(self) -> int:
        return max(self.concurrency)


QUICK = Workload(concurrency=(1, 4), max_new_tokens=16, rounds=1, min_requests=4, warmup_requests=2)


# Sent by every system, so each renders the very same prompt (chatbus's default system prompt,
# which the others do not add on their own).
SYSTEM = "You are a helpful assistant."


def messages_for(index: int) -> Messages:
    """The chat of request number ``index`` (the prompts cycle)."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": PROMPTS[index % len(PROMPTS)]},
    ]
