"""``fieldproof gateway …``: what a field technician runs on the Pi."""

from __future__ import annotations

import faulthandler
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

import click

from fieldproof.errors import ConfigError
from fieldproof.keys import KeyFileError, create_key_file
from fieldproof.wire import gateway_id_for, public_key_bytes
from gateway.config import load_gateway_config


class _GatewayGroup(click.Group):
    """Commands from heavier modules (sensors: rich; enroll, doctor: the CA code) are mounted
    the first time a name is not found or the list is asked for, so ``gateway run`` on a small
    Pi does not import them."""

    _mounted = False

    def _mount_all(self) -> None:
        if not self._mounted:
            self._mounted = True
            _mount_sensor_commands()
            _mount_enrollment_commands()

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands:
            self._mount_all()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._mount_all()
        return super().list_commands(ctx)


@click.group("gateway", cls=_GatewayGroup)
def gateway_group() -> None:
    """Field gateway: create its key, run it, check it."""


def _mount_sensor_commands() -> None:
    from gateway.sensors_cli import calibrate_command, sensors_group

    gateway_group.add_command(sensors_group)
    gateway_group.add_command(calibrate_command)


@gateway_group.command("init")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    default=None,
    help="gateway TOML; its key_file is where the key goes",
)
@click.option(
    "--key",
    "key_path",
    type=click.Path(path_type=Path),
    default=None,
    help="write the key here instead of the config's key_file",
)
def init_command(config_path: Path | None, key_path: Path | None) -> None:
    """Generate this gateway's Ed25519 key ON THIS DEVICE and print what to register."""
    farm = field = ""
    try:
        if config_path is not None or key_path is None:
            config = load_gateway_config(config_path)
            farm, field = config.farm, config.field
        path = key_path or config.key_file
        key = create_key_file(path)
    except (ConfigError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    pub = public_key_bytes(key)
    gw = gateway_id_for(pub)
    click.echo(f"key written to {path} (mode 600; it never leaves this device)")
    click.echo(f"gateway id:  {gw}")
    click.echo(f"public key:  {pub.hex()}")
    click.echo("next: `fieldproof gateway enroll` (signed request for the operator), or have")
    click.echo("the operator register it on the collector (fill in the farm and field):")
    click.echo(
        "  fieldproof collector devices add --config /etc/fieldproof/collector.toml "
        f"--id {gw} --public-key {pub.hex()} --farm {shlex.quote(farm or '<farm>')} "
        f"--field {shlex.quote(field or '<field>')}"
    )


@gateway_group.command("run")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--duration", type=float, default=None, help="stop after this many seconds")
def run_command(config_path: Path, duration: float | None) -> None:
    """Sample, sign, spool and publish until stopped (SIGTERM/Ctrl-C drain in-flight messages)."""
    from gateway.agent import GatewayAgent
    from gateway.spool import SpoolError

    try:
        config = load_gateway_config(config_path)
        agent = GatewayAgent(config)
    except (ConfigError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    except SpoolError as exc:  # e.g. a new spool on a full disk: nothing to run with
        raise click.ClickException(
            f"{exc}; free space there (df -h {exc.path.parent}) and start again"
        ) from None

    def _stop(signum: int, frame: Any) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` prints every thread's stack
    agent.run(duration)
    sys.exit(0)


def _mount_enrollment_commands() -> None:
    from gateway.enroll import mount

    mount(gateway_group)
