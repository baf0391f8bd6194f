"""The ``fieldproof`` command: one entry point, a subcommand group per user.

Each group is imported only when it is used: ``fieldproof gateway run`` on a Pi must not load
the collector, the anchoring clients and the demo (rich, httpx, pygments…), which cost it about
5 MiB of its memory for nothing. ``fieldproof --help`` still lists every group (it imports
them all to show their help lines)."""

from __future__ import annotations

import importlib
import sys

import click

from fieldproof import __version__
from fieldproof.logs import setup_logging

#: command name -> (module, attribute)
COMMANDS: dict[str, tuple[str, str]] = {
    "gateway": ("gateway.cli", "gateway_group"),
    "collector": ("collector.cli", "collector_group"),
    "anchor": ("anchor.cli", "anchor_group"),
    "export": ("collector.export_cli", "export_command"),
    "verify": ("inspector.cli", "verify_command"),
    "demo": ("demo", "demo_command"),
    "log": ("inspector.log_cli", "log_group"),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported from :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            module, attribute = COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            if not isinstance(command, click.Command):
                raise TypeError(f"{module}.{attribute} is not a click command")
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
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


#: the extra (pyproject.toml) each command's room needs: what to install when a package is missing
EXTRAS = {
    "gateway": "gateway",
    "collector": "collector",
    "export": "collector",
    "anchor": "anchor",
    "verify": "inspector",
    "demo": "all",
    "log": "inspector",
}


ROOMS = frozenset({"fieldproof", "gateway", "collector", "anchor", "inspector", "demo"})


def main() -> None:
    try:
        cli()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ROOMS:
            raise  # our own code is missing: a broken install, not a role's choice
        # a role's install lacks another role's packages (a gateway has no web3): say which
        # extra brings them, not a traceback
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        extra = EXTRAS.get(command, "all")
        raise SystemExit(
            f"fieldproof {command}: this install lacks the Python package "
            f"{exc.name or exc}; install the {extra!r} role: pip install 'fieldproof[{extra}]'"
        ) from None
