"""``chatbus users delete``: erase what chatbus stores about a user."""

from __future__ import annotations

import asyncio

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.group()
def users() -> None:
    """What chatbus stores about a user."""


@users.command("delete")
@click.argument("name")
@click.option("--keep-keys", is_flag=True, help="Keep the user's API keys (history only).")
def users_delete(name: str, keep_keys: bool) -> None:
    """Delete everything of user NAME: the user and their API keys (PostgreSQL; the usage ledger
    keeps its rows), conversations and turns (MongoDB), cached context (Redis)."""
    from chatbus.api_keys import ApiKeyStore
    from chatbus.history.erase import erase_user_history

    settings = common.settings()

    async def _run() -> tuple[int, list[str]]:
        keys = 0
        if not keep_keys:  # first: no new requests from this user while history is erased
            store = ApiKeyStore(settings)
            await store.start()
            try:
                keys = await store.delete_user(name)
            finally:
                await store.stop()
        return keys, await erase_user_history(settings, name)

    try:
        keys, conversations = asyncio.run(_run())
    except ChatbusError as exc:
        common.fail(exc)
        return
    click.echo(
        f"deleted user {name}: {len(conversations)} conversation(s), {keys} API key(s)"
        + (" (keys kept)" if keep_keys else "")
    )
