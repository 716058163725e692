"""Feedback: how users rate the answers, by model and over time, and the worst-rated for review.

A rating is a user's up or down on one of their answers (``chat.feedback``, type
``chat.rating``); a second rating of the same answer replaces the first, so each answer counts
once, with its latest rating (:func:`analytics.frames.ratings`).

Table ``feedback_by_model`` — one row per model: ``answers`` (completions of the model),
``rated``, ``up``, ``down``, ``rated_share`` = rated / answers, ``up_rate`` = up / rated with its
Wilson 95% interval ``up_rate_low``, ``up_rate_high``.

Table ``feedback_daily`` — one row per (UTC day of the rating, model): ``rated``, ``up``,
``down``, ``up_rate``.

Table ``feedback_categories`` — one row per (model, rating, category): ``ratings`` (category
``"(none)"`` when the user gave none).

Table ``feedback_review_sample`` — down-rated answers for a human to review: at most
``SAMPLE_PER_MODEL`` per model, picked by a hash of the request id (a stable pseudo-random
sample), with the category, the comment, the prompt and the answer (cut to 1,000 characters).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

if __package__ in (None, ""):  # run as a file by spark-submit: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics import frames
from analytics.columns import wilson_bounds
from analytics.jobs import runner

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SAMPLE_PER_MODEL = 25
TEXT_CHARS = 1000


def compute(spark: SparkSession, root: str) -> dict[str, DataFrame]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    ratings = frames.ratings(spark, root)
    completions = frames.completions(spark, root).select(
        "request_id", F.col("model").alias("answered_by"), F.col("text").alias("answer")
    )
    # the model is the completion's (the rating names it too; a rating whose completion is
    # not archived keeps the rating's)
    rated = ratings.join(completions, "request_id", "left").withColumn(
        "model", F.coalesce("answered_by", "model")
    )
    up = (F.col("rating") == "up").cast("long")
    counts = [
        F.count("*").alias("rated"),
        F.sum(up).alias("up"),
        F.sum(1 - up).alias("down"),
    ]
    answers = completions.groupBy(F.col("answered_by").alias("model")).agg(
        F.count("*").alias("answers")
    )
    low, high = wilson_bounds("up", "rated")
    by_model = (
        answers.join(rated.groupBy("model").agg(*counts), "model", "full")
        .fillna(0, ["answers", "rated", "up", "down"])
        .withColumn("rated_share", F.when(F.col("answers") > 0, F.col("rated") / F.col("answers")))
        .withColumn("up_rate", F.when(F.col("rated") > 0, F.col("up") / F.col("rated")))
        .withColumn("up_rate_low", low)
        .withColumn("up_rate_high", high)
        .orderBy("model")
    )
    daily = (
        rated.withColumn("day", F.to_date("created_at"))
        .groupBy("day", "model")
        .agg(*counts)
        .withColumn("up_rate", F.col("up") / F.col("rated"))
        .orderBy("day", "model")
    )
    categories = (
        rated.withColumn("category", F.coalesce("category", F.lit("(none)")))
        .groupBy("model", "rating", "category")
        .agg(F.count("*").alias("ratings"))
        .orderBy("model", "rating", F.desc("ratings"), "category")
    )
    prompts = frames.requests(spark, root).select("request_id", "prompt")
    pick = Window.partitionBy("model").orderBy(F.xxhash64("request_id"), "request_id")
    review = (
        rated.where(F.col("rating") == "down")
        .withColumn("pick", F.row_number().over(pick))
        .where(F.col("pick") <= SAMPLE_PER_MODEL)
        .join(prompts, "request_id", "left")
        .select(
            "model",
            F.coalesce("category", F.lit("")).alias("category"),
            "comment",
            "request_id",
            "user_id",
            "created_at",
            F.substring("prompt", 1, TEXT_CHARS).alias("prompt"),
            F.substring("answer", 1, TEXT_CHARS).alias("answer"),
        )
        .orderBy("model", "request_id")
    )
    return {
        "feedback_by_model": by_model,
        "feedback_daily": daily,
        "feedback_categories": categories,
        "feedback_review_sample": review,
    }


def run(spark: SparkSession, input: str, output: str) -> dict[str, str]:
    return runner.run_job(compute, spark, input, output)


def main(argv: list[str] | None = None) -> None:
    runner.main("feedback", compute, argv)


if __name__ == "__main__":
    main()
