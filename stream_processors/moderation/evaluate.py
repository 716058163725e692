"""Precision and recall per category on a held-out split of the seed set.

    HF_HUB_OFFLINE=1 .venv/bin/python -m stream_processors.moderation.evaluate [--test-fraction 0.3]

Trains the embedding heads on the training part only, then scores the held-out part with the
rules, the embedding classifier and the two combined (the default), flagging with the thresholds
from settings. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from chatbus.settings import get_settings
from stream_processors.moderation.categories import (
    CATEGORIES,
    CategoryScores,
    flagged_categories,
    thresholds_from,
)
from stream_processors.moderation.embedding import MiniLMEncoder, train_heads
from stream_processors.moderation.rules import RuleClassifier
from stream_processors.moderation.seed import SeedExample, load_seed, split


def _ratio(num: int, den: int) -> str:
    return f"{num / den:.2f}" if den else "-"


def report(
    test: list[SeedExample],
    predictions: dict[str, list[CategoryScores]],
    thresholds: dict[str, float],
) -> str:
    names = list(predictions)
    header = "| category | n+ | " + " | ".join(f"{n} P | {n} R" for n in names) + " |"
    lines = [header, "|" + " --- |" * (2 + 2 * len(names))]
    totals = {n: [0, 0, 0] for n in names}  # tp, fp, fn
    for category in CATEGORIES:
        positives = sum(category in ex.categories for ex in test)
        cells = []
        for name in names:
            tp = fp = fn = 0
            for ex, scores in zip(test, predictions[name], strict=True):
                hit = flagged_categories(scores, thresholds)[category]
                truth = category in ex.categories
                tp += hit and truth
                fp += hit and not truth
                fn += truth and not hit
            totals[name][0] += tp
            totals[name][1] += fp
            totals[name][2] += fn
            cells += [_ratio(tp, tp + fp), _ratio(tp, tp + fn)]
        lines.append(f"| {category} | {positives} | " + " | ".join(cells) + " |")
    cells = []
    for name in names:
        tp, fp, fn = totals[name]
        cells += [_ratio(tp, tp + fp), _ratio(tp, tp + fn)]
    lines.append("| **micro avg** | | " + " | ".join(cells) + " |")
    benign = [i for i, ex in enumerate(test) if not ex.categories]
    lines.append("")
    for name in names:
        wrongly = sum(
            any(flagged_categories(predictions[name][i], thresholds).values()) for i in benign
        )
        lines.append(f"- {name}: {wrongly} of {len(benign)} benign held-out examples flagged")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=13, help="Random seed of the split.")
    args = parser.parse_args(argv)

    settings = get_settings()
    thresholds = thresholds_from(settings)
    examples = load_seed()
    train, test = split(examples, test_fraction=args.test_fraction, seed=args.seed)
    started = time.perf_counter()
    encoder = MiniLMEncoder("cpu")
    train_vectors = encoder.encode([ex.text for ex in train])
    test_vectors = encoder.encode([ex.text for ex in test])
    heads = train_heads(train_vectors, train)
    elapsed = time.perf_counter() - started

    rules = RuleClassifier()
    rule_scores = [rules.classify(ex.text) for ex in test]
    probs = heads.predict(test_vectors)
    embed_scores = [
        {c: float(p) for c, p in zip(heads.categories, row, strict=True)} for row in probs
    ]
    hybrid = [
        {c: max(r[c], e[c]) for c in CATEGORIES}
        for r, e in zip(rule_scores, embed_scores, strict=True)
    ]
    print(
        f"seed set: {len(examples)} examples; train {len(train)}, held out {len(test)} "
        f"(split seed {args.seed}); encode + train {elapsed:.1f} s\n"
    )
    print(
        report(
            test, {"rules": rule_scores, "embedding": embed_scores, "hybrid": hybrid}, thresholds
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
