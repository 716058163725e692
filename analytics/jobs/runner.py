"""What every job shares: writing its tables, and its command line under spark-submit."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Compute = Callable[["SparkSession", str], dict[str, "DataFrame"]]


def table_path(output: str, table: str) -> str:
    return f"{output.rstrip('/')}/{table}"


def write_tables(tables: dict[str, DataFrame], output: str) -> dict[str, str]:
    """Each table as Parquet under ``output/<table>/`` (replacing what was there)."""
    paths = {}
    for name, frame in tables.items():
        paths[name] = table_path(output, name)
        frame.write.mode("overwrite").parquet(paths[name])
    return paths


def run_job(compute: Compute, spark: SparkSession, input_root: str, output: str) -> dict[str, str]:
    """Check the archive is there, compute the job's tables, write them; their paths."""
    from analytics import frames
    from analytics.archive_reader import assert_archive

    assert_archive(spark, input_root)
    with frames.cached_archive(input_root):
        return write_tables(compute(spark, input_root), output)


def main(job: str, compute: Compute, argv: list[str] | None = None) -> None:
    """``--input ROOT --output DIR``: what ``spark-submit analytics/jobs/<job>.py`` runs."""
    from analytics.spark_session import build_spark, needs_s3a
    from chatbus.settings import get_settings

    parser = argparse.ArgumentParser(
        prog=f"analytics/jobs/{job}.py", description=f"The {job} job over the chatbus archive."
    )
    parser.add_argument(
        "--input", required=True, help="archive root: a folder, or s3a://BUCKET/PREFIX"
    )
    parser.add_argument(
        "--output", required=True, help="where the Parquet tables go (folder or s3a://)"
    )
    args = parser.parse_args(argv)
    settings = get_settings()
    spark = build_spark(settings, f"chatbus-{job}", s3a=needs_s3a(args.input, args.output))
    try:
        started = time.perf_counter()
        paths = run_job(compute, spark, args.input, args.output)
        for name, path in paths.items():
            print(f"{name}: {path}")
        print(f"{job} done in {time.perf_counter() - started:.1f} s")
    finally:
        spark.stop()
