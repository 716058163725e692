"""The moderation evaluation set kept in the repository (``evalset/*.jsonl``; data card in
``evalset/README.md``).

Each line is one conversation: ``{"id", "turns": [{"role", "content"}...], "categories": [...],
"group": "unsafe" | "lookalike" | "benign" | "everyday", "form": "plain" | "multi_turn" |
"obfuscated" | "translated" | "answer"}``. The label is the conversation's as a whole; for
``answer`` cases it is the last (assistant) turn's, which output moderation judges. Each case
belongs to the **train** split (thresholds are calibrated and heads trained on it) or the **test**
split (held back: only :mod:`~stream_processors.moderation.evaluate` reads it), by a hash of its
id, so adding cases never moves an old one across. The ``everyday`` group (ordinary requests of
every kind, written apart from the training data) is held back whole: it measures false refusals
of what most users ask, apart from the sensitive-looking look-alikes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from stream_processors.moderation.categories import CATEGORIES

EVAL_DIR = Path(__file__).resolve().parent / "evalset"
#: Cases for choosing between changes: never trained or calibrated on, not the reported figures.
DEV_DIR = Path(__file__).resolve().parent / "devset"
TRAIN_SHARE = 0.4  # of every case: the rest is held back
EVERYDAY = "everyday"  # the group held back whole, reported on its own
Split = Literal["train", "test"]


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class EvalCase:
    id: str
    turns: tuple[Turn, ...]
    categories: frozenset[str]
    group: str
    form: str

    @property
    def split(self) -> Split:
        if self.group == EVERYDAY:
            return "test"
        bucket = int(hashlib.sha256(self.id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return "train" if bucket < TRAIN_SHARE else "test"

    @property
    def judges_answer(self) -> bool:
        """Whether the label is the last (assistant) turn's: output moderation's case."""
        return self.turns[-1].role == "assistant"

    @property
    def unsafe(self) -> bool:
        return bool(self.categories)


def load_evalset(directory: Path = EVAL_DIR) -> list[EvalCase]:
    """Every case, in file then line order; raises on a malformed line, an unknown category, a
    subcategory without its parent, or a repeated id."""
    cases: list[EvalCase] = []
    seen: set[str] = set()
    for path in sorted(directory.glob("*.jsonl")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            row = json.loads(line)
            cats = frozenset(row["categories"])
            if unknown := cats - set(CATEGORIES):
                raise ValueError(f"{where}: unknown categories {sorted(unknown)}")
            if orphans := {c for c in cats if "/" in c and c.split("/")[0] not in cats}:
                raise ValueError(f"{where}: {sorted(orphans)} without the parent category")
            if row["id"] in seen:
                raise ValueError(f"{where}: repeated id {row['id']!r}")
            seen.add(row["id"])
            turns = tuple(Turn(t["role"], t["content"]) for t in row["turns"])
            if not turns:
                raise ValueError(f"{where}: no turns")
            cases.append(EvalCase(row["id"], turns, cats, row["group"], row["form"]))
    if not cases:
        raise ValueError(f"no evaluation cases under {directory}")
    return cases


def split_of(cases: list[EvalCase], split: Split) -> list[EvalCase]:
    return [case for case in cases if case.split == split]
