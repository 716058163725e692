"""Latency: queue wait, time to first token, inter-token latency and end-to-end time.

Table ``latency`` — one row per (grouping, model, worker_id, hour, metric), where ``grouping`` is
``model`` (worker_id and hour null), ``model_worker`` (hour null) or ``model_hour`` (worker_id
null); ``hour`` is the UTC hour the request arrived (``chat.requests`` ``created_at``). Columns
``n`` (values), ``mean``, ``p50``, ``p95``, ``p99``, ``max``: exact percentiles with linear
interpolation (Spark's ``percentile``, numpy's default).

Metrics, over the answers of inference workers (not the moderation refusals):

* ``queue_wait_ms``, ``ttft_ms``, ``itl_ms``: the worker's ``timings`` (queue wait; first token
  after the worker picked the request; the request's mean inter-token gap);
* ``e2e_ms``: ``chat.completions`` ``created_at`` minus ``chat.requests`` ``created_at`` of the same
  request, as the archive sees it (moderation, queue, generation and the bus together);
* ``inter_chunk_ms``: the gaps between consecutive chunks of a stream (``chat.tokens``, by seq), the
  pauses a user sees.
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

METRICS = ("queue_wait_ms", "ttft_ms", "itl_ms", "e2e_ms", "inter_chunk_ms")
GROUPINGS: dict[str, tuple[str, ...]] = {
    "model": ("model",),
    "model_worker": ("model", "worker_id"),
    "model_hour": ("model", "hour"),
}
QUANTILES = (0.5, 0.95, 0.99)


def compute(spark: SparkSession, root: str) -> dict[str, DataFrame]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    requests = frames.requests(spark, root).select("request_id", "requested_at")
    answered = (
        frames.completions(spark, root)
        .where(F.col("worker_id") != frames.MODERATION_WORKER)
        .join(requests, "request_id", "left")
        .withColumn("hour", F.date_trunc("hour", F.coalesce("requested_at", "created_at")))
    )
    per_request = answered.select(
        "request_id",
        "model",
        "worker_id",
        "hour",
        F.col("timings.queue_wait_ms").alias("queue_wait_ms"),
        F.col("timings.time_to_first_token_ms").alias("ttft_ms"),
        F.col("timings.inter_token_mean_ms").alias("itl_ms"),
        frames.millis_between("created_at", "requested_at").alias("e2e_ms"),
    )
    long = per_request.unpivot(["model", "worker_id", "hour"], list(METRICS[:4]), "metric", "value")
    by_seq = Window.partitionBy("request_id").orderBy("seq")
    gaps = (
        frames.chunks(spark, root)
        .where(F.col("worker_id") != frames.MODERATION_WORKER)
        .withColumn("previous", F.lag("created_at").over(by_seq))
        .where(F.col("previous").isNotNull())
        .select("request_id", frames.millis_between("created_at", "previous").alias("value"))
        .join(per_request.select("request_id", "model", "worker_id", "hour"), "request_id")
        .select("model", "worker_id", "hour", F.lit("inter_chunk_ms").alias("metric"), "value")
    )
    values = long.unionByName(gaps).where(F.col("value").isNotNull())
    keys = ("model", "worker_id", "hour", "metric")
    # one pass: GROUPING SETS; grouping_id's bits say which of the keys were rolled up
    stats = values.groupingSets([[*cols, "metric"] for cols in GROUPINGS.values()], *keys).agg(
        F.grouping_id(*keys).alias("gid"),
        F.count("value").alias("n"),
        F.avg("value").alias("mean"),
        F.percentile("value", list(QUANTILES)).alias("q"),
        F.max("value").alias("max"),
    )
    names = F.create_map(
        *(
            x
            for grouping, cols in GROUPINGS.items()
            for x in (F.lit(_grouping_id(cols, keys)), F.lit(grouping))
        )
    )
    table = stats.select(
        names[F.col("gid")].alias("grouping"),
        "model",
        "worker_id",
        "hour",
        "metric",
        "n",
        "mean",
        *(F.col("q")[i].alias(f"p{round(q * 100)}") for i, q in enumerate(QUANTILES)),
        "max",
    )
    return {"latency": table.orderBy("grouping", "model", "worker_id", "hour", "metric")}


def _grouping_id(cols: tuple[str, ...], keys: tuple[str, ...]) -> int:
    """Spark's grouping_id of a grouping set: bit set (first key highest) = key rolled up."""
    return sum(
        1 << (len(keys) - 1 - i) for i, key in enumerate(keys) if key not in (*cols, "metric")
    )


def run(spark: SparkSession, input: str, output: str) -> dict[str, str]:
    return runner.run_job(compute, spark, input, output)


def main(argv: list[str] | None = None) -> None:
    runner.main("latency", compute, argv)


if __name__ == "__main__":
    main()
