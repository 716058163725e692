"""Exact and near duplicates among the kept turns; one of each group stays, deterministically.

**Which one stays.** Turns are ranked by :func:`keep_order`: rated up before unrated, then the
earliest request, then the smallest ``request_id``. The best-ranked turn of a group stays.

**Exact.** Two turns are exact duplicates when their normalised prompt messages (role and content)
and normalised answer are equal; *normalised*: lower case, runs of white space as one space,
trimmed (:func:`exact_key`).

**Near.** Each turn's text (its messages' contents and the answer, joined by spaces) is lowered and
cut into words (runs of letters and digits); its *shingles* are its word ``n``-grams (the whole
text as one shingle when it has fewer than ``n`` words). Spark ML's ``MinHashLSH`` (over
``HashingTF`` features of 2^30 buckets, ``binary``) finds the pairs whose Jaccard similarity of
shingle sets is above ``threshold`` (``approxSimilarityJoin`` computes the exact Jaccard distance
of each candidate pair, so no pair below the threshold is reported; a pair above it is missed with
probability ``(1 - similarity) ** tables``: 1e-7 at 0.8 with 10 tables). A turn is a near duplicate
when a better-ranked turn is above the threshold with it: so no two turns left are near duplicates
of each other, and each dropped one has a better-ranked near duplicate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

NUM_FEATURES = 1 << 30
WORD_SPLIT = r"[^\p{L}\p{N}]+"


def keep_order() -> Column:
    """What ranks a turn before another: rated up first, then the earliest, then by id."""
    from pyspark.sql import functions as F

    return F.struct(
        F.when(F.col("source") == "rated_up", 0).otherwise(1).alias("priority"),
        F.col("requested_at").alias("requested_at"),
        F.col("request_id").alias("request_id"),
    )


def normalised(text: Column) -> Column:
    from pyspark.sql import functions as F

    return F.trim(F.regexp_replace(F.lower(text), r"\s+", " "))


def exact_key() -> Column:
    """A hash of the normalised messages (role and content) and answer."""
    from pyspark.sql import functions as F

    messages = F.transform(
        "messages", lambda m: F.concat(m["role"], F.lit(":"), normalised(m["content"]))
    )
    return F.sha2(F.concat_ws("\u001f", messages, normalised(F.col("answer"))), 256)


def mark_exact(turns: DataFrame) -> DataFrame:
    """``turns`` with ``duplicate`` (``"exact"`` for all but the best-ranked turn of each exact
    group, else null) and ``duplicate_of`` (that best-ranked turn's ``request_id``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    group = Window.partitionBy("exact_key").orderBy("keep_order")
    ranked = turns.select("*", exact_key().alias("exact_key"), keep_order().alias("keep_order"))
    first = F.first("request_id").over(group)
    return ranked.select(
        *turns.columns,
        F.when(F.row_number().over(group) > 1, F.lit("exact")).alias("duplicate"),
        F.when(F.row_number().over(group) > 1, first).alias("duplicate_of"),
    )


def mark_near(turns: DataFrame, near: DataFrame) -> DataFrame:
    """``turns`` (of :func:`mark_exact`) with the near duplicates of ``near`` (of
    :func:`near_duplicates`) marked ``"near"``."""
    from pyspark.sql import functions as F

    found = near.select("request_id", F.col("duplicate_of").alias("near_of"))
    return turns.join(found, "request_id", "left").select(
        *[c for c in turns.columns if c not in ("duplicate", "duplicate_of")],
        F.when(F.col("near_of").isNotNull(), F.lit("near"))
        .otherwise(F.col("duplicate"))
        .alias("duplicate"),
        F.coalesce("near_of", "duplicate_of").alias("duplicate_of"),
    )


def shingles(n: int) -> Column:
    """The word ``n``-grams of a turn's messages and answer (the text as one when shorter)."""
    from pyspark.sql import functions as F

    text = F.concat_ws(" ", F.transform("messages", lambda m: m["content"]), F.col("answer"))
    words = F.filter(F.split(F.lower(text), WORD_SPLIT), lambda w: w != "")
    grams = F.transform(
        F.sequence(F.lit(0), F.size(words) - n),
        lambda i: F.array_join(F.slice(words, i + 1, n), " "),
    )
    return F.when(F.size(words) >= n, grams).otherwise(F.array(F.array_join(words, " ")))


def near_duplicates(
    turns: DataFrame, *, threshold: float, n: int, tables: int, seed: int
) -> DataFrame:
    """``request_id`` and ``duplicate_of`` (the best-ranked turn above ``threshold`` with it) of
    each near duplicate in ``turns`` (exact duplicates already out)."""
    from pyspark.ml.feature import HashingTF, MinHashLSH
    from pyspark.sql import functions as F

    shingled = turns.select(
        "request_id", keep_order().alias("keep_order"), shingles(n).alias("shingles")
    )
    features = HashingTF(
        inputCol="shingles", outputCol="features", numFeatures=NUM_FEATURES, binary=True
    ).transform(shingled)
    model = MinHashLSH(
        inputCol="features", outputCol="hashes", numHashTables=tables, seed=seed
    ).fit(features)
    hashed = model.transform(features)
    pairs = model.approxSimilarityJoin(hashed, hashed, 1.0 - threshold, distCol="distance")
    return (
        pairs.where(F.col("datasetA.keep_order") < F.col("datasetB.keep_order"))
        .groupBy(F.col("datasetB.request_id").alias("request_id"))
        .agg(F.min(F.col("datasetA.keep_order")).alias("best"))
        .select("request_id", F.col("best.request_id").alias("duplicate_of"))
    )
