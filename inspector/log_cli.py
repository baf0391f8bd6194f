"""``fieldproof log …``: following a collector's public log (C2SP tlog-tiles) from outside."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from fieldproof.formats.note import Ed25519Verifier, NoteError


@click.group("log")
def log_group() -> None:
    """Follow and check a collector's public evidence log (tiles)."""


@log_group.command("mirror")
@click.argument("url")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--log-key", required=True,
              help="the log's verifier key (vkey) you were given by the operator, "
                   "e.g. 'fieldproof.example/log/c1+1a2b3c4d+…'; never taken from the log")
@click.option("--entries", is_flag=True,
              help="also fetch the entry bundles (farm data: the server may ask for a token)")
@click.option("--token-env", default=None, metavar="VAR",
              help="environment variable holding the bearer token for entry bundles")
@click.option("--watch", type=click.FloatRange(min=1.0), default=None, metavar="SECONDS",
              help="keep following: check again every SECONDS (a monitor)")
def mirror_command(url: str, directory: Path, log_key: str, entries: bool,
                   token_env: str | None, watch: float | None) -> None:
    """Copy the log at URL (http(s):// or a directory) into DIRECTORY, checking its signed
    checkpoint, its tiles and that it still extends what was mirrored before. Exits 1 on a
    fork or rewrite (the mirror keeps what it had), 2 when the log cannot be reached."""
    import os

    from inspector.mirror import MirrorError, SourceUnavailable, mirror_once, source_for

    try:
        verifier = Ed25519Verifier.from_vkey(log_key)
    except (NoteError, ValueError) as exc:
        raise click.BadParameter(f"not a log key (vkey): {exc}", param_hint="--log-key") from None
    token = os.environ.get(token_env) if token_env else None
    source = source_for(url, token)
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            result = mirror_once(source, directory, verifier, entries=entries)
        except MirrorError as exc:
            click.echo(f"fieldproof log mirror: {exc}", err=True)
            sys.exit(1)
        except SourceUnavailable as exc:
            click.echo(f"fieldproof log mirror: cannot reach the log: {exc}", err=True)
            if watch is None:
                sys.exit(2)
        else:
            if result.grew:
                click.echo(
                    f"{directory}: {result.size} entries (was {result.previous_size}), "
                    f"{result.fetched} file(s) fetched and checked",
                    err=True,
                )
            elif watch is None:
                click.echo(f"{directory}: up to date at {result.size} entries", err=True)
        if watch is None:
            return
        time.sleep(watch)
