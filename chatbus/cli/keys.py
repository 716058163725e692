"""``chatbus keys create|list|revoke``: the gateway's API keys."""

from __future__ import annotations

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.group()
def keys() -> None:
    """API keys of the gateway (stored hashed in MongoDB)."""


@keys.command("create")
@click.option("--user", required=True, help="The user the key acts as.")
def keys_create(user: str) -> None:
    """Create an API key for USER and print it (it is shown only this once)."""
    from chatbus.api_keys import create_key

    try:
        key, principal = create_key(common.settings(), user)
    except ChatbusError as exc:
        common.fail(exc)
        return
    click.echo(key)
    click.secho(
        f"[{principal.key_id} for user {principal.user}; shown once, stored hashed]",
        dim=True,
        err=True,
    )


@keys.command("list")
@click.option("--user", default=None, help="Only this user's keys.")
def keys_list(user: str | None) -> None:
    """List API keys (id, user, created); the keys themselves are never stored."""
    from chatbus.api_keys import list_keys

    try:
        found = list_keys(common.settings(), user)
    except ChatbusError as exc:
        common.fail(exc)
        return
    for doc in found:
        click.echo(f"{doc['_id']}  {doc.get('user', '?'):24} created {doc.get('created_at')}")
    if not found:
        click.echo("no keys" + (f" for user {user}" if user else ""))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (from `chatbus keys list`)."""
    from chatbus.api_keys import revoke_key

    settings = common.settings()
    try:
        revoked = revoke_key(settings, key_id)
    except ChatbusError as exc:
        common.fail(exc)
        return
    if not revoked:
        common.fail(f"no key {key_id!r}; see `chatbus keys list`")
    click.echo(
        f"revoked {key_id}; gateways that verified it refuse it within "
        f"{settings.gateway.key_cache_s:.0f} s (CHATBUS_GATEWAY_KEY_CACHE_S)"
    )
