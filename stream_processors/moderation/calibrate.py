"""Train the heads and calibrate each category's threshold on the evaluation set's train split.

    HF_HUB_OFFLINE=1 .venv/bin/python -m stream_processors.moderation.calibrate [--target-fpr 0.04]

The heads learn from the seed set and the train split (each case as the texts moderation judges
of it). Thresholds come from **out-of-fold** scores: the train split is cut in five, each fifth
scored by heads trained without it, so a threshold is set on scores of texts its heads never saw,
as in production. The thresholds block as many unsafe train cases as they can while at most
``--target-fpr`` of the safe ones are blocked (:func:`choose_thresholds`), each the median over
bootstrap resamples of the train split (:func:`bagged_thresholds`: a greedy choice on ~400 cases
swings with a handful of them); the result is written to
``calibration.json`` beside this file, which :func:`~stream_processors.moderation.categories.
thresholds_from` reads (a threshold set in ``CHATBUS_MODERATION_THRESHOLDS`` still wins).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream_processors.moderation.categories import (
    CALIBRATION_FILE,
    CATEGORIES,
    CategoryScores,
    with_parents,
)
from stream_processors.moderation.context import input_texts
from stream_processors.moderation.embedding import TRAINER_VERSION, LinearHeads, Matrix, windows
from stream_processors.moderation.evalset import EvalCase, load_evalset, split_of
from stream_processors.moderation.normalize import variants
from stream_processors.moderation.rules import RuleClassifier
from stream_processors.moderation.seed import SeedExample, load_seed

FLOOR = 0.35  # no category flags below this score (ids and gibberish stay below it)
CEILING = 0.95
FOLDS = 5
STEP_CANDIDATES = 60  # lower thresholds tried per category and step
BOOTSTRAP_ROUNDS = 25
BOOTSTRAP_SEED = 7


def judged_texts(case: EvalCase) -> list[str]:
    """What moderation judges of ``case``: the answer's windows (output moderation), or the
    conversation's input texts; each as written and normalised."""
    if case.judges_answer:
        texts = windows(case.turns[-1].content)
    else:
        texts = input_texts([(t.role, t.content) for t in case.turns])
    return [v for text in texts for v in variants(text)]


def training_texts(case: EvalCase) -> list[str]:
    """What ``case`` teaches the heads: a multi-turn case its joined window only (its last
    message alone may be harmless), any other its judged text."""
    if case.judges_answer:
        texts = [case.turns[-1].content]
    else:
        texts = input_texts([(t.role, t.content) for t in case.turns])
        texts = texts[-1:] if case.form == "multi_turn" else texts[:1]
    return [v for text in texts for v in variants(text)]


def training_examples(seed: list[SeedExample], cases: Sequence[EvalCase]) -> list[SeedExample]:
    return seed + [
        SeedExample(text, case.categories, f"evalset:{case.id}")
        for case in cases
        for text in training_texts(case)
    ]


def production_examples() -> list[SeedExample]:
    """What the served heads learn from (and the thresholds were calibrated for): the seed set
    and the evaluation set's train split."""
    return training_examples(load_seed(), split_of(load_evalset(), "train"))


class VectorCache:
    """Each text encoded once (the evaluation scores the same texts under several heads)."""

    def __init__(self, encode: Callable[[list[str]], Matrix]) -> None:
        self._encode = encode
        self._rows: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> Matrix:
        missing = sorted({t for t in texts if t not in self._rows})
        if missing:
            for text, row in zip(missing, self._encode(missing), strict=True):
                self._rows[text] = row
        return np.vstack([self._rows[t] for t in texts]).astype(np.float32)


@dataclass
class Scorer:
    """Scores of a case as moderation computes them: per text the rules and the heads (max),
    over the texts the highest, parents at least their subcategories."""

    heads: LinearHeads | None
    vectors: VectorCache
    rules: RuleClassifier | None

    def scores(self, case: EvalCase) -> CategoryScores:
        texts = judged_texts(case)
        out = dict.fromkeys(CATEGORIES, 0.0)
        if self.heads is not None:
            probs = self.heads.predict(self.vectors(texts), texts).max(axis=0)
            for category, p in zip(self.heads.categories, probs, strict=True):
                out[category] = max(out[category], float(p))
        if self.rules is not None:
            for text in texts:
                for category, s in self.rules.classify(text).items():
                    out[category] = max(out[category], s)
        return with_parents(out)


def fit_heads(vectors: VectorCache, examples: list[SeedExample]) -> LinearHeads:
    from stream_processors.moderation.embedding import train_heads

    return train_heads(vectors([ex.text for ex in examples]), examples)


def out_of_fold_scores(
    vectors: VectorCache, seed: list[SeedExample], train: list[EvalCase], rules: bool = True
) -> list[CategoryScores]:
    """Each train case's scores from heads trained on the seed and the other folds."""
    folds = [i % FOLDS for i in range(len(train))]
    out: list[CategoryScores | None] = [None] * len(train)
    for fold in range(FOLDS):
        rest = [c for c, f in zip(train, folds, strict=True) if f != fold]
        scorer = Scorer(
            fit_heads(vectors, training_examples(seed, rest)),
            vectors,
            RuleClassifier() if rules else None,
        )
        for i, (case, f) in enumerate(zip(train, folds, strict=True)):
            if f == fold:
                out[i] = scorer.scores(case)
    return [s for s in out if s is not None]


def choose_thresholds(
    cases: list[EvalCase], scores: list[CategoryScores], target_fpr: float
) -> dict[str, float]:
    """Thresholds that block as many unsafe cases as possible while at most ``target_fpr`` of
    the safe cases are blocked (by any category).

    Greedy: every category starts just above its highest safe score (nothing safe blocked);
    then, step by step, the one threshold whose lowering blocks the most unsafe cases per safe
    case newly blocked is lowered, while the safe cases blocked stay within the budget. Each
    threshold stays within [FLOOR, CEILING]."""
    matrix = np.array([[s[c] for c in CATEGORIES] for s in scores])
    unsafe = np.array([case.unsafe for case in cases])
    safe_rows, unsafe_rows = matrix[~unsafe], matrix[unsafe]
    budget = int(np.floor(target_fpr * len(safe_rows)))
    top_safe = safe_rows.max(axis=0) if len(safe_rows) else np.zeros(len(CATEGORIES))
    thresholds = np.clip(top_safe + 1e-4, FLOOR, CEILING)

    def blocked(th: np.ndarray) -> tuple[int, int]:
        return int((safe_rows >= th).any(axis=1).sum()), int((unsafe_rows >= th).any(axis=1).sum())

    false_pos, true_pos = blocked(thresholds)
    while True:
        best: tuple[float, int, float, int, int] | None = None
        for j in range(len(CATEGORIES)):
            column = matrix[:, j]
            candidates = np.unique(column[(column < thresholds[j]) & (column >= FLOOR)])[::-1]
            for value in candidates[:STEP_CANDIDATES]:
                trial = thresholds.copy()
                trial[j] = value
                fp, tp = blocked(trial)
                if fp > budget:
                    break
                gain = (tp - true_pos) / (fp - false_pos + 0.5)
                if tp > true_pos and (best is None or gain > best[0]):
                    best = (gain, j, float(value), fp, tp)
        if best is None:
            break
        _, j, value, false_pos, true_pos = best
        thresholds[j] = value
    return {c: round(float(t), 4) for c, t in zip(CATEGORIES, thresholds, strict=True)}


def bagged_thresholds(
    cases: list[EvalCase],
    scores: list[CategoryScores],
    target_fpr: float,
    *,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, float]:
    """Each category's median threshold over ``rounds`` bootstrap resamples of the cases, each
    chosen by :func:`choose_thresholds`: a threshold that only a few cases put where it is does
    not survive the median (deterministic for a ``seed``)."""
    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(rounds):
        picks = rng.integers(0, len(cases), len(cases))
        chosen.append(
            choose_thresholds([cases[i] for i in picks], [scores[i] for i in picks], target_fpr)
        )
    return {c: round(float(np.median([t[c] for t in chosen])), 4) for c in CATEGORIES}


def calibrate(target_fpr: float, encode: Callable[[list[str]], Matrix]) -> dict[str, object]:
    seed = load_seed()
    train = split_of(load_evalset(), "train")
    vectors = VectorCache(encode)
    scores = out_of_fold_scores(vectors, seed, train, rules=False)
    thresholds = bagged_thresholds(train, scores, target_fpr)
    return {
        "target_fpr": target_fpr,
        "bootstrap_rounds": BOOTSTRAP_ROUNDS,
        "trainer": TRAINER_VERSION,
        "train_cases": len(train),
        "seed_examples": len(seed),
        "thresholds": thresholds,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--target-fpr",
        type=float,
        default=0.04,
        help="share of the safe train cases (out of fold) that may be blocked",
    )
    parser.add_argument("--output", type=Path, default=CALIBRATION_FILE)
    args = parser.parse_args(argv)
    from stream_processors.moderation.embedding import MiniLMEncoder

    started = time.perf_counter()
    result = calibrate(args.target_fpr, MiniLMEncoder("cpu").encode)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result["thresholds"], indent=2))
    print(f"written: {args.output} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
