"""``chatbus schemas``: export the events' JSON Schema."""

from __future__ import annotations

import sys
from typing import Any

import click


@click.command("schemas")
@click.option("--check", is_flag=True, help="Fail when schemas/json is stale.")
def schemas_cmd(check: bool) -> None:
    """Export the events' JSON Schema to schemas/json."""
    from schemas.export import main as export_main

    args: list[Any] = ["--check"] if check else []
    sys.exit(export_main(args))
