"""``fieldproof export``: the operator's side of an audit. Builds an evidence bundle for a
farm, field or gateway and a period from the collector's database (docs/bundle.md) and writes
it atomically; the inspector checks it with ``fieldproof verify``. It signs the bundle's
completeness claim, so it runs where the collector's log key is."""

from __future__ import annotations

import time
from pathlib import Path

import click

from fieldproof.cli_common import parse_time, read_small, write_atomic


@click.command("export")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="the collector's TOML configuration")
@click.option("--farm", default=None, help="only gateways enrolled for this farm")
@click.option("--field", default=None, help="only gateways enrolled for this field")
@click.option("--gateway", default=None, help="only this gateway")
@click.option("--from", "start", required=True, help="period start: ISO 8601 (UTC) or Unix s")
@click.option("--to", "end", default=None, help="period end (default: now)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="bundle file to write (CBOR, docs/bundle.md)")
@click.option("--since-checkpoint", "since", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="a signed checkpoint the inspector already trusts (repeatable): the bundle "
                   "then proves it extends that checkpoint")
def export_command(config_path: Path, farm: str | None, field: str | None,
                   gateway: str | None, start: str, end: str | None, output: Path,
                   since: tuple[Path, ...]) -> None:
    """Export an evidence bundle for a farm/field/gateway and period, for an inspector."""
    from anchor.logkey import LogKeyError
    from collector.export import ExportError, build_bundle
    from fieldproof.config import load_collector_config
    from fieldproof.errors import ConfigError
    from fieldproof.formats.bundle import encode_bundle

    try:
        config = load_collector_config(config_path)
        t0 = parse_time(start)
        t1 = time.time() if end is None else parse_time(end)
        notes = [read_small(p, "--since-checkpoint") for p in since]
        bundle, stats = build_bundle(config, farm=farm, field=field, gateway=gateway,
                                     start=t0, end=t1, since=notes)
    except (ConfigError, ExportError, LogKeyError) as exc:
        raise click.UsageError(str(exc)) from None
    data = encode_bundle(bundle)
    write_atomic(output, data)
    click.echo(
        f"wrote {output} ({len(data):,} bytes): {stats.messages:,} messages and "
        f"{stats.registry_events} registry events of {len(stats.gateways)} gateway(s), "
        f"{stats.checkpoints} checkpoint(s) of which {stats.anchored_checkpoints} anchored"
        + (f"; {stats.unproven_entries} entries newer than every checkpoint"
           if stats.unproven_entries else ""),
        err=True,
    )
    if stats.claim_size:
        click.echo(f"completeness claim signed with the log key: every registry event and, per "
                   f"gateway, every message from just before to just after the period, below "
                   f"tree size {stats.claim_size}", err=True)
    else:
        click.echo("no completeness claim: the log has no signed checkpoint yet (the inspector "
                   "will see completeness_unproven)", err=True)
    click.echo(f"log key (publish it; inspectors pass it as --log-key): {bundle.vkey}", err=True)
