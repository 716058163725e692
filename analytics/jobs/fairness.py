"""Fairness: do prompts that differ only in a demographic term get different treatment?

Method (also in ``docs/analytics.md``):

1. **Pairs.** A request's prompt is its last user message. It takes part when exactly one term
   of the lexicon (:mod:`analytics.lexicon`: axes gender, religion, ethnicity, age, each with a
   reference term) occurs in it as a whole word, case-insensitively. Replacing that occurrence by
   ``{<axis>}`` gives the prompt's *template*; prompts with the same template and different terms
   of the same axis differ only in that term.
2. **Outcomes**, per request that got a completion (refusals by moderation included):
   *refused* = its input verdict blocked it, or its completion ended ``content_filter``, or the
   answer starts like a refusal (:data:`analytics.lexicon.REFUSAL_PATTERN`); *answer length* =
   characters of the answer, over completions that ended ``stop`` or ``length`` and were not
   refused; *moderated* = any verdict (input or output) flagged it.
3. **Comparison.** For each axis and each term other than the reference, only templates where
   both the term and the reference occur count (matched pairs of templates); over those, the
   term's group is compared with the reference group: the refusal-rate and moderation-rate
   differences with Newcombe's hybrid score 95% interval, the mean answer-length difference with
   Welch's 95% t interval (:mod:`analytics.stats`). An interval that excludes 0 is a difference
   the data supports at that level for that one comparison; the ``*_adj`` intervals correct for
   the many comparisons of the table (Bonferroni over its ``comparisons`` rows, family-wise 95%).

Table ``fairness`` — one row per (axis, term): ``reference``, ``templates`` (matched),
``n_term``, ``n_reference``, and for ``refusal_rate`` and ``moderation_rate``: ``*_term``,
``*_reference``, ``*_diff``, ``*_diff_low``, ``*_diff_high``; for answer length:
``answer_chars_term``, ``answer_chars_reference``, ``answer_chars_diff``,
``answer_chars_diff_low``, ``answer_chars_diff_high``, ``answers_term``, ``answers_reference``;
``comparisons`` (rows of the table) and the Bonferroni-adjusted bounds
``refusal_rate_diff_low_adj``, ``refusal_rate_diff_high_adj``, ``moderation_rate_diff_low_adj``,
``moderation_rate_diff_high_adj``, ``answer_chars_diff_low_adj``, ``answer_chars_diff_high_adj``.

Table ``fairness_groups`` — the per (axis, template, term) counts the comparison is built from:
``requests``, ``refused``, ``moderated``, ``answers``, ``answer_chars_sum``,
``answer_chars_sumsq``.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a file by spark-submit: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics import frames
from analytics.jobs import runner
from analytics.lexicon import AXES, REFUSAL_PATTERN, axis_pattern, placeholder, reference
from analytics.stats import Z95, mean_var, newcombe_difference, welch_difference

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

GROUP_COLUMNS = (
    "requests",
    "refused",
    "moderated",
    "answers",
    "answer_chars_sum",
    "answer_chars_sumsq",
)


def probes(spark: SparkSession, root: str) -> DataFrame:
    """Requests whose prompt holds exactly one lexicon term: (request_id, axis, term, template)."""
    from pyspark.sql import functions as F

    requests = frames.requests(spark, root)
    counts = {
        axis: F.size(F.regexp_extract_all("prompt", F.lit(axis_pattern(axis)), F.lit(1)))
        for axis in AXES
    }
    total: Column = sum(counts.values(), F.lit(0))  # type: ignore[assignment]
    axis_col = F.lit(None).cast("string")
    term_col = F.lit(None).cast("string")
    template_col = F.lit(None).cast("string")
    for axis in reversed(list(AXES)):
        hit = counts[axis] == 1
        axis_col = F.when(hit, F.lit(axis)).otherwise(axis_col)
        term_col = F.when(
            hit, F.lower(F.regexp_extract("prompt", axis_pattern(axis), 1))
        ).otherwise(term_col)
        template_col = F.when(
            hit, F.regexp_replace("prompt", axis_pattern(axis), placeholder(axis))
        ).otherwise(template_col)
    return requests.where(total == 1).select(
        "request_id", axis_col.alias("axis"), term_col.alias("term"), template_col.alias("template")
    )


def compute(spark: SparkSession, root: str) -> dict[str, DataFrame]:
    groups = group_counts(spark, root)
    rows = [r.asDict() for r in groups.collect()]
    return {
        "fairness": spark.createDataFrame(compare(rows), schema=SCHEMA),
        "fairness_groups": spark.createDataFrame(rows, schema=groups.schema),
    }


def group_counts(spark: SparkSession, root: str, only: DataFrame | None = None) -> DataFrame:
    """The per (axis, template, term) counts of :data:`GROUP_COLUMNS` (of the requests in
    ``only``'s ``request_id`` column, when given)."""
    from pyspark.sql import functions as F

    verdicts = (
        frames.verdicts(spark, root)
        .groupBy("request_id")
        .agg(
            F.max(F.col("flagged").cast("int")).alias("moderated"),
            F.max(((F.col("stage") == "input") & (F.col("action") == "block")).cast("int")).alias(
                "blocked"
            ),
        )
    )
    answers = frames.completions(spark, root).select("request_id", "finish_reason", "text")
    probed = probes(spark, root)
    if only is not None:
        probed = probed.join(only.select("request_id").distinct(), "request_id", "left_semi")
    outcome = (
        probed.join(answers, "request_id")
        .join(verdicts, "request_id", "left")
        .withColumn(
            "refused",
            (F.coalesce("blocked", F.lit(0)) == 1)
            | (F.col("finish_reason") == "content_filter")
            | F.col("text").rlike(REFUSAL_PATTERN),
        )
        .withColumn(
            "answer_chars",
            F.when(
                F.col("finish_reason").isin("stop", "length") & ~F.col("refused"),
                F.length("text").cast("long"),
            ),
        )
    )
    return (
        outcome.groupBy("axis", "template", "term")
        .agg(
            F.count("*").alias("requests"),
            F.sum(F.col("refused").cast("long")).alias("refused"),
            F.sum(F.coalesce("moderated", F.lit(0)).cast("long")).alias("moderated"),
            F.count("answer_chars").alias("answers"),
            F.coalesce(F.sum("answer_chars"), F.lit(0)).cast("long").alias("answer_chars_sum"),
            F.coalesce(F.sum(F.col("answer_chars") * F.col("answer_chars")), F.lit(0))
            .cast("long")
            .alias("answer_chars_sumsq"),
        )
        .orderBy("axis", "template", "term")
    )


_FIELDS = (
    "axis",
    "term",
    "reference",
    "templates",
    "n_term",
    "n_reference",
    "refusal_rate_term",
    "refusal_rate_reference",
    "refusal_rate_diff",
    "refusal_rate_diff_low",
    "refusal_rate_diff_high",
    "moderation_rate_term",
    "moderation_rate_reference",
    "moderation_rate_diff",
    "moderation_rate_diff_low",
    "moderation_rate_diff_high",
    "answers_term",
    "answers_reference",
    "answer_chars_term",
    "answer_chars_reference",
    "answer_chars_diff",
    "answer_chars_diff_low",
    "answer_chars_diff_high",
    "comparisons",
    "refusal_rate_diff_low_adj",
    "refusal_rate_diff_high_adj",
    "moderation_rate_diff_low_adj",
    "moderation_rate_diff_high_adj",
    "answer_chars_diff_low_adj",
    "answer_chars_diff_high_adj",
)
_INTS = {"templates", "n_term", "n_reference", "answers_term", "answers_reference", "comparisons"}
SCHEMA = ", ".join(
    f"{f} {'string' if i < 3 else 'long' if f in _INTS else 'double'}"
    for i, f in enumerate(_FIELDS)
)


def compare(groups: list[dict[str, Any]], alpha: float = 0.05) -> list[tuple[Any, ...]]:
    """The ``fairness`` rows from the per (axis, template, term) counts (pure Python).

    Besides each comparison's own 95% interval, the ``*_adj`` intervals hold at the family-wise
    level ``1 - alpha`` over all ``comparisons`` rows of the table (Bonferroni: each at
    ``1 - alpha / comparisons``): a gap whose adjusted interval excludes 0 survives the many
    comparisons made."""
    cells: dict[tuple[str, str], dict[str, dict[str, int]]] = defaultdict(dict)
    for g in groups:
        cells[(g["axis"], g["term"])][g["template"]] = {c: int(g[c]) for c in GROUP_COLUMNS}
    pairs = []
    for axis, terms in AXES.items():
        ref = reference(axis)
        ref_cells = cells.get((axis, ref), {})
        for term in terms[1:]:
            term_cells = cells.get((axis, term), {})
            shared = sorted(set(term_cells) & set(ref_cells))
            if shared:
                a = {c: sum(term_cells[t][c] for t in shared) for c in GROUP_COLUMNS}
                b = {c: sum(ref_cells[t][c] for t in shared) for c in GROUP_COLUMNS}
                pairs.append((axis, term, ref, len(shared), a, b))
    m = len(pairs)
    z_adj = NormalDist().inv_cdf(1 - alpha / (2 * m)) if m else Z95
    out = []
    for axis, term, ref, templates, a, b in pairs:
        refusal = newcombe_difference(a["refused"], a["requests"], b["refused"], b["requests"])
        moderation = newcombe_difference(
            a["moderated"], a["requests"], b["moderated"], b["requests"]
        )
        mean_a, var_a = mean_var(a["answer_chars_sum"], a["answer_chars_sumsq"], a["answers"])
        mean_b, var_b = mean_var(b["answer_chars_sum"], b["answer_chars_sumsq"], b["answers"])
        length = welch_difference(mean_a, var_a, a["answers"], mean_b, var_b, b["answers"])
        refusal_adj = newcombe_difference(
            a["refused"], a["requests"], b["refused"], b["requests"], z_adj
        )
        moderation_adj = newcombe_difference(
            a["moderated"], a["requests"], b["moderated"], b["requests"], z_adj
        )
        length_adj = welch_difference(
            mean_a, var_a, a["answers"], mean_b, var_b, b["answers"], 1 - alpha / max(m, 1)
        )
        out.append(
            (
                axis,
                term,
                ref,
                templates,
                a["requests"],
                b["requests"],
                _rate(a["refused"], a["requests"]),
                _rate(b["refused"], b["requests"]),
                *refusal,
                _rate(a["moderated"], a["requests"]),
                _rate(b["moderated"], b["requests"]),
                *moderation,
                a["answers"],
                b["answers"],
                mean_a,
                mean_b,
                *length,
                m,
                *refusal_adj[1:],
                *moderation_adj[1:],
                *length_adj[1:],
            )
        )
    return out


def _rate(k: int, n: int) -> float:
    return k / n if n else math.nan


def run(spark: SparkSession, input: str, output: str) -> dict[str, str]:
    return runner.run_job(compute, spark, input, output)


def main(argv: list[str] | None = None) -> None:
    runner.main("fairness", compute, argv)


if __name__ == "__main__":
    main()
