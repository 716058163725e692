"""Moderation: flag rates by category, input versus output, and a sample for human review.

Table ``moderation_rates`` — one row per (stage, category): ``verdicts`` (all verdicts of the
stage), ``flagged`` (verdicts with that category true) and ``rate`` = flagged / verdicts. Besides
the taxonomy's categories, ``category = "any"`` counts flagged verdicts (``flagged`` true) and
``"pii"`` verdicts that found personal data (non-empty ``pii``).

Table ``moderation_review_sample`` — flagged verdicts for a human to review: at most
``SAMPLE_PER_CATEGORY`` per (stage, category), where a verdict's category is its highest-scoring
flagged category, picked by a hash of ``event_id`` (a stable pseudo-random sample: the same archive
gives the same sample). ``text`` is what was judged: the prompt (its last user message) for the
input stage, the answer for the output stage, cut to 1,000 characters.

Table ``moderation_appeals`` — refusals users marked as wrong (``chat.feedback``): one row per
appealed request with its stage, the categories moderation flagged, the user's comment and the
refused text (the prompt, or the answer as far as it got), for review; and
``moderation_appeal_rates`` — per stage, refusals (flagged verdicts), appeals, and their ratio.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a file by spark-submit: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics import frames
from analytics.jobs import runner

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

SAMPLE_PER_CATEGORY = 20
TEXT_CHARS = 1000


def _judged_text() -> Column:
    """What moderation judged: the prompt at the input stage, the answer at the output stage
    (joined in as ``prompt`` and ``answer``), cut to ``TEXT_CHARS``."""
    from pyspark.sql import functions as F

    judged = F.when(F.col("stage") == "input", F.col("prompt")).otherwise(F.col("answer"))
    return F.substring(judged, 1, TEXT_CHARS).alias("text")


def compute(spark: SparkSession, root: str) -> dict[str, DataFrame]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    verdicts = frames.verdicts(spark, root)
    totals = verdicts.groupBy("stage").agg(F.count("*").alias("verdicts"))
    per_category = (
        verdicts.select("stage", F.explode("categories").alias("category", "hit"))
        .groupBy("stage", "category")
        .agg(F.sum(F.col("hit").cast("long")).alias("flagged"))
    )
    special = verdicts.groupBy("stage").agg(
        F.sum(F.col("flagged").cast("long")).alias("any"),
        F.sum((F.size("pii") > 0).cast("long")).alias("pii"),
    )
    special = special.unpivot("stage", ["any", "pii"], "category", "flagged")
    rates = (
        per_category.unionByName(special)
        .join(totals, "stage")
        .withColumn("rate", F.col("flagged") / F.col("verdicts"))
        .select("stage", "category", "verdicts", "flagged", "rate")
        .orderBy("stage", "category")
    )

    flagged = verdicts.where("flagged")
    top = (
        flagged.select("*", F.explode("categories").alias("category", "hit"))
        .where("hit")
        .withColumn(
            "score", F.coalesce(F.element_at("category_scores", F.col("category")), F.lit(0.0))
        )
    )
    best = Window.partitionBy("event_id").orderBy(F.desc("score"), "category")
    top = top.withColumn("rank", F.row_number().over(best)).where("rank = 1")
    pick = Window.partitionBy("stage", "category").orderBy(F.xxhash64("event_id"), "event_id")
    sample = top.withColumn("pick", F.row_number().over(pick)).where(
        F.col("pick") <= SAMPLE_PER_CATEGORY
    )
    prompts = frames.requests(spark, root).select("request_id", "prompt")
    answers = frames.completions(spark, root).select("request_id", F.col("text").alias("answer"))
    review = (
        sample.join(prompts, "request_id", "left")
        .join(answers, "request_id", "left")
        .select(
            "stage",
            "category",
            "score",
            "action",
            "request_id",
            "conversation_id",
            "user_id",
            "created_at",
            _judged_text(),
        )
        .orderBy("stage", "category", "request_id")
    )
    appeals = frames.appeals(spark, root)
    appealed = (
        appeals.join(prompts, "request_id", "left")
        .join(answers, "request_id", "left")
        .select(
            "stage",
            F.concat_ws(", ", "categories").alias("categories"),
            "comment",
            "request_id",
            "user_id",
            "created_at",
            _judged_text(),
        )
        .orderBy("stage", "created_at", "request_id")
    )
    refusals = flagged.groupBy("stage").agg(F.count("*").alias("refusals"))
    appeal_rates = (
        refusals.join(appeals.groupBy("stage").agg(F.count("*").alias("appeals")), "stage", "left")
        .fillna(0, ["appeals"])
        .withColumn("appeal_rate", F.col("appeals") / F.col("refusals"))
        .orderBy("stage")
    )
    return {
        "moderation_rates": rates,
        "moderation_review_sample": review,
        "moderation_appeals": appealed,
        "moderation_appeal_rates": appeal_rates,
    }


def run(spark: SparkSession, input: str, output: str) -> dict[str, str]:
    return runner.run_job(compute, spark, input, output)


def main(argv: list[str] | None = None) -> None:
    runner.main("moderation", compute, argv)


if __name__ == "__main__":
    main()
