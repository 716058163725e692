"""Personal data detection: emails, phone numbers and payment card numbers (Luhn-checked)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PiiKind = Literal["email", "phone", "payment_card"]

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)
# 13-19 digits, optionally grouped by single spaces or dashes.
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# International (+CC …) or North American style numbers; digit count checked below.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{1,4}){1,4}"
    r"|\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}"
    r"|\d{3}[ .-]\d{4})(?![\w-])"
)

_SEVEN_DIGITS = re.compile(r"\d(?:\D*\d){6}")


@dataclass(frozen=True, slots=True)
class PiiMatch:
    kind: PiiKind
    start: int
    end: int

    def overlaps(self, other: PiiMatch) -> bool:
        return self.start < other.end and other.start < self.end


def luhn_valid(number: str) -> bool:
    """The Luhn checksum of the digits in ``number`` (separators ignored)."""
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2:
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def find_pii(text: str) -> list[PiiMatch]:
    """Spans of personal data in ``text``, in order; cards win over phones where they overlap."""
    if "@" not in text and _SEVEN_DIGITS.search(text) is None:
        return []  # every kind needs an '@' or at least 7 digits: most texts end here, cheaply
    found: list[PiiMatch] = [PiiMatch("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    for m in _CARD.finditer(text):
        if luhn_valid(m.group()):
            found.append(PiiMatch("payment_card", m.start(), m.end()))
    for m in _PHONE.finditer(text):
        digits = sum(c.isdigit() for c in m.group())
        candidate = PiiMatch("phone", m.start(), m.end())
        if 7 <= digits <= 15 and not any(candidate.overlaps(f) for f in found):
            found.append(candidate)
    return sorted(found, key=lambda f: f.start)


def redact(text: str, spans: list[PiiMatch]) -> str:
    """``text`` with each span replaced by ``[KIND]`` (what a downstream consumer would do)."""
    out, last = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        out.append(text[last : span.start])
        out.append(f"[{span.kind.upper()}]")
        last = span.end
    out.append(text[last:])
    return "".join(out)
