"""What OpenAI clients send beside the request proper, accepted while it asks for nothing.

Client libraries fill in parameters of their own: ``tools: []`` and ``tool_choice: "auto"``
with no tools, ``parallel_tool_calls``, ``store``, ``metadata``, ``service_tier: "default"``,
prompt-cache hints, a ``safety_identifier``. Both APIs (chat completions and responses) accept
them on one model, :class:`~producers.gateway.protocol.ClientHints`, so that their defaults
pass, and :func:`refuse_unserved` refuses (400, naming the parameter) a value that asks for what
chatbus lacks: a tool, a ``tool_choice`` that wants one, a service tier other than the default,
log probabilities, a verbosity other than the default.

What is accepted and why it asks for nothing:

- ``tools: []``, ``tool_choice: "none" | "auto"``, ``parallel_tool_calls``: no tool to call.
- ``store``: chatbus keeps every conversation in its history either way (a response object is
  kept unless ``store: false``, see :mod:`~producers.gateway.responses`).
- ``metadata``: kept on a response object, ignored by chat completions (OpenAI shows it only in
  its dashboard of stored completions).
- ``service_tier: "auto" | "default"``: chatbus has one tier, the default.
- ``prompt_cache_key``, ``prompt_cache_retention``: hints for a prompt cache; chatbus has none,
  so every answer reports ``cached_tokens: 0``, which is what a cache miss reports too.
- ``safety_identifier``: an opaque end-user id for abuse detection, echoed on a response.
- ``top_logprobs: 0``: no log probabilities asked for.
"""

from __future__ import annotations

from producers.gateway.errors import unsupported
from producers.gateway.protocol import DEFAULT_VERBOSITY, ClientHints

_SERVED_TIERS = (None, "auto", "default")
_UNASKING_TOOL_CHOICES = (None, "none", "auto")


def refuse_unserved(hints: ClientHints) -> None:
    """A 400 naming the first hint whose value asks for what chatbus does not serve."""
    if hints.tools:
        raise unsupported("tools", "Calling tools ('tools')")
    if isinstance(hints.tool_choice, dict) or hints.tool_choice not in _UNASKING_TOOL_CHOICES:
        raise unsupported("tool_choice", "A 'tool_choice' that asks for a tool")
    if hints.service_tier not in _SERVED_TIERS:
        raise unsupported(
            "service_tier", f"The service tier '{hints.service_tier}' (only 'auto' or 'default')"
        )
    if hints.top_logprobs:
        raise unsupported("top_logprobs", "Log probabilities ('top_logprobs')")


def refuse_verbosity(verbosity: str | None, param: str) -> None:
    """A 400 naming ``param`` unless ``verbosity`` is unset or the default (``medium``)."""
    if verbosity not in (None, DEFAULT_VERBOSITY):
        raise unsupported(param, f"The verbosity '{verbosity}' (only '{DEFAULT_VERBOSITY}')")
