"""The split by conversation, and the counterfactual copies that balance the demographic terms.

**Split.** A conversation goes to ``validation`` when ``u < fraction``, where ``u`` is the first 13
hex digits of ``sha256("<seed>:<conversation_id>")`` over 16^13 (uniform on [0, 1)); otherwise to
``train``. Every turn of a conversation, and every copy of those turns, is in the same split. In
plain Python: ``int(hashlib.sha256(f"{seed}:{cid}".encode()).hexdigest()[:13], 16) / 16**13``.

**Balance.** A turn whose prompt holds exactly one lexicon term (:func:`analytics.lexicon.mask`)
gets, for each other term of the axis, a copy with the term swapped
(:mod:`analytics.finetune.counterfactual`): ``source = "counterfactual"``, ``counterfactual_of``
the original's ``request_id``, ``request_id`` = ``<original>:cf:<term>``. Each such original so
counts once for every term of its axis, and the terms of an axis are represented equally.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics.lexicon import AXES, axis_pattern

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

HEX_DIGITS = 13
SPLITS = ("train", "validation")
_MESSAGES = "array<struct<role: string, content: string>>"


def split_of(seed: int, fraction: float) -> Column:
    """``train`` or ``validation`` for a row's ``conversation_id``."""
    from pyspark.sql import functions as F

    digest = F.sha2(F.concat(F.lit(f"{seed}:"), F.col("conversation_id")), 256)
    u = F.conv(F.substring(digest, 1, HEX_DIGITS), 16, 10).cast("double") / float(16**HEX_DIGITS)
    return F.when(u < F.lit(fraction), F.lit("validation")).otherwise(F.lit("train"))


def with_probe(turns: DataFrame) -> DataFrame:
    """``turns`` with ``axis`` and ``term`` (null unless the prompt holds exactly one term).

    :func:`analytics.lexicon.mask` decides, in Python, for the prompts where a lexicon term
    occurs at all (a JVM regex: every term of every axis); the others have none."""
    from pyspark.sql import functions as F

    from analytics.finetune.counterfactual import probe_row

    # a lambda: pyspark reads no type hints from it (it warns on the function's)
    probe = F.udf(lambda messages: probe_row(messages), "struct<axis: string, term: string>")
    last_user = F.element_at(F.filter("messages", lambda m: m["role"] == "user"), -1)
    any_term = F.coalesce(last_user["content"], F.lit("")).rlike(
        "|".join(axis_pattern(axis) for axis in AXES)
    )
    candidates = turns.where(any_term).withColumn("probe", probe("messages"))
    return candidates.select(
        *turns.columns, F.col("probe.axis").alias("axis"), F.col("probe.term").alias("term")
    ).unionByName(
        turns.where(~any_term).select(
            *turns.columns,
            F.lit(None).cast("string").alias("axis"),
            F.lit(None).cast("string").alias("term"),
        )
    )


def counterfactual_copies(originals: DataFrame) -> DataFrame:
    """The copies of the probe turns among ``originals`` (rows of :func:`with_probe`), with the
    originals' columns."""
    from pyspark.sql import functions as F

    from analytics.finetune.counterfactual import counterfactual_rows

    copies = F.udf(  # a lambda, as in with_probe
        lambda messages, answer, axis, term: counterfactual_rows(messages, answer, axis, term),
        f"array<struct<term: string, messages: {_MESSAGES}, answer: string>>",
    )
    exploded = originals.where(F.col("axis").isNotNull()).select(
        "*", F.explode(copies("messages", "answer", "axis", "term")).alias("copy")
    )
    return exploded.select(
        *[
            F.col(c)
            for c in originals.columns
            if c not in ("request_id", "messages", "answer", "source", "term", "counterfactual_of")
        ],
        F.concat("request_id", F.lit(":cf:"), F.col("copy.term")).alias("request_id"),
        F.col("copy.messages").alias("messages"),
        F.col("copy.answer").alias("answer"),
        F.lit("counterfactual").alias("source"),
        F.col("copy.term").alias("term"),
        F.col("request_id").alias("counterfactual_of"),
    ).select(*originals.columns)


def group_counts(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """{axis: {term: rows}} over every term of the lexicon (0 where none) from rows counted by
    (axis, term)."""
    return {
        axis: {term: counts.get((axis, term), 0) for term in terms} for axis, terms in AXES.items()
    }
