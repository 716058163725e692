"""Read one topic of the archive (:mod:`schemas.archive`) as a Spark DataFrame.

The schema is derived from the event models of :mod:`schemas.events` (plus the ``kafka_*``
coordinates of :func:`schemas.archive.archived_record`), so Spark parses JSON straight into typed
columns instead of sampling the files to infer one, and a field the contract adds shows up here
with no edit. Records archived more than once (at-least-once delivery into the archive) are
dropped by their Kafka coordinates; records the archiver kept as invalid (``invalid`` set) are
left out.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from chatbus.errors import ChatbusError
from schemas.events import (
    Appeal,
    CancelRequest,
    ChatRequest,
    Completion,
    DeadLetter,
    Envelope,
    ModerationVerdict,
    Rating,
    TokenChunk,
)
from schemas.topics import TopicName

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import DataType, StructType

# The events each topic carries (a topic of several types reads as the union of their fields,
# ``type`` telling them apart).
TOPIC_EVENTS: dict[str, tuple[type[Envelope], ...]] = {
    TopicName.REQUESTS: (ChatRequest,),
    TopicName.REQUESTS_APPROVED: (ChatRequest,),
    TopicName.TOKENS: (TokenChunk,),
    TopicName.COMPLETIONS: (Completion,),
    TopicName.MODERATION: (ModerationVerdict,),
    TopicName.CONTROL: (CancelRequest,),
    TopicName.FEEDBACK: (Rating, Appeal),
    TopicName.DLQ: (DeadLetter,),
}
KAFKA_COORDINATES = ("kafka_topic", "kafka_partition", "kafka_offset")


class ArchiveNotFound(ChatbusError):
    """No archived objects where the job was told to read."""


def _spark_type(annotation: Any) -> DataType:
    from pyspark.sql import types as T

    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Annotated:
        return _spark_type(args[0])
    if origin in (typing.Union, types.UnionType):
        return _spark_type(args[0]) if len(args) == 1 else T.StringType()
    if origin is Literal:
        return _spark_type(type(args[0]))
    if origin is list:
        return T.ArrayType(_spark_type(args[0]))
    if origin is dict:
        return T.MapType(T.StringType(), _spark_type(args[1]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return model_schema(annotation)
    simple: dict[Any, DataType] = {
        str: T.StringType(),
        int: T.LongType(),
        float: T.DoubleType(),
        bool: T.BooleanType(),
        datetime: T.TimestampType(),
    }
    if annotation in simple:
        return simple[annotation]
    raise TypeError(f"no Spark type for {annotation!r}")


def model_schema(*models: type[BaseModel]) -> StructType:
    """The Spark schema of pydantic models' JSON form (several: the union of their fields; a
    field two models share takes the first one's type)."""
    from pyspark.sql import types as T

    fields: dict[str, T.StructField] = {}
    for model in models:
        for name, field in model.model_fields.items():
            if name not in fields:
                fields[name] = T.StructField(name, _spark_type(field.annotation), nullable=True)
    return T.StructType(list(fields.values()))


def topic_schema(topic: str) -> StructType:
    """The schema of an archived record of ``topic``: event fields + Kafka coordinates."""
    from pyspark.sql import types as T

    schema = model_schema(*TOPIC_EVENTS[topic])
    for name, kind in (
        ("kafka_topic", T.StringType()),
        ("kafka_partition", T.LongType()),
        ("kafka_offset", T.LongType()),
        ("kafka_timestamp_ms", T.LongType()),
        ("kafka_key", T.StringType()),
        ("kafka_headers", T.MapType(T.StringType(), T.StringType())),
        ("invalid", T.StringType()),
    ):
        schema = schema.add(name, kind, nullable=True)
    return schema


def topic_path(root: str, topic: str) -> str:
    return f"{root.rstrip('/')}/topic={topic}/"


def read_topic(
    spark: SparkSession,
    root: str,
    topic: str,
    *,
    dedupe_by: tuple[str, ...] | None = KAFKA_COORDINATES,
) -> DataFrame:
    """The valid records of one topic under the archive ``root`` (local path or s3a://), without
    duplicates by ``dedupe_by`` (the Kafka coordinates by default; a business key such as
    ``request_id`` also drops an event the bus delivered twice; None keeps everything)."""
    from pyspark.sql import functions as F

    path = topic_path(root, topic)
    schema = topic_schema(topic)
    if not path_exists(spark, path):  # a topic nothing was archived from yet: no rows
        frame = spark.createDataFrame([], schema)
    else:
        frame = (
            spark.read.schema(schema)
            .option("mode", "PERMISSIVE")
            .option("recursiveFileLookup", "true")  # dt=/hour= are not columns we need
            .option("pathGlobFilter", "*.jsonl.gz")
            .json(path)
        )
    frame = frame.where(F.col("invalid").isNull()).drop("invalid")
    if dedupe_by:
        frame = frame.dropDuplicates(list(dedupe_by))
    return frame


def path_exists(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` (local, s3a://, hdfs://…) exists, through Spark's Hadoop filesystem."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    fs = hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # type: ignore[union-attr]
    return bool(fs.exists(hadoop_path))


def assert_archive(spark: SparkSession, root: str, topic: TopicName = TopicName.REQUESTS) -> None:
    """Raise :class:`ArchiveNotFound` (saying what to do) when ``root`` holds no archive (no
    ``topic`` in it)."""
    if not path_exists(spark, topic_path(root, topic)):
        raise ArchiveNotFound(
            f"no archive at {root} (no topic={topic.value}/ under it): run "
            f"`chatbus simulate --to archive --output {root}` for synthetic data, or start the "
            "archiver (`make run`) and let it flush"
        )
