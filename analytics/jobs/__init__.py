"""The analytics jobs: each module has ``compute(spark, root) -> {table: DataFrame}``,
``run(spark, input, output)`` (writes each table as Parquet under ``output/<table>/``) and a
``main()`` for ``spark-submit analytics/jobs/<job>.py --input … --output …``."""

JOBS: tuple[str, ...] = (
    "latency",
    "usage",
    "moderation",
    "feedback",
    "conversations",
    "fairness",
)
