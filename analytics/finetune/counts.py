"""The data card's counts, from small aggregates the job collects (plain Python but for
:func:`count_by` and :func:`redactions_and_duplicates`, which run them)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from analytics.finetune.balance import SPLITS, group_counts
from analytics.finetune.redaction import COUNTERS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

SOURCES = ("rated_up", "unrated", "counterfactual")


def count_by(frame: DataFrame, *columns: str) -> dict[tuple[Any, ...], int]:
    """Rows of ``frame`` per value of ``columns``."""
    return {
        tuple(row[c] for c in columns): int(row["n"])
        for row in frame.groupBy(*columns).count().withColumnRenamed("count", "n").collect()
    }


def filters(by_reason: dict[tuple[Any, ...], int], reasons: tuple[str, ...]) -> dict[str, Any]:
    """The card's filter counts from the turns counted by (drop_reason, source)."""
    kept = {s: by_reason.get((None, s), 0) for s in ("rated_up", "unrated")}
    return {
        "turns_in": sum(by_reason.values()),
        "dropped": {
            r: sum(n for (reason, _), n in by_reason.items() if reason == r) for r in reasons
        },
        "kept_by_source": kept,
        "kept_after_filters": sum(kept.values()),
    }


def redactions_and_duplicates(marked: DataFrame) -> dict[str, Any]:
    """Duplicates by kind and redactions (over every kept turn, duplicates included)."""
    from pyspark.sql import functions as F

    redactions = [F.col(f"redacted_{c}") for c in COUNTERS]
    any_redaction = F.greatest(*redactions) > 0
    rows = (
        marked.groupBy("duplicate")
        .agg(
            F.count("*").alias("n"),
            *[F.sum(c).alias(name) for c, name in zip(redactions, COUNTERS, strict=True)],
            F.sum(any_redaction.cast("int")).alias("turns"),
        )
        .collect()
    )
    by_kind = {row["duplicate"]: int(row["n"]) for row in rows}
    totals = {c: sum(int(row[c] or 0) for row in rows) for c in (*COUNTERS, "turns")}
    counts = {c: totals[c] for c in COUNTERS}
    return {
        "duplicates": {"exact": by_kind.get("exact", 0), "near": by_kind.get("near", 0)},
        "redactions": {**counts, "total": sum(counts.values()), "turns": totals["turns"]},
    }


Group = tuple[Any, ...]  # (split, source, axis, term)


def _rows_of(split: str | None = None, source: str | None = None) -> Callable[[Group], bool]:
    """Which groups are of ``split`` and ``source`` (None: any; source ``"original"``: not a
    counterfactual copy)."""

    def keep(key: Group) -> bool:
        if split is not None and key[0] != split:
            return False
        if source == "original":
            return bool(key[1] != "counterfactual")
        return source is None or key[1] == source

    return keep


def rows(groups: dict[Group, int], conversations: dict[str, int]) -> dict[str, Any]:
    """Rows per split and source, and the balance, from the rows counted by (split, source, axis,
    term); ``conversations`` per split."""

    def total(keep: Callable[[Group], bool]) -> int:
        return sum(n for key, n in groups.items() if keep(key))

    def terms(keep: Callable[[Group], bool]) -> dict[str, dict[str, int]]:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for key, n in groups.items():
            if key[2] is not None and keep(key):
                counts[(key[2], key[3])] += n
        return group_counts(counts)

    splits = {
        split: {
            "rows": total(_rows_of(split)),
            "conversations": conversations.get(split, 0),
            **{source: total(_rows_of(split, source)) for source in SOURCES},
        }
        for split in SPLITS
    }
    return {
        "originals": total(_rows_of(source="original")),
        "counterfactuals": total(_rows_of(source="counterfactual")),
        "rows": total(_rows_of()),
        "splits": splits,
        "balance": {
            "before": terms(_rows_of(source="original")),
            "after": terms(_rows_of()),
            "after_by_split": {split: terms(_rows_of(split)) for split in SPLITS},
        },
    }
