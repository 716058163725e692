"""What input moderation judges of a conversation: not only the last user message.

An unsafe request split across turns ("which chemicals are dangerous to mix?" … "how much would
it take to put in my roommate's drink?"), or hidden after a harmless opening, is judged on its
harmless part when only the last message is read. So moderation judges the last user message
**and** a window over the recent user turns (newest last, cut to ``window_chars`` from the end,
what the sentence encoder reads at once); the higher score wins. Assistant turns are left out:
they are the model's words, judged by output moderation, and would dilute the user's.
"""

from __future__ import annotations

from collections.abc import Sequence

WINDOW_CHARS = 600
WINDOW_TURNS = 4


def input_texts(
    messages: Sequence[tuple[str, str]],
    *,
    window_chars: int = WINDOW_CHARS,
    window_turns: int = WINDOW_TURNS,
) -> list[str]:
    """The texts to judge for a conversation of ``(role, content)`` pairs: the last user
    message, then the recent user turns joined when there is more than one (empty: nothing)."""
    users = [content for role, content in messages if role == "user" and content.strip()]
    if not users:
        return []
    texts = [users[-1]]
    recent = users[-window_turns:]
    if len(recent) > 1:
        joined = "\n".join(recent)
        texts.append(joined[-window_chars:])
    return texts


def last_user_index(messages: Sequence[tuple[str, str]]) -> int | None:
    """Index of the last user message (where a refusal points: ``messages.N.content``)."""
    for index in range(len(messages) - 1, -1, -1):
        if messages[index][0] == "user":
            return index
    return None
