"""Single files beside the Parquet output: a local folder, or any Hadoop filesystem Spark can
write (``s3a://``, ``file://``, ``hdfs://``).

A plain path is written with Python's ``open`` (atomically: a temporary name, then a rename);
a URL through Spark's Hadoop ``FileSystem`` (``create`` with overwrite), in blocks of about 1 MB.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from chatbus.errors import ChatbusError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

BLOCK_BYTES = 1 << 20


class DatasetOutputError(ChatbusError):
    """The dataset could not be written where it was asked to go."""


def is_local(path: str) -> bool:
    return urlparse(path).scheme == ""


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


def write_lines(
    spark: SparkSession,
    path: str,
    lines: Iterable[str],
    *,
    on_line: Callable[[int], None] | None = None,
) -> int:
    """``lines`` (each without its newline) as one UTF-8 file at ``path``; how many."""
    count = 0

    def blocks() -> Iterable[bytes]:
        nonlocal count
        block: list[bytes] = []
        size = 0
        for line in lines:
            data = (line + "\n").encode()
            block.append(data)
            size += len(data)
            count += 1
            if on_line is not None:
                on_line(count)
            if size >= BLOCK_BYTES:
                yield b"".join(block)
                block, size = [], 0
        if block:
            yield b"".join(block)

    if is_local(path):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        with partial.open("wb") as out:
            for block in blocks():
                out.write(block)
        os.replace(partial, target)
        return count
    stream = _hadoop_create(spark, path)
    try:
        for block in blocks():
            stream.write(bytearray(block))
    finally:
        stream.close()
    return count


def write_text(spark: SparkSession, path: str, text: str) -> None:
    write_lines(spark, path, [text.removesuffix("\n")])


def _hadoop_create(spark: SparkSession, path: str) -> Any:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    fs = hadoop_path.getFileSystem(conf)
    return fs.create(hadoop_path, True)


def write_jsonl(
    spark: SparkSession,
    frame: DataFrame,
    path: str,
    *,
    progress: Callable[[str], None],
    every: int = 10_000,
) -> int:
    """Each row's one string column as a line of one file at ``path``, in the frame's order
    (streamed to the driver one partition at a time); how many lines."""

    def tick(n: int) -> None:
        if n % every == 0:
            progress(f"  {path}: {n:,} lines")

    rows = (row[0] for row in frame.toLocalIterator())
    return write_lines(spark, path, rows, on_line=tick)
