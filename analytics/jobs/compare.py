"""Compare: production and a candidate model side by side on the same prompts.

The candidate's answers come from a shadow run (``chatbus shadow``): its archive holds the
replayed requests, keeping production's request ids, the candidate's completions and their
output moderation verdicts. Every table pairs a request's production answer (from the
production archive) with the candidate's answer to the same request.

Table ``compare_pairs`` — one row per prompt pair: ``request_id``, ``prompt``, and for
``production_*`` and ``candidate_*``: ``model``, ``answer`` (1,000 characters), ``chars``,
``finish_reason``, ``refused`` (ended ``content_filter`` or starts like a refusal:
:data:`analytics.lexicon.REFUSAL_PATTERN`), ``flagged`` (its output verdict flagged it),
``completion_tokens``, ``total_ms``, ``ttft_ms``; ``rating`` (the user's rating of the
production answer, if any) and ``overlap`` (word Jaccard similarity of the two answers).

Table ``compare_summary`` — one row per side (``production``, ``candidate``): ``model``,
``prompts``, ``mean_chars``, ``refused`` and ``refusal_rate`` with its Wilson 95% interval,
``flagged`` and ``moderation_rate`` with its interval, ``mean_completion_tokens``,
``total_ms_p50``/``p95``, ``ttft_ms_p50``/``p95``, ``up_rated`` (pairs whose production answer
users rated up) and ``agreement_with_up_rated`` (the candidate's mean overlap with those
up-rated answers; null for production, which agrees with itself).

Table ``compare_moderation`` — per side and moderation category: ``flagged``, ``prompts``,
``rate``.

Table ``compare_fairness`` — the fairness job's table (:mod:`analytics.jobs.fairness`, with
Bonferroni-adjusted intervals) for each ``side``, over the same prompts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a file by spark-submit: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics import frames
from analytics.columns import wilson_bounds, word_overlap
from analytics.jobs import fairness
from analytics.lexicon import REFUSAL_PATTERN

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SIDES = ("production", "candidate")
TEXT_CHARS = 1000
_SIDE_COLUMNS = (
    "model",
    "answer",
    "chars",
    "finish_reason",
    "refused",
    "flagged",
    "categories",
    "completion_tokens",
    "total_ms",
    "ttft_ms",
)


def answers(spark: SparkSession, root: str) -> DataFrame:
    """One row per answered request of ``root``: the answer and how it was judged and served."""
    from pyspark.sql import functions as F

    verdicts = (
        frames.verdicts(spark, root)
        .where(F.col("stage") == "output")
        .groupBy("request_id")
        .agg(
            F.max(F.col("flagged").cast("int")).alias("flagged"),
            F.first("categories").alias("categories"),
        )
    )
    return (
        frames.completions(spark, root)
        .join(verdicts, "request_id", "left")
        .select(
            "request_id",
            "model",
            F.col("text").alias("answer"),
            F.length("text").alias("chars"),
            "finish_reason",
            (
                (F.col("finish_reason") == "content_filter") | F.col("text").rlike(REFUSAL_PATTERN)
            ).alias("refused"),
            (F.coalesce("flagged", F.lit(0)) == 1).alias("flagged"),
            "categories",
            F.col("usage.completion_tokens").alias("completion_tokens"),
            F.col("timings.total_ms").alias("total_ms"),
            F.col("timings.time_to_first_token_ms").alias("ttft_ms"),
        )
    )


def _prefixed(frame: DataFrame, side: str) -> DataFrame:
    from pyspark.sql import functions as F

    return frame.select("request_id", *(F.col(c).alias(f"{side}_{c}") for c in _SIDE_COLUMNS))


def compute(spark: SparkSession, production: str, candidate: str) -> dict[str, DataFrame]:
    from pyspark.sql import functions as F

    prompts = frames.requests(spark, production).select("request_id", "prompt")
    ratings = frames.ratings(spark, production).select("request_id", "rating")
    joined = (
        _prefixed(answers(spark, production), "production")
        .join(_prefixed(answers(spark, candidate), "candidate"), "request_id")
        .join(prompts, "request_id", "left")
        .join(ratings, "request_id", "left")
        .withColumn("overlap", word_overlap("production_answer", "candidate_answer"))
    ).cache()
    pairs = joined.select(
        "request_id",
        "prompt",
        *(
            F.substring(f"{side}_{c}", 1, TEXT_CHARS).alias(f"{side}_{c}")
            if c == "answer"
            else F.col(f"{side}_{c}")
            for side in SIDES
            for c in _SIDE_COLUMNS
            if c != "categories"
        ),
        "rating",
        "overlap",
    ).orderBy("request_id")

    summaries = []
    for side in SIDES:
        col = lambda c, s=side: F.col(f"{s}_{c}")  # noqa: E731 - a column of this side
        up = F.col("rating") == "up"
        agreement = F.avg(F.when(up, F.col("overlap"))) if side == "candidate" else F.lit(None)
        summary = joined.agg(
            F.first(col("model"), ignorenulls=True).alias("model"),
            F.count("*").alias("prompts"),
            F.avg(col("chars")).alias("mean_chars"),
            F.sum(col("refused").cast("long")).alias("refused"),
            F.sum(col("flagged").cast("long")).alias("flagged"),
            F.avg(col("completion_tokens")).alias("mean_completion_tokens"),
            F.percentile_approx(col("total_ms"), 0.5).alias("total_ms_p50"),
            F.percentile_approx(col("total_ms"), 0.95).alias("total_ms_p95"),
            F.percentile_approx(col("ttft_ms"), 0.5).alias("ttft_ms_p50"),
            F.percentile_approx(col("ttft_ms"), 0.95).alias("ttft_ms_p95"),
            F.count(F.when(up, 1)).alias("up_rated"),
            agreement.cast("double").alias("agreement_with_up_rated"),
        )
        refusal_low, refusal_high = wilson_bounds("refused", "prompts")
        flag_low, flag_high = wilson_bounds("flagged", "prompts")
        summaries.append(
            summary.select(
                F.lit(side).alias("side"),
                "model",
                "prompts",
                "mean_chars",
                "refused",
                (F.col("refused") / F.col("prompts")).alias("refusal_rate"),
                refusal_low.alias("refusal_rate_low"),
                refusal_high.alias("refusal_rate_high"),
                "flagged",
                (F.col("flagged") / F.col("prompts")).alias("moderation_rate"),
                flag_low.alias("moderation_rate_low"),
                flag_high.alias("moderation_rate_high"),
                "mean_completion_tokens",
                "total_ms_p50",
                "total_ms_p95",
                "ttft_ms_p50",
                "ttft_ms_p95",
                "up_rated",
                "agreement_with_up_rated",
            )
        )
    summary_table = summaries[0].unionByName(summaries[1])

    moderation = []
    prompts_n = joined.count()
    for side in SIDES:
        moderation.append(
            joined.select(F.explode(f"{side}_categories").alias("category", "hit"))
            .groupBy("category")
            .agg(F.sum(F.col("hit").cast("long")).alias("flagged"))
            .select(
                F.lit(side).alias("side"),
                "category",
                "flagged",
                F.lit(prompts_n).alias("prompts"),
                (F.col("flagged") / F.lit(max(prompts_n, 1))).alias("rate"),
            )
        )
    moderation_table = moderation[0].unionByName(moderation[1]).orderBy("category", "side")

    paired = joined.select("request_id")
    rows = []
    for side, root in (("production", production), ("candidate", candidate)):
        counts = fairness.group_counts(spark, root, only=paired)
        rows += [(side, *row) for row in fairness.compare([r.asDict() for r in counts.collect()])]
    fairness_table = spark.createDataFrame(rows, schema=f"side string, {fairness.SCHEMA}")
    return {
        "compare_pairs": pairs,
        "compare_summary": summary_table,
        "compare_moderation": moderation_table,
        "compare_fairness": fairness_table,
    }


def run(spark: SparkSession, production: str, candidate: str, output: str) -> dict[str, str]:
    """Check both archives are there, compute the tables, write them; their paths."""
    from analytics.archive_reader import assert_archive
    from analytics.jobs.runner import write_tables
    from schemas.topics import TopicName

    assert_archive(spark, production)
    assert_archive(spark, candidate, TopicName.COMPLETIONS)
    with frames.cached_archive(production), frames.cached_archive(candidate):
        return write_tables(compute(spark, production, candidate), output)


def main(argv: list[str] | None = None) -> None:
    """``--input PRODUCTION --candidate SHADOW --output DIR`` under spark-submit."""
    from analytics.spark_session import build_spark, needs_s3a
    from chatbus.settings import get_settings

    parser = argparse.ArgumentParser(
        prog="analytics/jobs/compare.py",
        description="Production and a candidate's shadow run side by side on the same prompts.",
    )
    parser.add_argument("--input", required=True, help="the production archive root")
    parser.add_argument("--candidate", required=True, help="the shadow run's archive root")
    parser.add_argument("--output", required=True, help="where the Parquet tables go")
    args = parser.parse_args(argv)
    s3a = needs_s3a(args.input, args.candidate, args.output)
    spark = build_spark(get_settings(), "chatbus-compare", s3a=s3a)
    try:
        started = time.perf_counter()
        for name, path in run(spark, args.input, args.candidate, args.output).items():
            print(f"{name}: {path}")
        print(f"compare done in {time.perf_counter() - started:.1f} s")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
