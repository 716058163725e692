"""``chatbus analytics …`` and ``chatbus simulate``: the data scientists' commands.

Registered on the main ``chatbus`` command by :mod:`chatbus.cli`. Nothing here imports pyspark at
import time (the CLI must start fast); the jobs import it when they run.
"""

from __future__ import annotations

import click


@click.group()
def analytics() -> None:
    """PySpark jobs over the S3 archive (latency, usage, moderation, conversations, fairness)."""


@click.command()
def simulate() -> None:
    """Produce synthetic conversations for analysis."""
    raise click.ClickException("not built yet")
