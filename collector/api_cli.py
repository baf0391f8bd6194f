"""``fieldproof collector api-token …``: the access tokens of the inspector API.

    fieldproof collector api-token create --farm FARM | --all-farms [--label TEXT] [--days N]
    fieldproof collector api-token list
    fieldproof collector api-token revoke ID

``create`` prints the token once, on stdout and alone (``T=$(… create --farm a)``); the token
file keeps only its hash (collector/api_tokens.py). A running server notices a revocation at its
next request.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from collector.api_tokens import TokenFile, TokenStoreError, tokens_path
from fieldproof.cli_common import config_option, load_config_or_exit

__all__ = ["api_token_group"]


def _store(config_path: Path | None) -> TokenFile:
    return TokenFile(tokens_path(load_config_or_exit(config_path)))


def _when(ts: float | None) -> str:
    return "never" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


@click.group("api-token")
def api_token_group() -> None:
    """Access tokens of the inspector page and API, each for one farm or all farms."""


@api_token_group.command("create")
@config_option
@click.option("--farm", default=None, help="the one farm this token reads")
@click.option("--all-farms", is_flag=True, help="the token reads every farm")
@click.option("--label", default="", help="who or what it is for (shown by 'list')")
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True, max=3650),
    default=None,
    help="expire after this many days (default: until revoked)",
)
def create_command(
    config_path: Path | None, farm: str | None, all_farms: bool, label: str, days: float | None
) -> None:
    """Make a token; it is printed once and cannot be shown again."""
    if (farm is None) == (not all_farms):
        raise click.UsageError("give either --farm FARM or --all-farms")
    store = _store(config_path)
    try:
        text, tok = store.create(farm, label, None if days is None else days * 86400.0)
    except TokenStoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"token {tok.id} for {tok.scope}, expires {_when(tok.expires_at)}; it is shown only "
        f"now (send it as 'Authorization: Bearer <token>'). Kept as a hash in {store.path}",
        err=True,
    )
    click.echo(text)


@api_token_group.command("list")
@config_option
def list_command(config_path: Path | None) -> None:
    """The tokens: id, scope, label, created, expires (never the secret)."""
    store = _store(config_path)
    try:
        tokens = store.all()
    except TokenStoreError as exc:
        raise click.ClickException(str(exc)) from None
    if not tokens:
        click.echo(f"no tokens in {store.path}", err=True)
        return
    click.echo(f"{'id':<9} {'reads':<24} {'created (UTC)':<17} {'expires (UTC)':<17} label")
    now = time.time()
    for t in tokens:
        expires = _when(t.expires_at) + (" (expired)" if t.expired(now) else "")
        click.echo(
            f"{t.id:<9} {t.scope:<24} {_when(t.created_at):<17} {expires:<17} {t.label}"
        )


@api_token_group.command("revoke")
@config_option
@click.argument("token_id", metavar="ID")
def revoke_command(config_path: Path | None, token_id: str) -> None:
    """Remove a token; a running server refuses it from its next request on."""
    store = _store(config_path)
    try:
        tok = store.revoke(token_id.strip().lower())
    except TokenStoreError as exc:
        raise click.ClickException(str(exc)) from None
    if tok is None:
        raise click.ClickException(f"no token with id {token_id!r} ('api-token list' shows them)")
    click.echo(f"revoked token {tok.id} ({tok.scope})")
