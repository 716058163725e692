"""Conversation history: turns in MongoDB, prompt context in Redis.

- :mod:`~chatbus.history.turns`: what a turn contributes to a prompt (pure logic);
- :mod:`~chatbus.history.repository`: ``conversations`` and ``turns`` in MongoDB;
- :mod:`~chatbus.history.context`: the Redis context cache, MongoDB as its fallback.

It lives in the core because three components read it: the Faust agent
:mod:`stream_processors.agents.history` writes it, the inference worker reads the context through
:class:`ContextStore` for requests with ``use_history``, and the gateway lists and continues a
user's conversations.
"""

from chatbus.history.context import ContextStore, ConversationContext, context_key
from chatbus.history.repository import (
    Conversation,
    ConversationOwnedByOther,
    HistoryRepository,
)
from chatbus.history.turns import ContextTurn, context_messages, select_context

__all__ = [
    "ContextStore",
    "ContextTurn",
    "Conversation",
    "ConversationContext",
    "ConversationOwnedByOther",
    "HistoryRepository",
    "context_key",
    "context_messages",
    "select_context",
]
