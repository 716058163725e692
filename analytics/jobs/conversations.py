"""Conversations: turns, lengths, cancellation and abandonment.

Per request (``chat.requests``): ``prompt_chars`` (its last user message), its completion's
``answer_chars`` and ``completion_tokens`` (0 without one); it is *answered* when a completion
exists, and *cancelled* when its completion ended ``cancelled`` or, with no completion, the
client sent a cancel (``chat.control``, reason other than ``content_filter``).

Table ``conversations`` — one row per conversation: ``user_id`` and ``model`` (of its first
request), ``turns`` (requests), ``first_at``, ``last_at``, ``duration_s``, ``prompt_chars``,
``answer_chars``, ``completion_tokens`` (sums), ``cancelled_requests``, ``abandoned``: its last
request (latest ``created_at``) got no completion or was cancelled.

Table ``conversation_summary`` — per ``model`` and ``"(all)"``: ``conversations``, ``requests``,
``mean_turns``, ``p50_turns``, ``p90_turns``, ``max_turns``, ``mean_prompt_chars``,
``p50_prompt_chars``, ``p99_prompt_chars``, ``mean_answer_chars``, ``p50_answer_chars``,
``p99_answer_chars`` (per answered request), ``cancellation_rate`` (cancelled / requests),
``abandonment_rate`` (abandoned / conversations).

Table ``turns_histogram`` — ``turns`` → ``conversations``.
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


def per_request(spark: SparkSession, root: str) -> DataFrame:
    from pyspark.sql import functions as F

    answers = frames.completions(spark, root).select(
        "request_id",
        "finish_reason",
        F.length("text").alias("answer_chars"),
        F.col("usage.completion_tokens").alias("completion_tokens"),
    )
    client_cancels = (
        frames.cancels(spark, root)
        .where(F.col("reason") != "content_filter")
        .select("request_id", F.lit(True).alias("cancel_sent"))
        .dropDuplicates(["request_id"])
    )
    answered = F.col("finish_reason").isNotNull()
    return (
        frames.requests(spark, root)
        .join(answers, "request_id", "left")
        .join(client_cancels, "request_id", "left")
        .select(
            "request_id",
            "conversation_id",
            "user_id",
            "model",
            "requested_at",
            F.length("prompt").alias("prompt_chars"),
            "answer_chars",
            F.coalesce("completion_tokens", F.lit(0)).alias("completion_tokens"),
            answered.alias("answered"),
            F.when(answered, F.col("finish_reason") == "cancelled")
            .otherwise(F.coalesce("cancel_sent", F.lit(False)))
            .alias("cancelled"),
        )
    )


def compute(spark: SparkSession, root: str) -> dict[str, DataFrame]:
    from pyspark.sql import functions as F

    requests = per_request(spark, root)
    last = F.max_by(F.struct("answered", "cancelled"), F.struct("requested_at", "request_id"))
    conversations = (
        requests.groupBy("conversation_id")
        .agg(
            F.min_by("user_id", F.struct("requested_at", "request_id")).alias("user_id"),
            F.min_by("model", F.struct("requested_at", "request_id")).alias("model"),
            F.count("*").alias("turns"),
            F.min("requested_at").alias("first_at"),
            F.max("requested_at").alias("last_at"),
            F.sum("prompt_chars").alias("prompt_chars"),
            F.coalesce(F.sum("answer_chars"), F.lit(0)).alias("answer_chars"),
            F.sum("completion_tokens").alias("completion_tokens"),
            F.sum(F.col("cancelled").cast("long")).alias("cancelled_requests"),
            last.alias("last"),
        )
        .withColumn("duration_s", frames.millis_between("last_at", "first_at") / 1000.0)
        .withColumn("abandoned", ~F.col("last.answered") | F.col("last.cancelled"))
        .drop("last")
    )

    def summary(by_model: bool) -> DataFrame:
        conv = conversations if by_model else conversations.withColumn("model", F.lit(ALL_MODELS))
        reqs = requests if by_model else requests.withColumn("model", F.lit(ALL_MODELS))
        per_conv = conv.groupBy("model").agg(
            F.count("*").alias("conversations"),
            F.avg("turns").alias("mean_turns"),
            F.percentile("turns", [0.5, 0.9]).alias("turn_q"),
            F.max("turns").alias("max_turns"),
            F.avg(F.col("abandoned").cast("double")).alias("abandonment_rate"),
        )
        per_req = reqs.groupBy("model").agg(
            F.count("*").alias("requests"),
            F.avg("prompt_chars").alias("mean_prompt_chars"),
            F.percentile("prompt_chars", [0.5, 0.99]).alias("prompt_q"),
            F.avg("answer_chars").alias("mean_answer_chars"),
            F.percentile("answer_chars", [0.5, 0.99]).alias("answer_q"),
            F.avg(F.col("cancelled").cast("double")).alias("cancellation_rate"),
        )
        return per_conv.join(per_req, "model").select(
            "model",
            "conversations",
            "requests",
            "mean_turns",
            F.col("turn_q")[0].alias("p50_turns"),
            F.col("turn_q")[1].alias("p90_turns"),
            "max_turns",
            "mean_prompt_chars",
            F.col("prompt_q")[0].alias("p50_prompt_chars"),
            F.col("prompt_q")[1].alias("p99_prompt_chars"),
            "mean_answer_chars",
            F.col("answer_q")[0].alias("p50_answer_chars"),
            F.col("answer_q")[1].alias("p99_answer_chars"),
            "cancellation_rate",
            "abandonment_rate",
        )

    summary_table = summary(True).unionByName(summary(False)).orderBy("model")
    histogram = (
        conversations.groupBy("turns").agg(F.count("*").alias("conversations")).orderBy("turns")
    )
    return {
        "conversations": conversations.orderBy("conversation_id"),
        "conversation_summary": summary_table,
        "turns_histogram": histogram,
    }


def run(spark: SparkSession, input: str, output: str) -> dict[str, str]:
    return runner.run_job(compute, spark, input, output)


def main(argv: list[str] | None = None) -> None:
    runner.main("conversations", compute, argv)


if __name__ == "__main__":
    main()
