"""What every command group shares: the settings, one-line failures, running a component."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click

from chatbus.errors import ChatbusError
from chatbus.settings import Settings, get_settings

T = TypeVar("T")


def settings() -> Settings:
    return get_settings()


def fail(exc: BaseException | str) -> NoReturn:
    """End the command with ``error: <exc>`` in red on stderr and exit status 1."""
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(1)


def run_async(work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; our errors end the command with their message and exit status 1."""
    try:
        return asyncio.run(work)
    except ChatbusError as exc:
        fail(exc)


def serve(
    component: str,
    run: Callable[[Settings], Coroutine[Any, Any, None] | None],
    configured: Settings | None = None,
) -> None:
    """Run one long-lived component (a coroutine function or a blocking one) with its logging
    until it stops; our errors as one line."""
    import inspect

    from chatbus.logging import configure_logging

    configured = configured or settings()
    configure_logging(configured, component=component)
    try:
        if inspect.iscoroutinefunction(run):
            asyncio.run(run(configured))
        else:
            run(configured)
    except ChatbusError as exc:
        fail(exc)
