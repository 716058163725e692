"""How well moderation judges the held-back split of the evaluation set.

    HF_HUB_OFFLINE=1 .venv/bin/python -m stream_processors.moderation.evaluate [--charts DIR]

Trains the heads as production does (seed set + the train split), takes the calibrated
thresholds (``calibration.json``), and judges every case of the **test** split (never trained
or calibrated on) as production would: input cases by their conversation, answer cases by their
answer. Prints, with 95 % Wilson intervals:

- over all categories: recall on unsafe cases (blocked at all) and false-positive rate on safe
  ones (blocked at all), for the rules alone, the embedding heads alone and both (production);
- per category: cases, recall (blocked), precision and recall of the category itself, and the
  false-positive rate of the category on safe cases;
- per form (plain, multi-turn, obfuscated, translated, answer);
- the **everyday** probe apart (ordinary requests, held back whole): the share refused, per form.
  It is not pooled into the false-positive rate above, whose safe cases are the look-alikes a
  classifier finds hard; pooled, hundreds of easy cases would make that rate look better.

``--charts DIR`` draws one precision-recall curve per category (PNG) for docs/moderation.md;
``--json FILE`` writes the figures (the baseline ``make test`` compares against).

``--dev`` judges the **development set** (``devset/``, data card in its ``README.md``) instead:
cases never trained or calibrated on, written to choose between changes, so that a change is
tried there and the held-back split is read once, for the figures that are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbus.settings import ModerationSettings
from stream_processors.moderation.calibrate import (
    Scorer,
    VectorCache,
    fit_heads,
    training_examples,
)
from stream_processors.moderation.categories import (
    CATEGORIES,
    CategoryScores,
    calibrated_thresholds,
    flagged_categories,
)
from stream_processors.moderation.evalset import (
    DEV_DIR,
    EVERYDAY,
    EvalCase,
    load_evalset,
    split_of,
)
from stream_processors.moderation.rules import RuleClassifier
from stream_processors.moderation.seed import load_seed

#: The committed figures ``make test`` holds the judgement to (tests/unit/test_moderation_quality).
BASELINE_FILE = Path(__file__).resolve().parent / "evaluation.json"
FORMS = ("plain", "multi_turn", "obfuscated", "translated", "answer")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of ``k`` successes in ``n`` trials."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Rate:
    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")

    def __str__(self) -> str:
        if not self.n:
            return "-"
        low, high = wilson(self.k, self.n)
        return f"{self.value:.2f} [{low:.2f}, {high:.2f}] ({self.k}/{self.n})"

    def as_dict(self) -> dict[str, Any]:
        low, high = wilson(self.k, self.n)
        return {"k": self.k, "n": self.n, "value": self.value, "low": low, "high": high}


def blocked(scores: CategoryScores, thresholds: dict[str, float]) -> set[str]:
    return {c for c, hit in flagged_categories(scores, thresholds).items() if hit}


def figures(
    cases: list[EvalCase], scores: list[CategoryScores], thresholds: dict[str, float]
) -> dict[str, Any]:
    hits = [blocked(s, thresholds) for s in scores]
    unsafe = [i for i, c in enumerate(cases) if c.unsafe]
    safe = [i for i, c in enumerate(cases) if not c.unsafe]
    refused = refusal_rates(cases, [bool(h) for h in hits])
    out: dict[str, Any] = {
        "recall": refused["recall"],
        "fpr": refused["fpr"],
        "categories": {},
        "forms": refused["forms"],
    }
    for category in CATEGORIES:
        labelled = [i for i in unsafe if category in cases[i].categories]
        flagged_as = [i for i, h in enumerate(hits) if category in h]
        out["categories"][category] = {
            "recall": Rate(sum(bool(hits[i]) for i in labelled), len(labelled)),
            "category_recall": Rate(sum(category in hits[i] for i in labelled), len(labelled)),
            "precision": Rate(
                sum(category in cases[i].categories for i in flagged_as), len(flagged_as)
            ),
            "fpr": Rate(sum(category in hits[i] for i in safe), len(safe)),
        }
    return out


def refusal_rates(cases: list[EvalCase], refused: list[bool]) -> dict[str, Any]:
    """Recall on the unsafe cases and false-positive rate on the safe ones, overall and per form,
    from whether each case was refused (offline, or by the gateway)."""

    def rate(chosen: list[int]) -> Rate:
        return Rate(sum(refused[i] for i in chosen), len(chosen))

    unsafe = [i for i, c in enumerate(cases) if c.unsafe]
    safe = [i for i, c in enumerate(cases) if not c.unsafe]
    return {
        "recall": rate(unsafe),
        "fpr": rate(safe),
        "forms": {
            form: {
                "recall": rate([i for i in unsafe if cases[i].form == form]),
                "fpr": rate([i for i in safe if cases[i].form == form]),
            }
            for form in FORMS
        },
    }


def everyday_figures(
    cases: list[EvalCase], scores: list[CategoryScores], thresholds: dict[str, float]
) -> dict[str, Any]:
    """The everyday probe: how many ordinary requests are refused, overall and per form."""
    refused = [bool(blocked(s, thresholds)) for s in scores]
    forms = sorted({c.form for c in cases}, key=lambda f: FORMS.index(f) if f in FORMS else 99)
    return {
        "fpr": Rate(sum(refused), len(cases)),
        "forms": {
            form: Rate(
                sum(r for r, c in zip(refused, cases, strict=True) if c.form == form),
                sum(c.form == form for c in cases),
            )
            for form in forms
        },
    }


def as_json(fig: dict[str, Any]) -> dict[str, Any]:
    def conv(value: Any) -> Any:
        if isinstance(value, Rate):
            return value.as_dict()
        if isinstance(value, dict):
            return {k: conv(v) for k, v in value.items()}
        return value

    return conv(fig)  # type: ignore[no-any-return]


def report(
    results: dict[str, dict[str, Any]], test: list[EvalCase], judged: str = "held-back split"
) -> str:
    lines = [
        f"{judged}: {len(test)} cases "
        f"({sum(c.unsafe for c in test)} unsafe, {sum(not c.unsafe for c in test)} safe)",
        "",
        "| classifier | recall on unsafe (95% CI) | false-positive rate on safe (95% CI) |",
        "| --- | --- | --- |",
    ]
    for name, fig in results.items():
        lines.append(f"| {name} | {fig['recall']} | {fig['fpr']} |")
    production = results[production_classifier()]
    lines += [
        "",
        "| category | recall: blocked | recall: this category | precision | FPR on safe |",
        "| --- | --- | --- | --- | --- |",
    ]
    for category, row in production["categories"].items():
        lines.append(
            f"| {category} | {row['recall']} | {row['category_recall']} | {row['precision']} "
            f"| {row['fpr']} |"
        )
    lines += ["", "| form | recall on unsafe | FPR on safe |", "| --- | --- | --- |"]
    for form, row in production["forms"].items():
        lines.append(f"| {form} | {row['recall']} | {row['fpr']} |")
    everyday = production.get("everyday")
    if everyday:
        lines += [
            "",
            "everyday probe (ordinary requests, held back whole, not in the figures above):",
            "",
            "| classifier | refused (95% CI) | " + " | ".join(everyday["forms"]) + " |",
            "| --- | --- |" + " --- |" * len(everyday["forms"]),
        ]
        for name, fig in results.items():
            row = fig["everyday"]
            forms = " | ".join(str(rate) for rate in row["forms"].values())
            lines.append(f"| {name} | {row['fpr']} | {forms} |")
    return "\n".join(lines)


def draw_charts(
    test: list[EvalCase], scores: list[CategoryScores], thresholds: dict[str, float], out: Path
) -> list[Path]:
    """One precision-recall curve per category over the held-back split, the operating point
    (the calibrated threshold) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, axes = plt.subplots(4, 4, figsize=(14, 13))
    for ax, category in zip(axes.flat, CATEGORIES, strict=False):
        truth = [category in c.categories for c in test]
        values = [s[category] for s in scores]
        if not any(truth):
            ax.set_visible(False)
            continue
        precision, recall, _ = precision_recall_curve(truth, values)
        ax.plot(recall, precision)
        tp = sum(t and v >= thresholds[category] for t, v in zip(truth, values, strict=True))
        fp = sum(not t and v >= thresholds[category] for t, v in zip(truth, values, strict=True))
        ax.scatter([tp / max(1, sum(truth))], [tp / max(1, tp + fp)], color="red", zorder=3, s=18)
        ax.set_title(f"{category} (t={thresholds[category]:.2f})", fontsize=9)
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
    for ax in list(axes.flat)[len(CATEGORIES) :]:
        ax.set_visible(False)
    fig.tight_layout()
    path = out / "precision-recall.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    paths.append(path)
    return paths


def evaluate(
    encode: Any, judged: list[EvalCase] | None = None
) -> tuple[list[EvalCase], dict[str, Any], list[CategoryScores]]:
    """Figures of the held-back split, or of ``judged`` (cases the heads never learn from)."""
    cases = load_evalset()
    train = split_of(cases, "train")
    held_back = split_of(cases, "test") if judged is None else judged
    test = [case for case in held_back if case.group != EVERYDAY]
    everyday = [case for case in held_back if case.group == EVERYDAY]
    thresholds = thresholds_for_evaluation()
    vectors = VectorCache(encode)
    heads = fit_heads(vectors, training_examples(load_seed(), train))
    scorers = {
        "rules": Scorer(None, vectors, RuleClassifier()),
        "embedding": Scorer(heads, vectors, None),
        "hybrid": Scorer(heads, vectors, RuleClassifier()),
    }
    results: dict[str, Any] = {}
    production: list[CategoryScores] = []
    for name, scorer in scorers.items():
        scores = [scorer.scores(case) for case in test]
        results[name] = figures(test, scores, thresholds)
        if everyday:
            results[name]["everyday"] = everyday_figures(
                everyday, [scorer.scores(case) for case in everyday], thresholds
            )
        if name == production_classifier():
            production = scores
    results["thresholds"] = thresholds
    return test, results, production


def production_classifier() -> str:
    """The classifier the processors use by default (the one the per-category figures and
    ``make test``'s baseline are about)."""
    return str(ModerationSettings.model_fields["classifier"].default)


def thresholds_for_evaluation() -> dict[str, float]:
    """The calibrated thresholds (what production uses unless a setting overrides them)."""
    calibrated = calibrated_thresholds()
    missing = set(CATEGORIES) - set(calibrated)
    if missing:
        raise SystemExit(
            f"no calibrated threshold for {sorted(missing)}: "
            "run python -m stream_processors.moderation.calibrate"
        )
    return calibrated


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--charts", type=Path, help="write precision-recall charts here")
    parser.add_argument(
        "--json", type=Path, help=f"write the figures here (the baseline: {BASELINE_FILE})"
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help=f"judge the development set ({DEV_DIR}) instead of the held-back split",
    )
    args = parser.parse_args(argv)
    if args.dev and args.json and args.json.resolve() == BASELINE_FILE:
        parser.error("the development set's figures are not the baseline: --json elsewhere")
    from stream_processors.moderation.embedding import MiniLMEncoder

    started = time.perf_counter()
    judged = load_evalset(DEV_DIR) if args.dev else None
    test, results, production = evaluate(MiniLMEncoder("cpu").encode, judged)
    thresholds = results.pop("thresholds")
    print(report(results, test, "development set" if args.dev else "held-back split"))
    print(f"\n(encode, train and judge: {time.perf_counter() - started:.0f} s)")
    if args.charts:
        for path in draw_charts(test, production, thresholds, args.charts):
            print(f"chart: {path}")
    if args.json:
        args.json.write_text(
            json.dumps({k: as_json(v) for k, v in results.items()}, indent=2) + "\n",
            encoding="utf-8",
        )
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
