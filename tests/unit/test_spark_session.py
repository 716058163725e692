"""How the Spark session is configured (no JVM started here)."""

from __future__ import annotations

from chatbus.settings import Settings


def test_s3a_points_at_the_configured_endpoint_with_path_style_locally() -> None:
    from analytics.spark_session import s3a_conf

    local = s3a_conf(Settings(s3_endpoint="http://127.0.0.1:19000"))
    assert local["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:19000"
    assert local["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert local["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert local["spark.hadoop.fs.s3a.access.key"] == "chatbus"
    aws = s3a_conf(Settings(s3_endpoint="https://s3.eu-west-1.amazonaws.com"))
    assert aws["spark.hadoop.fs.s3a.path.style.access"] == "false"
    assert aws["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"


def test_the_pom_asks_for_hadoop_aws_without_the_sdk_bundle() -> None:
    from analytics.spark_session import SDK_MODULES, _pom

    pom = _pom("3.5.0")
    assert "<artifactId>hadoop-aws</artifactId>" in pom and "<version>3.5.0</version>" in pom
    assert "<artifactId>bundle</artifactId></exclusion>" in pom
    for module in SDK_MODULES:
        assert f"<artifactId>{module}</artifactId>" in pom


def test_pyspark_hadoop_version_comes_from_its_bundled_client_jar() -> None:
    from analytics.spark_session import needs_s3a, pyspark_hadoop_version

    assert pyspark_hadoop_version().count(".") == 2
    assert needs_s3a("/tmp/x", "s3a://b/p") and not needs_s3a("/tmp/x", "file:///y")


def test_the_archive_schema_follows_the_event_contract() -> None:
    from analytics.archive_reader import topic_schema

    schema = topic_schema("chat.completions")
    names = schema.fieldNames()
    assert {
        "request_id",
        "timings",
        "usage",
        "kafka_offset",
        "kafka_partition",
        "kafka_headers",
    } <= set(names)
    timings = schema["timings"].dataType
    assert "time_to_first_token_ms" in timings.fieldNames()  # type: ignore[attr-defined]
    assert schema["created_at"].dataType.typeName() == "timestamp"
    verdicts = topic_schema("chat.moderation")
    assert verdicts["categories"].dataType.typeName() == "map"


def test_importing_the_cli_does_not_import_pyspark() -> None:
    import subprocess
    import sys

    code = "import sys, chatbus.cli.analytics, analytics.report; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
