"""The archive's topics as the jobs use them: one row per business entity.

The bus is at-least-once, so an event may be archived twice (at two offsets). Each frame drops
duplicates by the key the contract gives it — a request by ``request_id``, a chunk by
``(request_id, seq)``, a verdict or a cancel by ``event_id`` — which also drops a record archived
twice at the same offset.

Inside :func:`cached_archive` each frame is parsed once and kept in Spark's cache, so the report
and the benchmark (five jobs, several uses of ``chat.requests`` each) parse each topic once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from analytics.archive_reader import read_topic
from schemas.topics import TopicName

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

MODERATION_WORKER = "moderation"  # worker_id of the input-moderation refusal

_CACHED_ROOTS: set[str] = set()
_CACHE: dict[tuple[str, str], DataFrame] = {}


@contextmanager
def cached_archive(root: str) -> Iterator[None]:
    """Within: the frames of ``root`` are parsed once and cached; released on exit."""
    owner = root not in _CACHED_ROOTS
    _CACHED_ROOTS.add(root)
    try:
        yield
    finally:
        if owner:
            _CACHED_ROOTS.discard(root)
            for key in [k for k in _CACHE if k[0] == root]:
                _CACHE.pop(key).unpersist()


def _frame(root: str, name: str, build: Callable[[], DataFrame]) -> DataFrame:
    if root not in _CACHED_ROOTS:
        return build()
    if (root, name) not in _CACHE:
        _CACHE[(root, name)] = build().cache()
    return _CACHE[(root, name)]


_FEEDBACK = ("event_id", "created_at", "request_id", "conversation_id", "user_id", "comment")
APPEAL_COLUMNS = (*_FEEDBACK, "stage", "categories")
RATING_COLUMNS = (*_FEEDBACK, "model", "rating", "category")


def _micros(column: str) -> Column:
    from pyspark.sql import functions as F

    return F.unix_micros(F.col(column))


def requests(spark: SparkSession, root: str) -> DataFrame:
    """``chat.requests``: one row per request, with ``prompt`` (its last user message)."""
    from pyspark.sql import functions as F

    def build() -> DataFrame:
        frame = read_topic(spark, root, TopicName.REQUESTS, dedupe_by=("request_id",))
        last_user = F.element_at(F.filter("messages", lambda m: m["role"] == "user"), -1)
        return frame.select(
            "request_id",
            "conversation_id",
            "user_id",
            "model",
            "use_history",
            F.col("created_at").alias("requested_at"),
            F.coalesce(last_user["content"], F.lit("")).alias("prompt"),
        )

    return _frame(root, "requests", build)


def completions(spark: SparkSession, root: str) -> DataFrame:
    """``chat.completions``: one row per request that got an answer (or a refusal)."""
    return _frame(
        root,
        "completions",
        lambda: read_topic(spark, root, TopicName.COMPLETIONS, dedupe_by=("request_id",)),
    )


def verdicts(spark: SparkSession, root: str) -> DataFrame:
    """``chat.moderation``: every verdict (input and output stage)."""
    return _frame(
        root,
        "verdicts",
        lambda: read_topic(spark, root, TopicName.MODERATION, dedupe_by=("event_id",)),
    )


def appeals(spark: SparkSession, root: str) -> DataFrame:
    """``chat.feedback``: users' appeals of refusals, the latest per request (an appeal of the
    same request again replaces the earlier one)."""
    from pyspark.sql import functions as F

    def build() -> DataFrame:
        every = read_topic(spark, root, TopicName.FEEDBACK, dedupe_by=("event_id",))
        return _latest_per_request(every.where(F.col("type") == "chat.appeal")).select(
            *APPEAL_COLUMNS
        )

    return _frame(root, "appeals", build)


def ratings(spark: SparkSession, root: str) -> DataFrame:
    """``chat.feedback``: users' ratings of answers (``rating`` up or down, ``category``,
    ``comment``, ``model``), the latest per request (a second rating replaces the first)."""
    from pyspark.sql import functions as F

    def build() -> DataFrame:
        every = read_topic(spark, root, TopicName.FEEDBACK, dedupe_by=("event_id",))
        return _latest_per_request(every.where(F.col("type") == "chat.rating")).select(
            *RATING_COLUMNS
        )

    return _frame(root, "ratings", build)


def _latest_per_request(events: DataFrame) -> DataFrame:
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    latest = Window.partitionBy("request_id").orderBy(F.desc("created_at"), F.desc("event_id"))
    return events.withColumn("n", F.row_number().over(latest)).where("n = 1").drop("n")


def cancels(spark: SparkSession, root: str) -> DataFrame:
    """``chat.control``: cancel requests."""
    return _frame(
        root, "cancels", lambda: read_topic(spark, root, TopicName.CONTROL, dedupe_by=("event_id",))
    )


def chunks(spark: SparkSession, root: str) -> DataFrame:
    """``chat.tokens``: one row per (request_id, seq), without the token ids (not needed)."""
    return _frame(
        root,
        "chunks",
        lambda: read_topic(spark, root, TopicName.TOKENS, dedupe_by=("request_id", "seq")).select(
            "request_id", "seq", "created_at", "worker_id", "finish_reason"
        ),
    )


def millis_between(later: str, earlier: str) -> Column:
    """``later - earlier`` in milliseconds (microsecond precision)."""
    return (_micros(later) - _micros(earlier)) / 1000.0
