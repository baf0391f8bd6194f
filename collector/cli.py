"""``fieldproof collector …``: what the operator runs on the server."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from collector.cli_common import open_registry
from collector.registry import Registry, RegistryError, parse_public_key
from collector.store import QUARANTINE_TEXT_KEPT, CollectorStore
from fieldproof.cli_common import config_option, load_config_or_exit
from fieldproof.datadir import DataDirLocked, open_db, running_collector
from fieldproof.formats.enrollment import printable

#: a quarantined row's text is shown up to this many characters (what the store keeps, and more)
QUARANTINE_SHOWN_CHARS = 4 * QUARANTINE_TEXT_KEPT


@click.group("collector")
def collector_group() -> None:
    """Collector: verify, store and log what gateways send."""


@collector_group.command("run")
@config_option
def run_command(config_path: Path | None) -> None:
    """Run the collector until SIGTERM/Ctrl-C."""
    from collector.service import Collector

    try:
        collector = Collector(load_config_or_exit(config_path))
    except DataDirLocked as exc:  # another collector runs here (once the service takes it)
        raise click.ClickException(str(exc)) from None

    def _stop(signum: int, frame: Any) -> None:
        collector.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    collector.run()


def _mount_inspector() -> None:
    from collector.api import inspector_command
    from collector.api_cli import api_token_group

    collector_group.add_command(inspector_command)
    collector_group.add_command(api_token_group)


@collector_group.command("status")
@config_option
def status_command(config_path: Path | None) -> None:
    """Counts, quarantine reasons and sequence gaps from the collector's database."""
    cfg = load_config_or_exit(config_path)
    if not cfg.db_path.exists():
        raise click.ClickException(
            f"no collector database at {cfg.db_path}{_config_source(config_path)}: "
            "pass the --config the collector runs with"
        )
    holder = running_collector(cfg.data_dir)
    click.echo(f"database: {cfg.db_path}{_config_source(config_path)}")
    click.echo(
        f"collector: running ({holder})" if holder else "collector: NOT running on this database"
    )
    db = open_db(cfg.db_path)
    store = CollectorStore(db)
    messages, readings = store.accepted_count()
    click.echo(f"accepted: {messages} messages, {readings} readings")
    for reason, n in sorted(store.quarantine_by_reason().items()):
        click.echo(f"quarantined ({reason}): {n}")
    gaps = store.gaps()
    click.echo(f"sequence gaps: {len(gaps)}")
    for g in gaps[:20]:
        click.echo(f"  {g.gateway}: seq {g.first_missing}..{g.last_missing} ({g.size} missing)")


@collector_group.command("quarantine")
@config_option
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
def quarantine_command(config_path: Path | None, limit: int) -> None:
    """The newest quarantined messages: when, which topic and gateway, why."""
    cfg = load_config_or_exit(config_path)
    store = CollectorStore(open_db(cfg.db_path))
    table = Table("received (UTC)", "gateway", "reason", "detail")
    # topic and detail come from hostile messages: controls shown escaped, and as Text so that
    # rich does not read "[...]" in them as markup
    for received, topic, gateway, reason, detail in store.quarantine_rows(limit):
        table.add_row(
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(received)),
            Text(printable(gateway or topic, QUARANTINE_SHOWN_CHARS)),
            Text(printable(reason, QUARANTINE_SHOWN_CHARS)),
            Text(printable(detail, QUARANTINE_SHOWN_CHARS)),
        )
    Console().print(table)
    for reason, n in sorted(store.quarantine_by_reason().items()):
        click.echo(f"{printable(reason, QUARANTINE_SHOWN_CHARS)}: {n} in total")


@collector_group.group("devices")
def devices_group() -> None:
    """The device registry."""


@devices_group.command("add")
@config_option
@click.option("--id", "gateway", required=True, help="gateway id printed by 'gateway init'")
@click.option("--public-key", required=True, help="64 hex digits printed by 'gateway init'")
@click.option("--farm", required=True)
@click.option("--field", required=True)
@click.option("--location", default="", help="free text or 'lat,lon'")
@click.option(
    "--sensor-tag",
    "sensor_tags",
    multiple=True,
    metavar="SENSOR:KEY=VALUE",
    help="extra InfluxDB tag for one sensor, e.g. soil1:depth_cm=20 (repeatable)",
)
def add_command(
    config_path: Path | None,
    gateway: str,
    public_key: str,
    farm: str,
    field: str,
    location: str,
    sensor_tags: tuple[str, ...],
) -> None:
    """Register a gateway so its messages are accepted."""
    for option, value in (("--farm", farm), ("--field", field)):
        if _placeholder(value):
            raise click.BadParameter(
                f"{value!r} looks like a placeholder from a hint, not a name: give the real "
                f"{option[2:]} this gateway stands in",
                param_hint=option,
            )
    meta: dict[str, dict[str, str]] = {}
    for item in sensor_tags:
        try:
            sensor, kv = item.split(":", 1)
            k, v = kv.split("=", 1)
        except ValueError:
            raise click.BadParameter(
                f"{item!r} is not SENSOR:KEY=VALUE", param_hint="--sensor-tag"
            ) from None
        meta.setdefault(sensor, {})[k] = v
    cfg = load_config_or_exit(config_path)
    try:
        device = open_registry(cfg).add(
            gateway, parse_public_key(public_key), farm, field, location, meta
        )
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"registered {device.gateway} for farm {device.farm}, field {device.field} in "
        f"{cfg.db_path}{_config_source(config_path)}"
    )


@devices_group.command("list")
@config_option
def list_command(config_path: Path | None) -> None:
    """Show registered gateways."""
    cfg = load_config_or_exit(config_path)
    table = Table("gateway", "farm", "field", "status", "added (UTC)")
    for d in Registry(open_db(cfg.db_path)).all():
        table.add_row(
            d.gateway,
            d.farm,
            d.field,
            d.status,
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(d.added_at)),
        )
    Console().print(table)


@devices_group.command("revoke")
@config_option
@click.argument("gateway")
def revoke_command(config_path: Path | None, gateway: str) -> None:
    """Stop accepting a gateway's messages (lost, stolen or replaced)."""
    cfg = load_config_or_exit(config_path)
    try:
        open_registry(cfg).revoke(gateway)
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"revoked {gateway} in {cfg.db_path}{_config_source(config_path)}; its messages are "
        "now quarantined as 'revoked'"
    )


#: what hints print where the operator must fill in a value
_PLACEHOLDERS = frozenset({"farm", "field", "name", "todo", "xxx", "changeme"})


def _placeholder(value: str) -> bool:
    """A value copied from a hint instead of filled in: FARM, <field>, …, TODO."""
    v = value.strip()
    return (
        not v
        or v.lower() in _PLACEHOLDERS
        or v[:1] in "<[{"
        or "…" in v
        or "..." in v
    )


def _config_source(config_path: Path | None) -> str:
    """Said after every path a command wrote to or read: without --config it is the built-in
    default, which is rarely what an operator meant."""
    return "" if config_path is not None else " (no --config given: built-in defaults)"


def _mount_security() -> None:
    from collector.security_cli import mount

    mount(collector_group, devices_group)


_mount_inspector()
_mount_security()
