"""Faust stream processors: input/output moderation and conversation history (issue 4).

Until moderation lands, requests flow from ``chat.requests`` straight to the inference workers.
"""
