"""The labelled seed set kept in the repository (``seed/*.jsonl``).

Each line is ``{"text": ..., "categories": [...]}``; an empty list means benign. The examples are
short, synthetic and deliberately not graphic: requests, statements, multi-turn texts (the user's
turns joined by newlines) and the openings of answers (for output moderation) that stop before
anything operational.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from stream_processors.moderation.categories import CATEGORIES

SEED_DIR = Path(__file__).resolve().parent / "seed"


@dataclass(frozen=True, slots=True)
class SeedExample:
    text: str
    categories: frozenset[str]
    source: str = ""


def load_seed(directory: Path = SEED_DIR) -> list[SeedExample]:
    """Every example of the seed set, in file then line order; raises on an unknown category."""
    examples: list[SeedExample] = []
    for path in sorted(directory.glob("*.jsonl")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            cats = frozenset(row["categories"])
            unknown = cats - set(CATEGORIES)
            if unknown:
                raise ValueError(f"{path.name}:{lineno}: unknown categories {sorted(unknown)}")
            examples.append(SeedExample(row["text"], cats, path.stem))
    if not examples:
        raise ValueError(f"no seed examples under {directory}")
    return examples


def fingerprint(examples: list[SeedExample], *extra: str) -> str:
    """A short hash of the examples (and of ``extra``, e.g. the encoder and trainer version)."""
    digest = hashlib.sha256()
    for ex in examples:
        digest.update(json.dumps([ex.text, sorted(ex.categories)]).encode())
        digest.update(b"\n")
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:16]


def split(
    examples: list[SeedExample], *, test_fraction: float = 0.3, seed: int = 13
) -> tuple[list[SeedExample], list[SeedExample]]:
    """A split stratified by the example's most specific category (benign is its own stratum)."""
    strata: dict[str, list[SeedExample]] = {}
    for ex in examples:
        key = max(ex.categories, key=lambda c: (c.count("/"), c)) if ex.categories else "benign"
        strata.setdefault(f"{key}:{ex.source}", []).append(ex)
    rng = random.Random(seed)  # noqa: S311 - a reproducible split, not security
    train: list[SeedExample] = []
    test: list[SeedExample] = []
    for key in sorted(strata):
        group = strata[key][:]
        rng.shuffle(group)
        n_test = max(1, round(len(group) * test_fraction)) if len(group) > 1 else 0
        test.extend(group[:n_test])
        train.extend(group[n_test:])
    return train, test
