"""``chatbus analytics …`` and ``chatbus simulate``: the data scientists' commands.

Registered on the main ``chatbus`` command by :mod:`chatbus.cli`. Nothing here imports pyspark at
import time (the CLI must start fast); the jobs import it when they run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from analytics.jobs import JOBS
from chatbus.errors import ChatbusError
from chatbus.settings import Settings, get_settings

T = TypeVar("T")

if TYPE_CHECKING:
    from analytics.simulate.generator import Profile


def _default_input(settings: Settings) -> str:
    return f"s3a://{settings.s3.bucket}/{settings.archive.prefix.strip('/')}"


def _default_output(settings: Settings, name: str) -> Path:
    return (settings.state_dir / "analytics" / name).resolve()


def _input_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--input",
        "input_root",
        default=None,
        metavar="ROOT",
        help="Archive root: a folder or s3a://BUCKET/PREFIX (default: "
        "s3a://CHATBUS_S3_BUCKET/CHATBUS_ARCHIVE_PREFIX).",
    )(func)


@click.group()
def analytics() -> None:
    """PySpark jobs over the S3 archive: the report's jobs (latency, usage, moderation, feedback,
    conversations, fairness), the fine-tuning set (dataset) and a candidate's comparison."""


def _job_command(job: str) -> click.Command:
    @click.command(name=job)
    @_input_option
    @click.option(
        "--output",
        default=None,
        metavar="DIR",
        help=f"Where the Parquet tables go (default: .chatbus/analytics/{job}).",
    )
    def command(input_root: str | None, output: str | None) -> None:
        import importlib

        from analytics.spark_session import needs_s3a

        settings = get_settings()
        source = input_root or _default_input(settings)
        target = output or str(_default_output(settings, job))
        module = importlib.import_module(f"analytics.jobs.{job}")
        started = time.perf_counter()
        paths = _with_spark(
            f"chatbus-{job}",
            source,
            needs_s3a(source, target),
            lambda spark: module.run(spark, source, target),
        )
        for name, path in paths.items():
            click.echo(f"{name}: {path}")
        click.secho(f"{job} done in {time.perf_counter() - started:.1f} s", dim=True, err=True)

    command.help = (
        (_job_summary(job) or f"The {job} job.")
        + "\n\nSame as: spark-submit analytics/jobs/"
        + job
        + ".py --input ROOT --output DIR"
    )
    return command


def _job_summary(job: str) -> str:
    """The first line of a job module's docstring (without importing pyspark)."""
    import importlib

    doc = importlib.import_module(f"analytics.jobs.{job}").__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


for _job in JOBS:
    analytics.add_command(_job_command(_job))


def _with_spark(app: str, source: str, s3a: bool, work: Callable[[Any], T]) -> T:
    """``work(spark)`` in a session stopped afterwards; failures as one ClickException."""
    from analytics.spark_session import build_spark

    try:
        spark = build_spark(get_settings(), app, s3a=s3a)
        try:
            return work(spark)
        finally:
            spark.stop()
    except ChatbusError as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise _spark_failure(exc, source) from exc


def _spark_failure(exc: Exception, source: str) -> Exception:
    """A Spark or Py4J error as one readable line (the Java stack trace is in the log above);
    anything else is re-raised as it is."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    if not isinstance(exc, PySparkException | Py4JError):
        return exc
    java = getattr(exc, "java_exception", None)  # Py4JJavaError: the Java exception says why
    text = str(java.toString()) if java is not None else str(exc)
    first = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    hint = (
        " Is the S3 endpoint reachable (CHATBUS_S3_ENDPOINT) and the bucket there?"
        if source.startswith(("s3a://", "s3://"))
        else ""
    )
    return click.ClickException(f"Spark failed reading {source}: {first[:400]}.{hint}")


@analytics.command()
@_input_option
@click.option(
    "--output",
    default=None,
    metavar="DIR",
    help="Folder of report.html and its tables (default: .chatbus/analytics/report).",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--candidate",
    default=None,
    metavar="ROOT",
    help="A shadow run's archive (what `chatbus shadow` prints): adds a section that puts "
    "production and the candidate side by side.",
)
def report(
    input_root: str | None, output: str | None, no_progress: bool, candidate: str | None
) -> None:
    """Run every job and write one self-contained HTML report with charts."""
    from analytics.report import build_report
    from analytics.spark_session import needs_s3a

    settings = get_settings()
    source = input_root or _default_input(settings)
    target = Path(output).resolve() if output else _default_output(settings, "report")
    path = _with_spark(
        "chatbus-report",
        source,
        needs_s3a(source, candidate or ""),
        lambda spark: build_report(
            spark, source, target, progress=not no_progress, candidate=candidate
        ),
    )
    click.echo(path.as_uri())


@analytics.command()
@_input_option
@click.option(
    "--candidate",
    required=True,
    metavar="ROOT",
    help="The shadow run's archive: s3a://BUCKET/<archive prefix>-shadow/NAME (what "
    "`chatbus shadow` prints) or a folder.",
)
@click.option(
    "--output",
    default=None,
    metavar="DIR",
    help="Folder of compare.html and its tables (default: .chatbus/analytics/compare).",
)
def compare(input_root: str | None, candidate: str, output: str | None) -> None:
    """Production and a candidate side by side on the prompts the shadow run replayed:
    answers, refusal and moderation rates, latency, agreement with up-rated answers, fairness
    gaps. Writes the tables and compare.html.

    Same as: spark-submit analytics/jobs/compare.py --input ROOT --candidate ROOT --output DIR"""
    from analytics.report import compare_result, write_page
    from analytics.spark_session import needs_s3a

    settings = get_settings()
    source = input_root or _default_input(settings)
    target = Path(output).resolve() if output else _default_output(settings, "compare")
    target.mkdir(parents=True, exist_ok=True)
    tables = str(target / "tables")
    result = _with_spark(
        "chatbus-compare",
        source,
        needs_s3a(source, candidate),
        lambda spark: compare_result(spark, source, candidate, tables),
    )
    summary = result.tables["compare_summary"]
    click.echo(summary.to_string(index=False))
    page = write_page([result], input_root=source, tables_dir=tables, path=target / "compare.html")
    click.echo(page.as_uri())


@analytics.command()
@_input_option
@click.option(
    "--output",
    default=None,
    metavar="DIR",
    help="Folder or s3a:// of train.jsonl, validation.jsonl, parquet/ and the data card "
    "(default: .chatbus/analytics/dataset).",
)
@click.option(
    "--validation-fraction",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=0.1,
    show_default=True,
    help="Share of the conversations in the validation split.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the split (and of MinHash)."
)
@click.option(
    "--near-threshold",
    type=click.FloatRange(0.0, 1.0, min_open=True, max_open=True),
    default=0.8,
    show_default=True,
    help="Jaccard similarity above which two turns are near duplicates.",
)
@click.option(
    "--keep-truncated",
    is_flag=True,
    help="Keep answers cut at max_tokens (finish_reason length); dropped by default.",
)
def dataset(
    input_root: str | None,
    output: str | None,
    validation_fraction: float,
    seed: int,
    near_threshold: float,
    keep_truncated: bool,
) -> None:
    """A chat fine-tuning set from the archive: train/validation in OpenAI's JSONL and Parquet,
    with a data card (rules: docs/dataset.md).

    Same as: spark-submit analytics/jobs/dataset.py --input ROOT --output DIR"""
    from analytics.jobs import dataset as job
    from analytics.spark_session import needs_s3a

    settings = get_settings()
    source = input_root or _default_input(settings)
    target = output or str(_default_output(settings, "dataset"))
    params = job.params_of(validation_fraction, seed, near_threshold, keep_truncated)
    started = time.perf_counter()
    paths = _with_spark(
        "chatbus-dataset",
        source,
        needs_s3a(source, target),
        lambda spark: job.run(spark, source, target, params),
    )
    for name, path in paths.items():
        click.echo(f"{name}: {path}")
    click.secho(f"dataset done in {time.perf_counter() - started:.1f} s", dim=True, err=True)


@click.command()
@click.option(
    "--to",
    "sink",
    type=click.Choice(["archive", "pipeline"]),
    default="archive",
    show_default=True,
    help="Write straight into the archive layout, or send through the live bus (small N).",
)
@click.option(
    "--events",
    type=int,
    default=None,
    help="About this many events (archive; the conversation count is derived).",
)
@click.option(
    "--conversations",
    type=int,
    default=None,
    help="This many conversations (default: 1000 to the archive, 5 to the pipeline).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--days", type=int, default=3, show_default=True, help="Days the conversations spread over."
)
@click.option("--users", type=int, default=300, show_default=True)
@click.option(
    "--output",
    default=None,
    metavar="WHERE",
    help="Archive root: a folder or s3://BUCKET/PREFIX (default: "
    "s3://CHATBUS_S3_BUCKET/simulated, apart from the real archive).",
)
@click.option("--replace", is_flag=True, help="Delete an archive already at --output first.")
@click.option("--jobs", type=int, default=None, help="Processes (default: one per core).")
@click.option(
    "--timeout",
    type=float,
    default=300.0,
    show_default=True,
    help="Pipeline: seconds to wait for every answer.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Pipeline: the longest answer asked for.",
)
@click.option(
    "--probe-share",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Share of conversations that are demographic probe pairs (default 0.15).",
)
def simulate(
    sink: str,
    events: int | None,
    conversations: int | None,
    seed: int,
    days: int,
    users: int,
    output: str | None,
    replace: bool,
    jobs: int | None,
    timeout: float,
    max_tokens: int,
    probe_share: float | None,
) -> None:
    """Produce synthetic conversations for analysis (users, models, long-tailed lengths,
    cancellations, moderation hits, demographic prompt pairs)."""
    from dataclasses import replace as replace_fields

    from tqdm import tqdm

    from analytics.simulate.generator import Profile, conversations_for_events

    settings = get_settings()
    if events is not None and conversations is not None:
        raise click.UsageError("give --events or --conversations, not both")
    base = Profile(seed=seed, days=days, users=users, partitions=settings.kafka.topic_partitions)
    if probe_share is not None:
        base = replace_fields(base, p_probe=probe_share)
    if sink == "pipeline":
        count = conversations or (conversations_for_events(base, events) if events else 5)
        profile = replace_fields(base, conversations=count)
        _simulate_pipeline(profile, settings, timeout, max_tokens)
        return
    from analytics.simulate.archive_sink import Target, default_jobs, simulate_to_archive

    count = conversations or (conversations_for_events(base, events) if events else 1000)
    profile = replace_fields(base, conversations=count)
    where = output or f"s3://{settings.s3.bucket}/simulated"
    try:
        target = Target.parse(where)
        if target.holds_archive(settings):
            if not replace:
                raise click.ClickException(
                    f"{where} already holds an archive; pass --replace to overwrite it, or "
                    "choose another --output"
                )
            target.clear(settings)
        with tqdm(total=count, desc="simulating", unit="conv") as bar:
            result = simulate_to_archive(
                profile, where, settings, jobs=jobs or default_jobs(), on_progress=bar.update
            )
    except ChatbusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        json.dumps(
            {
                "events": result.events,
                "conversations": result.conversations,
                "objects": result.objects,
                "seconds": round(result.seconds, 1),
                "events_per_s": round(result.events_per_s),
                "per_topic": result.per_topic,
            }
        )
    )
    click.secho(
        f"archive at {result.root}; next: chatbus analytics report --input {result.root}",
        dim=True,
        err=True,
    )


def _simulate_pipeline(
    profile: Profile, settings: Settings, timeout: float, max_tokens: int
) -> None:
    from tqdm import tqdm

    from chatbus.cli.pipeline_sink import simulate_to_pipeline

    try:
        with tqdm(total=profile.conversations, desc="conversations", unit="conv") as bar:
            result = asyncio.run(
                simulate_to_pipeline(
                    profile,
                    settings,
                    max_tokens=max_tokens,
                    timeout_s=timeout,
                    on_progress=bar.update,
                )
            )
    except ChatbusError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({k: v for k, v in result.__dict__.items() if k != "errors"}))
    for error in result.errors[:10]:
        click.secho(f"  {error}", fg="yellow", err=True)
    if result.failed:
        raise click.ClickException(
            f"{result.failed} of {result.requests} requests got no answer in time: are the "
            "workers and processors running (`make run`)?"
        )
