"""The errors of ``chatbus train`` (both :class:`~chatbus.errors.ChatbusError`, so the command
line prints them as one line).

- :class:`TrainingDataError`: the fine-tuning set cannot be used as it is; the message names the
  file and line to fix.
- :class:`TrainingFailed`: training itself went wrong (the loss diverged, the merged model does
  not reproduce the trained one); the message says what to change.

A wrong base model or output folder is a :class:`~chatbus.errors.ConfigurationError`.
"""

from __future__ import annotations

from chatbus.errors import ChatbusError

__all__ = ["TrainingDataError", "TrainingFailed"]


class TrainingDataError(ChatbusError):
    """The fine-tuning set is missing, empty or malformed; the message says where."""


class TrainingFailed(ChatbusError):
    """The run could not produce a sound candidate; the message says what to change."""
