"""``chatbus shadow``: a candidate model answers recorded traffic where no user sees it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError, ConfigurationError
from chatbus.settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
_SPAN = re.compile(r"^(\d+)([mhd])$")


def _span(text: str) -> timedelta:
    match = _SPAN.match(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a span like 30m, 1h or 2d")
    n, unit = int(match[1]), match[2]
    return timedelta(minutes=n) if unit == "m" else timedelta(hours=n if unit == "h" else 24 * n)


def _window(start: str | None, end: str | None, last: str | None) -> tuple[datetime, datetime]:
    from chatbus.accounts.usage import parse_moment

    if last is not None:
        if start is not None:
            raise click.UsageError("give --last or --from/--to, not both")
        now = datetime.now(UTC)
        return now - _span(last), now
    if start is None:
        raise click.UsageError("say which traffic to replay: --last 1h, or --from [--to]")
    try:
        return parse_moment(start), parse_moment(end or "now", end_of_day=True)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _candidate(settings: Settings, model: str) -> Path:
    """A model folder, or the name of a local model (built by `make model`)."""
    path = Path(model).expanduser()
    if not path.exists() and "/" not in model:
        path = settings.model_folder(model)
    if not (path / "config.json").exists():
        raise ConfigurationError(
            f"no model at {model}: give a Hugging Face model folder (what `chatbus train` "
            "writes) or a local model name (`make model` builds them)"
        )
    return path.resolve()


def _judge(settings: Settings) -> Any:
    """The output moderation classifier's judgement of one text."""
    from stream_processors.moderation.abuse import AbusePolicy
    from stream_processors.moderation.categories import thresholds_from
    from stream_processors.moderation.classifier import build_classifier
    from stream_processors.moderation.moderator import InputModerator

    moderator = InputModerator(
        build_classifier(settings), thresholds_from(settings), AbusePolicy.from_settings(settings)
    )
    return moderator.judge


@click.command()
@click.option("--model", "model", required=True, help="The candidate: a model folder or name.")
@click.option("--from", "start", default=None, help="Window start: 2026-11-30, an ISO time.")
@click.option("--to", "end", default=None, help="Window end (default: now).")
@click.option("--last", default=None, help="Instead of --from/--to: the last 30m, 1h, 2d.")
@click.option(
    "--input",
    "source",
    default=None,
    help="Archive to replay: a folder or s3://BUCKET/PREFIX (default: the configured archive).",
)
@click.option("--name", default=None, help="The run's name (default: the model folder's name).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Replay at most N.")
@click.option("--timeout", type=float, default=3600.0, show_default=True)
@click.option("--no-moderation", is_flag=True, help="Do not judge the candidate's answers.")
@click.option("--keep-topics", is_flag=True, help="Keep the run's shadow topics afterwards.")
def shadow(
    model: str,
    start: str | None,
    end: str | None,
    last: str | None,
    source: str | None,
    name: str | None,
    limit: int | None,
    timeout: float,
    no_moderation: bool,
    keep_topics: bool,
) -> None:
    """Replay the requests archived in a time window to a candidate model, on shadow topics no
    user reads (production topics, groups and conversations are never touched); its answers and
    their moderation verdicts are archived under <archive prefix>-shadow/NAME for
    `chatbus analytics compare`."""
    from tqdm import tqdm

    from chatbus.logging import configure_logging
    from inference_consumers.serve import build_engine
    from inference_consumers.shadow.archived_requests import archived_requests
    from inference_consumers.shadow.replay import run_shadow
    from inference_consumers.worker import InferenceWorker
    from stream_processors.archiver.archiver import Archiver

    settings = common.settings()
    configure_logging(settings, component="shadow")
    window = _window(start, end, last)
    try:
        path = _candidate(settings, model)
        run_name = name or re.sub(r"[^A-Za-z0-9_-]", "-", path.name)
        if not _NAME.match(run_name):
            raise ConfigurationError(f"--name {run_name!r}: letters, digits, - and _ only")
        requests = archived_requests(settings, source, *window, limit=limit)
    except ChatbusError as exc:
        common.fail(exc)
    click.echo(
        f"replaying {len(requests)} request(s) from {window[0]:%F %T} to {window[1]:%F %T} UTC "
        f"to {path} as shadow run {run_name!r}"
    )
    judge = None if no_moderation else _judge(settings)
    bar = tqdm(total=len(requests), desc="shadow answers", unit="answer")

    def progress(answered: int, total: int) -> None:
        bar.update(answered - bar.n)

    result = common.run_async(
        run_shadow(
            settings,
            requests,
            name=run_name,
            model_name=f"shadow-{run_name}",
            model_path=str(path),
            worker=lambda s: InferenceWorker(s, build_engine(s), worker_id=f"shadow-{run_name}"),
            archiver=Archiver,
            judge=judge,
            timeout_s=timeout,
            keep_topics=keep_topics,
            on_answer=progress,
        )
    )
    bar.close()
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.finish_reasons.items()))
    click.echo(
        f"answered {result.answered}/{result.replayed} ({reasons}); "
        f"{result.completion_tokens} tokens in {result.seconds:.1f} s "
        f"({result.tokens_per_s:.1f} tokens/s); flagged by output moderation: {result.flagged}"
    )
    click.echo(f"shadow archive: {result.archive}")
    if result.missing:
        common.fail(
            f"{len(result.missing)} request(s) got no answer before --timeout "
            f"(first: {', '.join(result.missing[:5])})"
        )
