"""``chatbus keys create|list|revoke|limits|import-from-mongo``: the gateway's API keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from chatbus.cli import common
from chatbus.errors import ChatbusError


@click.group()
def keys() -> None:
    """API keys of the gateway (stored hashed in PostgreSQL), their states and limits."""


def _limit_options(func: Any) -> Any:
    for option in (
        click.option(
            "--rpm",
            type=int,
            default=None,
            help="Requests per minute (default: CHATBUS_GATEWAY_REQUESTS_PER_MINUTE).",
        ),
        click.option(
            "--tpm",
            type=int,
            default=None,
            help="Tokens per minute (default: CHATBUS_GATEWAY_TOKENS_PER_MINUTE).",
        ),
        click.option(
            "--monthly-tokens",
            type=int,
            default=None,
            help="Monthly token budget (UTC calendar month; default: none). Spent: 429 "
            "insufficient_quota.",
        ),
        click.option(
            "--expires-in",
            type=str,
            default=None,
            metavar="DURATION",
            help="Expire after this long: 30d, 12h, 90m.",
        ),
    ):
        func = option(func)
    return func


def _expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit():
        common.fail(f"--expires-in {text!r}: give a number and a unit, e.g. 30d, 12h, 90m")
    return datetime.now(UTC) + timedelta(**{units[unit]: int(number)})


@keys.command("create")
@click.option("--user", required=True, help="The user the key acts as.")
@_limit_options
def keys_create(
    user: str, rpm: int | None, tpm: int | None, monthly_tokens: int | None, expires_in: str | None
) -> None:
    """Create an API key for USER and print it (it is shown only this once)."""
    from chatbus.api_keys import create_key

    try:
        key, principal = create_key(
            common.settings(),
            user,
            expires_at=_expiry(expires_in),
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
            monthly_token_budget=monthly_tokens,
        )
    except ChatbusError as exc:
        common.fail(exc)
    click.echo(key)
    click.secho(
        f"[{principal.key_id} for user {principal.user}; shown once, stored hashed]",
        dim=True,
        err=True,
    )


@keys.command("list")
@click.option("--user", default=None, help="Only this user's keys.")
def keys_list(user: str | None) -> None:
    """List API keys (id, user, state, limits, created); the keys themselves are never stored."""
    from chatbus.api_keys import list_keys

    try:
        found = list_keys(common.settings(), user)
    except ChatbusError as exc:
        common.fail(exc)
    for k in found:
        limits = ", ".join(
            f"{name} {value}"
            for name, value in (
                ("rpm", k.requests_per_minute),
                ("tpm", k.tokens_per_minute),
                ("monthly tokens", k.monthly_token_budget),
            )
            if value is not None
        )
        expiry = f" expires {k.expires_at:%Y-%m-%d %H:%M}" if k.expires_at else ""
        click.echo(
            f"{k.key_id}  {k.user:24} {k.state:8} created {k.created_at:%Y-%m-%d %H:%M}"
            f"{expiry}{'  ' + limits if limits else ''}"
        )
    if not found:
        click.echo("no keys" + (f" for user {user}" if user else ""))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke the key KEY_ID (from `chatbus keys list`): every gateway refuses it at once."""
    from chatbus.api_keys import revoke_key

    settings = common.settings()
    try:
        revoked = revoke_key(settings, key_id)
    except ChatbusError as exc:
        common.fail(exc)
    if not revoked:
        common.fail(f"no active key {key_id!r}; see `chatbus keys list`")
    click.echo(
        f"revoked {key_id}; gateways drop it at once (and within "
        f"{settings.gateway.key_cache_s:.0f} s, CHATBUS_GATEWAY_KEY_CACHE_S, while one reconnects)"
    )


@keys.command("limits")
@click.argument("key_id")
@_limit_options
@click.option(
    "--clear",
    multiple=True,
    type=click.Choice(["rpm", "tpm", "monthly-tokens", "expiry"]),
    help="Back to the default (repeatable).",
)
def keys_limits(
    key_id: str,
    rpm: int | None,
    tpm: int | None,
    monthly_tokens: int | None,
    expires_in: str | None,
    clear: tuple[str, ...],
) -> None:
    """Change the limits of KEY_ID; gateways see the change at once."""
    from chatbus.api_keys import set_limits

    changes: dict[str, Any] = {}
    for flag, field, value in (
        ("rpm", "requests_per_minute", rpm),
        ("tpm", "tokens_per_minute", tpm),
        ("monthly-tokens", "monthly_token_budget", monthly_tokens),
        ("expiry", "expires_at", _expiry(expires_in)),
    ):
        if flag in clear:
            changes[field] = None
        elif value is not None:
            changes[field] = value
    if not changes:
        common.fail(
            "nothing to change: give --rpm, --tpm, --monthly-tokens, --expires-in or --clear"
        )
    try:
        found = set_limits(common.settings(), key_id, **changes)
    except ChatbusError as exc:
        common.fail(exc)
    if not found:
        common.fail(f"no key {key_id!r}; see `chatbus keys list`")
    click.echo(f"{key_id}: " + ", ".join(f"{k} = {v}" for k, v in changes.items()))


@keys.command("import-from-mongo")
def keys_import() -> None:
    """Copy the keys kept in MongoDB by chatbus before PostgreSQL (once, after upgrading)."""
    from chatbus.api_keys import import_from_mongo

    try:
        copied, present = import_from_mongo(common.settings())
    except ChatbusError as exc:
        common.fail(exc)
    click.echo(f"copied {copied} key(s) from MongoDB; {present} already in PostgreSQL or skipped")
