"""Spark column expressions the jobs share."""

from __future__ import annotations

from typing import TYPE_CHECKING

from analytics.stats import Z95

if TYPE_CHECKING:
    from pyspark.sql import Column


def wilson_bounds(successes: str, n: str) -> tuple[Column, Column]:
    """Wilson's 95% score interval of ``successes / n`` as two Spark columns (null when n = 0);
    the same formula as :func:`analytics.stats.wilson`."""
    from pyspark.sql import functions as F

    k, total = F.col(successes), F.col(n)
    p = k / total
    z2 = Z95 * Z95
    denom = 1 + z2 / total
    centre = (p + z2 / (2 * total)) / denom
    half = Z95 * F.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / denom
    valid = total > 0
    return (
        F.when(valid, F.greatest(F.lit(0.0), centre - half)),
        F.when(valid, F.least(F.lit(1.0), centre + half)),
    )


def word_overlap(a: str, b: str) -> Column:
    """Jaccard similarity of the two texts' sets of lower-cased words (null when both are
    empty): how much of one answer the other shares."""
    from pyspark.sql import functions as F

    def words(column: str) -> Column:
        return F.array_remove(F.array_distinct(F.split(F.lower(F.col(column)), r"[^\w']+")), "")

    union = F.size(F.array_union(words(a), words(b)))
    return F.when(union > 0, F.size(F.array_intersect(words(a), words(b))) / union)
