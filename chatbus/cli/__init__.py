"""The ``chatbus`` command: the one place that wires every component together.

One module per command group; each imports what its commands drive inside the command, so
``chatbus --help`` and ``chatbus gateway`` load neither torch, pyspark nor faust. Commands that
need the local services manager (``infra.local``) live here and in :mod:`chatbus.cli.ops`:
nothing else in ``chatbus`` imports it.
"""

from __future__ import annotations

import click

from chatbus.cli.analytics import analytics, simulate
from chatbus.cli.archive import archive
from chatbus.cli.chat import chat
from chatbus.cli.components import archiver, gateway, ledger, processors, worker
from chatbus.cli.db import db
from chatbus.cli.keys import keys
from chatbus.cli.model import model
from chatbus.cli.models import models
from chatbus.cli.ops.commands import ops
from chatbus.cli.pipeline import pipeline, supervise
from chatbus.cli.schemas import schemas_cmd
from chatbus.cli.services import infra
from chatbus.cli.shadow import shadow
from chatbus.cli.topics import topics
from chatbus.cli.train import train
from chatbus.cli.usage import usage
from chatbus.cli.users import users

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """chatbus: a chat service on Kafka. Settings come from CHATBUS_* environment variables."""


for _command in (
    chat,
    worker,
    gateway,
    keys,
    db,
    usage,
    processors,
    archiver,
    ledger,
    archive,
    users,
    topics,
    model,
    models,
    train,
    shadow,
    infra,
    pipeline,
    supervise,
    schemas_cmd,
    analytics,
    simulate,
    ops,
):
    main.add_command(_command)
