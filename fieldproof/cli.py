"""The ``fieldproof`` command: one entry point, a subcommand group per user."""

from __future__ import annotations

import click

from anchor.cli import anchor_group
from anchor.inspect_cli import export_command, verify_command
from collector.cli import collector_group
from fieldproof import __version__
from fieldproof.logs import setup_logging
from gateway.cli import gateway_group


@click.group()
@click.version_option(__version__)
@click.option(
    "--log-level",
    default="info",
    type=click.Choice(["debug", "info", "warning", "error"]),
    show_default=True,
)
@click.option(
    "--log-format", default="logfmt", type=click.Choice(["logfmt", "json"]), show_default=True
)
def cli(log_level: str, log_format: str) -> None:
    """fieldproof: trustworthy farm sensor data, from the probe to the inspector."""
    setup_logging(log_level, log_format)


cli.add_command(gateway_group)
cli.add_command(collector_group)
cli.add_command(anchor_group)
cli.add_command(export_command)
cli.add_command(verify_command)


def _add_demo() -> None:
    from fieldproof.demo import demo_command

    cli.add_command(demo_command)


_add_demo()


def main() -> None:
    cli()
