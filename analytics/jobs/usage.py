"""Usage: requests, conversations, active users and tokens per UTC day and model.

Table ``usage_daily`` — one row per (day, model), plus one per day with ``model = "(all)"``
(users active on several models count once there). ``day`` is the UTC date the request arrived
(``chat.requests`` ``created_at``); a request's tokens are its completion's ``usage`` (0 for a
request without a completion), counted on the request's day and model.

Columns: ``requests``, ``conversations`` (distinct), ``active_users`` (distinct ``user_id``),
``answered`` (requests with a completion, refusals included), ``prompt_tokens``,
``completion_tokens``, ``total_tokens``.

Table ``usage_by_request`` — one row per answered request, as the usage ledger in PostgreSQL
counts it (``chatbus usage verify`` compares the two): the request's *first* completion on the log
(lowest partition offset, as the ledger keeps it), its ``completed_at`` (the completion's
``created_at``), ``model``, ``user_id``, ``key_id`` and tokens.
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
    from pyspark.sql import DataFrame, SparkSession

ALL_MODELS = "(all)"


def compute(spark: SparkSession, root: str) -> dict[str, DataFrame]:
    from pyspark.sql import functions as F

    tokens = frames.completions(spark, root).select(
        "request_id",
        F.col("usage.prompt_tokens").alias("prompt_tokens"),
        F.col("usage.completion_tokens").alias("completion_tokens"),
        F.lit(1).alias("answered"),
    )
    joined = (
        frames.requests(spark, root)
        .join(tokens, "request_id", "left")
        .withColumn("day", F.to_date("requested_at"))
    )
    aggregates = [
        F.count("*").alias("requests"),
        F.countDistinct("conversation_id").alias("conversations"),
        F.countDistinct("user_id").alias("active_users"),
        F.count("answered").alias("answered"),
        F.coalesce(F.sum("prompt_tokens"), F.lit(0)).alias("prompt_tokens"),
        F.coalesce(F.sum("completion_tokens"), F.lit(0)).alias("completion_tokens"),
    ]
    by_model = joined.groupBy("day", "model").agg(*aggregates)
    by_day = joined.groupBy("day").agg(*aggregates).withColumn("model", F.lit(ALL_MODELS))
    table = (
        by_model.unionByName(by_day)
        .withColumn("total_tokens", F.col("prompt_tokens") + F.col("completion_tokens"))
        .orderBy("day", "model")
    )
    return {"usage_daily": table, "usage_by_request": by_request(spark, root)}


def by_request(spark: SparkSession, root: str) -> DataFrame:
    """Each request's first completion (by partition offset), as the ledger keeps it."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from analytics.archive_reader import read_topic
    from schemas.topics import TopicName

    every = read_topic(spark, root, TopicName.COMPLETIONS)
    first = Window.partitionBy("request_id").orderBy("kafka_partition", "kafka_offset")
    return (
        every.withColumn("n", F.row_number().over(first))
        .where("n = 1")
        .select(
            "request_id",
            F.col("created_at").alias("completed_at"),
            "model",
            "user_id",
            F.coalesce(F.col("key_id"), F.lit("")).alias("key_id"),
            F.col("usage.prompt_tokens").alias("prompt_tokens"),
            F.col("usage.completion_tokens").alias("completion_tokens"),
        )
    )


def run(spark: SparkSession, input: str, output: str) -> dict[str, str]:
    return runner.run_job(compute, spark, input, output)


def main(argv: list[str] | None = None) -> None:
    runner.main("usage", compute, argv)


if __name__ == "__main__":
    main()
