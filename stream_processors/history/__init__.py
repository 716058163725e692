"""Conversation history: turns in MongoDB, prompt context in Redis (issue 4, History).

- :mod:`~stream_processors.history.turns`: what a turn contributes to a prompt (pure logic);
- :mod:`~stream_processors.history.repository`: ``conversations`` and ``turns`` in MongoDB;
- :mod:`~stream_processors.history.context`: the Redis context cache, MongoDB as its fallback.

The Faust agent that feeds them is :mod:`stream_processors.agents.history`; the inference worker
reads the context through :class:`ContextStore` for requests with ``use_history``.
"""

from stream_processors.history.context import ContextStore, context_key
from stream_processors.history.repository import (
    Conversation,
    ConversationOwnedByOther,
    HistoryRepository,
)
from stream_processors.history.turns import ContextTurn, context_messages, select_context

__all__ = [
    "ContextStore",
    "ContextTurn",
    "Conversation",
    "ConversationOwnedByOther",
    "HistoryRepository",
    "context_key",
    "context_messages",
    "select_context",
]
