"""The archive's turns as candidate training examples, each with the reason it is dropped.

A *turn* is one request (``chat.requests``, one row per ``request_id``) with its messages as
archived, its answer (``chat.completions``), its verdicts (``chat.moderation``, input and output)
and its latest rating (``chat.feedback``, :func:`analytics.frames.ratings`). ``drop_reason`` is the
first of these that applies (null: the turn is kept):

``no_answer``
    no completion was archived (the client gave up, or the request was lost);
``flagged``
    a verdict, input or output, flagged it (whatever its rating);
``finish_<reason>``
    its completion ended with one of the dropped finish reasons — by default ``content_filter``
    (stopped by output moderation), ``cancelled`` (the client stopped it), ``error`` (the worker
    failed) and ``length`` (cut at ``max_tokens``): a cut answer is not a good target, a model
    would learn to stop mid-sentence;
``refused``
    the answer starts like a refusal (:data:`analytics.lexicon.REFUSAL_PATTERN`);
``empty_answer``
    nothing but white space;
``rated_down``
    the user's latest rating is down.

A kept turn's ``source`` is ``rated_up`` (latest rating up) or ``unrated``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics import frames
from analytics.archive_reader import read_topic
from analytics.lexicon import REFUSAL_PATTERN
from schemas.topics import TopicName

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

DROP_FINISH_REASONS: tuple[str, ...] = ("content_filter", "cancelled", "error", "length")
DROP_REASONS_BEFORE_FINISH = ("no_answer", "flagged")
DROP_REASONS_AFTER_FINISH = ("refused", "empty_answer", "rated_down")


def drop_reasons(drop_finish: tuple[str, ...] = DROP_FINISH_REASONS) -> tuple[str, ...]:
    """Every ``drop_reason`` a turn can get, in the order they are tried."""
    return (
        *DROP_REASONS_BEFORE_FINISH,
        *(f"finish_{r}" for r in drop_finish),
        *DROP_REASONS_AFTER_FINISH,
    )


def turns(spark: SparkSession, root: str) -> DataFrame:
    """One row per request: ``request_id``, ``conversation_id``, ``model``, ``requested_at``,
    ``messages`` (array of role/content), ``answer``, ``finish_reason`` (null: no completion),
    ``flagged``, ``pii`` (array of stage/message_index/kind/start/end) and ``rating``."""
    from pyspark.sql import functions as F

    requests = read_topic(spark, root, TopicName.REQUESTS, dedupe_by=("request_id",)).select(
        "request_id",
        "conversation_id",
        "model",
        F.col("created_at").alias("requested_at"),
        F.transform(
            "messages", lambda m: F.struct(m["role"].alias("role"), m["content"].alias("content"))
        ).alias("messages"),
    )
    answers = frames.completions(spark, root).select(
        "request_id", F.col("text").alias("answer"), "finish_reason"
    )
    verdicts = (
        frames.verdicts(spark, root)
        .groupBy("request_id")
        .agg(
            F.max(F.col("flagged").cast("int")).cast("boolean").alias("flagged"),
            F.flatten(
                F.collect_list(
                    F.transform(
                        "pii",
                        lambda p: F.struct(
                            F.col("stage").alias("stage"),
                            p["message_index"].alias("message_index"),
                            p["kind"].alias("kind"),
                            p["start"].alias("start"),
                            p["end"].alias("end"),
                        ),
                    )
                )
            ).alias("pii"),
        )
    )
    ratings = frames.ratings(spark, root).select("request_id", "rating")
    return (
        requests.join(answers, "request_id", "left")
        .join(verdicts, "request_id", "left")
        .join(ratings, "request_id", "left")
    )


def drop_reason(drop_finish: tuple[str, ...] = DROP_FINISH_REASONS) -> Column:
    """The first reason of the module docstring that applies to a row of :func:`turns`."""
    from pyspark.sql import functions as F

    reason = F.when(F.col("finish_reason").isNull(), F.lit("no_answer")).when(
        F.coalesce("flagged", F.lit(False)), F.lit("flagged")
    )
    if drop_finish:
        reason = reason.when(
            F.col("finish_reason").isin(*drop_finish), F.concat(F.lit("finish_"), "finish_reason")
        )
    return (
        reason.when(F.col("answer").rlike(REFUSAL_PATTERN), F.lit("refused"))
        .when(F.coalesce("answer", F.lit("")).rlike(r"^\s*$"), F.lit("empty_answer"))
        .when(F.col("rating") == "down", F.lit("rated_down"))
    )


def labelled(
    spark: SparkSession, root: str, drop_finish: tuple[str, ...] = DROP_FINISH_REASONS
) -> DataFrame:
    """:func:`turns` with ``drop_reason`` and ``source`` (``rated_up`` | ``unrated``)."""
    from pyspark.sql import functions as F

    return turns(spark, root).select(
        "*",
        drop_reason(drop_finish).alias("drop_reason"),
        F.when(F.col("rating") == "up", F.lit("rated_up"))
        .otherwise(F.lit("unrated"))
        .alias("source"),
    )
