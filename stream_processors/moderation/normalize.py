"""Undo the cheapest obfuscations before judging: spaced or dotted letters (``b o m b``,
``k.i.l.l``) and leetspeak inside words (``b0mb``, ``k1ll``, ``$uicide``).

Moderation judges the text as written *and* its normalised form (the higher score wins), so a
normalisation that mangles an innocent text costs nothing unless the mangled text is unsafe.
"""

from __future__ import annotations

import re

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s", "!": "i", "|": "l", "+": "t"})  # fmt: skip
# three or more single characters, each followed by one separator: "b o m b", "k.i.l.l", "s-e-x"
_SPACED = re.compile(r"(?<![\w@$])((?:[\w@$!|+][ .\-_*]){2,}[\w@$!|+])(?![\w@$])")
# a word with letters and at least one leet character between or after them
_LEETY = re.compile(
    r"(?<![\w@$!|+])(?=[\w@$!|+]*[A-Za-z])(?=[\w@$!|+]*[013457@$8!|+])[\w@$!|+]{3,}"
)


def _join(match: re.Match[str]) -> str:
    return re.sub(r"[ .\-_*]", "", match.group(1))


def _unleet(match: re.Match[str]) -> str:
    word = match.group(0)
    if word.isdigit() or re.fullmatch(r"\d+[a-z]{1,2}", word, re.IGNORECASE):
        return word  # 1990, 10th, 3am: numbers, not leetspeak
    if sum(c.isdigit() for c in word) >= 3 or re.fullmatch(r"[0-9a-f]{6,}", word, re.IGNORECASE):
        return word  # ids, hashes, versions: spelled out they are noise the heads misread
    return word.translate(_LEET)


def normalize(text: str) -> str:
    """``text`` with spaced letters joined and leetspeak spelled out (lower-cased)."""
    joined = _SPACED.sub(_join, text)
    return _LEETY.sub(_unleet, joined).lower()


def variants(text: str) -> list[str]:
    """The texts to judge for ``text``: itself, and its normalised form when that differs."""
    norm = normalize(text)
    return [text] if norm == text.lower() else [text, norm]
