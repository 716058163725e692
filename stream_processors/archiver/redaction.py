"""Personal data out of an event before it is archived.

Moderation marks personal data (emails, phone numbers, Luhn-valid card numbers) with
:func:`stream_processors.moderation.pii.find_pii`; the archiver applies the same detector to every
text an event carries, so what moderation marks is exactly what the archive redacts — without
waiting for, or joining with, the verdict. Each span becomes ``[REDACTED:<kind>]``.

A token chunk alone rarely holds a whole number or address (workers stream a few characters at a
time): the archiver redacts chunks with their answer's preceding text
(:mod:`stream_processors.archiver.stream_redaction`); ``redact_event`` redacts a chunk on its own
only when asked to. A chunk whose text was redacted also loses its ``token_ids``, which would
otherwise spell the same text.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from stream_processors.moderation.pii import find_pii


def redact_text(text: str) -> tuple[str, int]:
    """``text`` with every personal data span replaced, and how many spans there were."""
    spans = find_pii(text)
    if not spans:
        return text, 0
    out, at = [], 0
    for span in spans:
        out.append(text[at : span.start])
        out.append(f"[REDACTED:{span.kind}]")
        at = span.end
    out.append(text[at:])
    return "".join(out), len(spans)


def redact_event(event: dict[str, Any], *, chunks: bool = True) -> int:
    """Redact ``event`` (a decoded bus event) in place; returns the spans redacted. With
    ``chunks=False`` a token chunk is left as it is (its stream is redacted as a whole)."""
    kind = event.get("type")
    found = 0
    if kind == "chat.request":
        for message in event.get("messages") or []:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                message["content"], n = redact_text(message["content"])
                found += n
    elif kind == "chat.token" and not chunks:
        pass
    elif kind in ("chat.token", "chat.completion") and isinstance(event.get("text"), str):
        event["text"], found = redact_text(event["text"])
        if found and kind == "chat.token":
            event["token_ids"] = []
    elif kind in ("chat.rating", "chat.appeal") and isinstance(event.get("comment"), str):
        event["comment"], found = redact_text(event["comment"])  # users' own words
    elif kind == "chat.dead_letter" and isinstance(event.get("original_value_b64"), str):
        found = _redact_b64(event)
    return found


def _redact_b64(event: dict[str, Any]) -> int:
    try:
        text = base64.b64decode(event["original_value_b64"], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return 0  # not text: nothing a text detector could find
    redacted, found = redact_text(text)
    if found:
        event["original_value_b64"] = base64.b64encode(redacted.encode()).decode()
    return found
