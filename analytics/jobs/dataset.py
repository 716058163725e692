"""Dataset: a chat fine-tuning set from the archive — train and validation splits in OpenAI's chat
JSONL and in Parquet, with a data card.

``spark-submit analytics/jobs/dataset.py --input ROOT --output DIR`` or
``chatbus analytics dataset --input ROOT --output DIR``; the rules are in ``docs/dataset.md``:

1. **Turns** (:mod:`analytics.finetune.turns`): every request with its messages as archived, its
   answer, verdicts and latest rating. Dropped, first reason that applies: no answer, flagged by a
   verdict, cut (finish ``content_filter``, ``cancelled``, ``error``, ``length``), refused, empty,
   rated down. Kept: rated up, or unrated (and none of the above).
2. **Personal data** (:mod:`analytics.finetune.redaction`): the verdicts' PII spans and a regex
   net (e-mails, phones, card-like numbers) as ``[<kind>]`` placeholders.
3. **Duplicates** (:mod:`analytics.finetune.dedupe`): exact (normalised messages and answer) and
   near (MinHash LSH on word n-grams, Jaccard above a threshold); the best-ranked turn stays
   (rated up first, then the earliest).
4. **Split** by conversation and **balance** (:mod:`analytics.finetune.balance`): a prompt with
   exactly one demographic term of :mod:`analytics.lexicon` gets a copy for each other term of its
   axis, in the same split.
5. **Output**: ``DIR/train.jsonl``, ``DIR/validation.jsonl`` (``{"messages": [...]}`` a line, the
   answer as the last, assistant, message), ``DIR/parquet/{train,validation}/``,
   ``DIR/data_card.json`` and ``DIR/data_card.md`` (:mod:`analytics.finetune.card`).

Parquet columns: ``request_id``, ``conversation_id``, ``model``, ``messages`` (array of
role/content), ``answer``, ``source`` (``rated_up`` | ``unrated`` | ``counterfactual``), ``axis``,
``term``, ``counterfactual_of``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if __package__ in (None, ""):  # run as a file by spark-submit: make the checkout importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from analytics.finetune import balance, card, counts, dedupe, files, redaction, turns

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

Progress = Callable[[str], None]

PARQUET_COLUMNS = (
    "request_id",
    "conversation_id",
    "model",
    "messages",
    "answer",
    "source",
    "axis",
    "term",
    "counterfactual_of",
)


@dataclass(frozen=True)
class DatasetParams:
    """The job's knobs (all in the data card)."""

    validation_fraction: float = 0.1
    seed: int = 0
    near_threshold: float = 0.8
    shingle_words: int = 3
    hash_tables: int = 10
    drop_finish: tuple[str, ...] = field(default=turns.DROP_FINISH_REASONS)

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if not 0.0 < self.near_threshold < 1.0:
            raise ValueError(f"near_threshold must be in (0, 1), got {self.near_threshold}")
        if self.shingle_words < 1 or self.hash_tables < 1:
            raise ValueError("shingle_words and hash_tables must be at least 1")


def say(line: str) -> None:
    print(f"dataset: {line}", flush=True)


@dataclass
class Dataset:
    """What :func:`compute` makes: every row (``split`` a column) and the counts of the card."""

    rows: DataFrame
    stats: dict[str, Any]
    cached: list[DataFrame] = field(default_factory=list)

    def release(self) -> None:
        for frame in self.cached:
            frame.unpersist()


def _cache(dataset_cache: list[DataFrame], frame: DataFrame) -> DataFrame:
    dataset_cache.append(frame.cache())
    return frame


def compute(
    spark: SparkSession, root: str, params: DatasetParams, progress: Progress = say
) -> Dataset:
    """Every row of the dataset (``split`` a column) and the counts of the data card."""
    from pyspark.sql import functions as F

    held: list[DataFrame] = []
    started = time.perf_counter()

    def step(text: str) -> None:
        progress(f"[{time.perf_counter() - started:6.1f} s] {text}")

    step(f"reading the archive at {root}")
    labelled = _cache(held, turns.labelled(spark, root, params.drop_finish))
    by_reason = counts.count_by(labelled, "drop_reason", "source")
    stats = counts.filters(by_reason, turns.drop_reasons(params.drop_finish))
    dropped = ", ".join(f"{r} {n:,}" for r, n in stats["dropped"].items() if n)
    step(
        f"{stats['turns_in']:,} turns; kept {stats['kept_after_filters']:,}; dropped: "
        f"{dropped or 'none'}"
    )

    kept = _cache(
        held, dedupe.mark_exact(redaction.redacted(labelled.where(F.col("drop_reason").isNull())))
    )
    near = dedupe.near_duplicates(
        kept.where(F.col("duplicate").isNull()),
        threshold=params.near_threshold,
        n=params.shingle_words,
        tables=params.hash_tables,
        seed=params.seed,
    )
    marked = _cache(held, dedupe.mark_near(kept, near))
    stats.update(counts.redactions_and_duplicates(marked))
    step(
        f"personal data: {stats['redactions']['total']:,} redactions in "
        f"{stats['redactions']['turns']:,} turns; duplicates: "
        f"{stats['duplicates']['exact']:,} exact, {stats['duplicates']['near']:,} near "
        f"(Jaccard > {params.near_threshold})"
    )

    originals = balance.with_probe(marked.where(F.col("duplicate").isNull())).select(
        *PARQUET_COLUMNS[:6],
        "axis",
        "term",
        F.lit(None).cast("string").alias("counterfactual_of"),
        balance.split_of(params.seed, params.validation_fraction).alias("split"),
    )
    rows = _cache(held, originals.unionByName(balance.counterfactual_copies(originals)))
    groups = counts.count_by(rows, "split", "source", "axis", "term")
    conversations = {
        row["split"]: int(row["n"])
        for row in rows.groupBy("split")
        .agg(F.countDistinct("conversation_id").alias("n"))
        .collect()
    }
    stats.update(counts.rows(groups, conversations))
    probes = sum(sum(terms.values()) for terms in stats["balance"]["before"].values())
    step(
        f"{stats['originals']:,} turns left, {probes:,} with one demographic term: "
        f"{stats['counterfactuals']:,} counterfactual copies; "
        + "; ".join(f"{s} {v['rows']:,} rows" for s, v in stats["splits"].items())
    )
    return Dataset(rows=rows, stats=stats, cached=held)


def jsonl_lines(rows: DataFrame) -> DataFrame:
    """One ``{"messages": [...]}`` string a row (the answer as the last, assistant, message), in
    the order of conversation and request."""
    from pyspark.sql import functions as F

    answer = F.struct(F.lit("assistant").alias("role"), F.col("answer").alias("content"))
    messages = F.concat(F.col("messages"), F.array(answer)).alias("messages")
    return rows.orderBy("conversation_id", "request_id").select(
        F.to_json(F.struct(messages)).alias("line")
    )


def output_paths(output: str) -> dict[str, str]:
    return {
        **{f"{s}.jsonl": files.join(output, f"{s}.jsonl") for s in balance.SPLITS},
        **{f"parquet/{s}": files.join(output, "parquet", s) for s in balance.SPLITS},
        "data_card.json": files.join(output, "data_card.json"),
        "data_card.md": files.join(output, "data_card.md"),
    }


def write(
    spark: SparkSession, dataset: Dataset, output: str, progress: Progress = say
) -> dict[str, str]:
    """The splits as Parquet and JSONL under ``output``; their paths (the card comes after)."""
    from pyspark.sql import functions as F

    paths = output_paths(output)
    for split in balance.SPLITS:
        rows = dataset.rows.where(F.col("split") == split)
        rows.select(*PARQUET_COLUMNS).sortWithinPartitions(
            "conversation_id", "request_id"
        ).write.mode("overwrite").parquet(paths[f"parquet/{split}"])
        written = files.write_jsonl(
            spark, jsonl_lines(rows), paths[f"{split}.jsonl"], progress=progress
        )
        progress(f"{split}: {written:,} examples → {paths[f'{split}.jsonl']}")
    return paths


def run(
    spark: SparkSession,
    input: str,
    output: str,
    params: DatasetParams | None = None,
    *,
    progress: Progress = say,
) -> dict[str, str]:
    """Check the archive is there, build the dataset, write it and its card; the paths."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    from analytics.archive_reader import assert_archive

    params = params or DatasetParams()
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    assert_archive(spark, input)
    # no frames.cached_archive: each topic is read once here, and a cached frame (every column)
    # would keep Spark from reading only the columns the job needs
    dataset = compute(spark, input, params, progress)
    try:
        paths = write(spark, dataset, output, progress)
        document = card.build(
            stats=dataset.stats,
            parameters=asdict(params),
            input_root=input,
            output=output,
            files={k: v for k, v in paths.items() if not k.startswith("data_card")},
            created_at=started_at,
            seconds=time.perf_counter() - started,
        )
        files.write_text(spark, paths["data_card.json"], card.to_json(document))
        files.write_text(spark, paths["data_card.md"], card.to_markdown(document))
    except (PySparkException, Py4JError) as exc:
        raise files.DatasetOutputError(_write_failure(exc, output)) from exc
    finally:
        dataset.release()
    progress(f"data card → {paths['data_card.md']}")
    return paths


def _write_failure(exc: Exception, output: str) -> str:
    from analytics.spark_session import needs_s3a

    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    hint = (
        " Is the S3 endpoint reachable (CHATBUS_S3_ENDPOINT), the bucket there and writable?"
        if needs_s3a(output)
        else " Is the folder writable?"
    )
    return f"could not write the dataset to {output}: {first[:400]}.{hint}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", required=True, help="archive root: a folder, or s3a://BUCKET/PREFIX"
    )
    parser.add_argument("--output", required=True, help="where the dataset goes (folder or s3a://)")
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="of the split and of MinHash")
    parser.add_argument("--near-threshold", type=float, default=0.8)
    parser.add_argument(
        "--keep-truncated",
        action="store_true",
        help="keep answers cut at max_tokens (finish_reason length)",
    )


def params_of(
    validation_fraction: float, seed: int, near_threshold: float, keep_truncated: bool
) -> DatasetParams:
    drop = tuple(r for r in turns.DROP_FINISH_REASONS if not (keep_truncated and r == "length"))
    return DatasetParams(
        validation_fraction=validation_fraction,
        seed=seed,
        near_threshold=near_threshold,
        drop_finish=drop,
    )


def main(argv: list[str] | None = None) -> None:
    """``--input ROOT --output DIR [...]``: what ``spark-submit analytics/jobs/dataset.py`` runs."""
    from analytics.spark_session import build_spark, needs_s3a
    from chatbus.settings import get_settings

    parser = argparse.ArgumentParser(
        prog="analytics/jobs/dataset.py",
        description="A chat fine-tuning set (JSONL, Parquet, data card) from the archive.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        params = params_of(
            args.validation_fraction, args.seed, args.near_threshold, args.keep_truncated
        )
    except ValueError as exc:
        parser.error(str(exc))
    spark = build_spark(get_settings(), "chatbus-dataset", s3a=needs_s3a(args.input, args.output))
    try:
        started = time.perf_counter()
        paths = run(spark, args.input, args.output, params)
        for name, path in paths.items():
            print(f"{name}: {path}")
        print(f"dataset done in {time.perf_counter() - started:.1f} s")
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
