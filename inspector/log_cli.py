"""``fieldproof log …``: following a collector's public log (C2SP tlog-tiles) from outside."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from fieldproof.formats.note import Ed25519Verifier, NoteError

if TYPE_CHECKING:
    from fieldproof.formats.cosignature import CosignatureVerifier
    from inspector.mirror import MirrorResult


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
@click.option("--witness-key", "witness_keys", multiple=True, metavar="VKEY",
              help="a witness's cosignature/v1 vkey (name+hexid+base64, as litewitness "
                   "announces it; repeatable): keep only its valid cosignatures, the latest "
                   "of each, and drop every other cosignature line")
@click.option("--policy", "policy_file", type=click.Path(dir_okay=False, path_type=Path),
              default=None,
              help="take the witness keys from a trust policy (the Sigsum/C2SP policy file "
                   "'fieldproof verify --policy' reads); --log-key must be one of its logs")
def mirror_command(url: str, directory: Path, log_key: str, entries: bool,
                   token_env: str | None, watch: float | None, witness_keys: tuple[str, ...],
                   policy_file: Path | None) -> None:
    """Copy the log at URL (http(s):// or a directory) into DIRECTORY, checking its signed
    checkpoint, its tiles and that it still extends what was mirrored before. Exits 1 on a
    fork or rewrite (the mirror keeps what it had), 2 when the log cannot be reached."""
    import os

    from inspector.mirror import MirrorError, SourceUnavailable, mirror_once, source_for

    try:
        verifier = Ed25519Verifier.from_vkey(log_key)
    except (NoteError, ValueError) as exc:
        raise click.BadParameter(f"not a log key (vkey): {exc}", param_hint="--log-key") from None
    witnesses = _witnesses(witness_keys, policy_file, verifier)
    token = os.environ.get(token_env) if token_env else None
    source = source_for(url, token)
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            result = mirror_once(source, directory, verifier, entries=entries,
                                 witnesses=witnesses)
        except MirrorError as exc:
            click.echo(f"fieldproof log mirror: {exc}", err=True)
            sys.exit(1)
        except SourceUnavailable as exc:
            click.echo(f"fieldproof log mirror: cannot reach the log: {exc}", err=True)
            if watch is None:
                sys.exit(2)
        else:
            cosigned = _cosigned(result, len(witnesses))
            if result.grew:
                click.echo(
                    f"{directory}: {result.size} entries (was {result.previous_size}), "
                    f"{result.fetched} file(s) fetched and checked{cosigned}",
                    err=True,
                )
            elif result.cosigned:
                click.echo(f"{directory}: {result.size} entries, new cosignatures "
                           f"kept{cosigned}", err=True)
            elif watch is None:
                click.echo(f"{directory}: up to date at {result.size} entries{cosigned}",
                           err=True)
        if watch is None:
            return
        time.sleep(watch)


def _witnesses(vkeys: tuple[str, ...], policy_file: Path | None,
               log: Ed25519Verifier) -> list[CosignatureVerifier]:
    """The witness keys of ``--witness-key`` and ``--policy``, each once, or a usage error
    naming the option and the key."""
    from fieldproof.formats.cosignature import CosignatureError, CosignatureVerifier

    out: dict[tuple[str, int], CosignatureVerifier] = {}
    for vkey in vkeys:
        try:
            w = CosignatureVerifier.from_vkey(vkey)
        except CosignatureError as exc:
            raise click.BadParameter(
                f"{vkey[:120]!r} is not a witness key: {exc}. Give the witness's cosignature/v1 "
                "vkey (name+hexid+base64 of 0x04 and the key), as the witness announces it",
                param_hint="--witness-key") from None
        out.setdefault((w.name, w.key_id), w)
    if policy_file is not None:
        from inspector.policy import MAX_POLICY_BYTES, Policy, PolicyError

        try:
            with open(policy_file, "rb") as f:
                policy = Policy.parse(f.read(MAX_POLICY_BYTES + 1))
        except OSError as exc:
            raise click.BadParameter(f"cannot read {policy_file}: {exc.strerror}",
                                     param_hint="--policy") from None
        except PolicyError as exc:
            raise click.BadParameter(f"{policy_file}: {exc}", param_hint="--policy") from None
        if all(e.public_key != log.public_key for e in policy.logs):
            raise click.BadParameter(
                f"--log-key {log.vkey} is not a log of {policy_file}: mirror a log the policy "
                "names, or fix the policy", param_hint="--policy")
        for entry in policy.witnesses.values():
            out.setdefault((entry.verifier.name, entry.verifier.key_id), entry.verifier)
    return list(out.values())


def _cosigned(result: MirrorResult, given: int) -> str:
    """What the kept checkpoint holds of the given witnesses, for the progress line."""
    if not given:
        return ""
    names = ", ".join(result.witnesses_signed) or "none"
    dropped = f"; {result.dropped} unverified line(s) dropped" if result.dropped else ""
    return f"; cosigned by {len(result.witnesses_signed)} of {given} witness(es) ({names}){dropped}"
