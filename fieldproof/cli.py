"""The ``fieldproof`` command: one entry point, a subcommand group per user.

Each group is imported only when it is used: ``fieldproof gateway run`` on a Pi must not load
the collector, the anchoring clients and the demo (rich, httpx, pygments…), which cost it about
5 MiB of its memory for nothing. ``fieldproof --help`` still lists every group (it imports
them all to show their help lines)."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import sys

import click

from fieldproof import __version__
from fieldproof.errors import FieldproofError
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
@click.pass_context
def cli(ctx: click.Context, log_level: str, log_format: str) -> None:
    """fieldproof: trustworthy farm sensor data, from the probe to the inspector."""
    setup_logging(log_level, log_format)
    command = ctx.invoked_subcommand or ""
    extra = EXTRAS.get(command)
    if extra is not None and not ctx.resilient_parsing:
        missing = missing_packages(extra)
        if missing:
            raise SystemExit(
                f"fieldproof {command}: this install lacks {', '.join(missing)}; install the "
                f"{extra!r} role: pip install 'fieldproof[{extra}]'"
            )


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


#: one requirement of our own metadata that an extra brings: name, [extras], the extra's name
_EXTRA_REQUIREMENT = re.compile(
    r'^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[([^\]]*)\])?[^;]*;\s*extra\s*==\s*"([^"]+)"\s*$'
)


def missing_packages(extra: str) -> list[str]:
    """The distributions ``extra`` needs that this install lacks, read from fieldproof's own
    metadata (so the list is pyproject.toml's, nested extras included). A command checks its
    role up front: a module it imports late (a chain client at the first anchor) would
    otherwise fail mid-run. Empty when fieldproof runs from a tree without metadata."""
    try:
        requires = importlib.metadata.requires("fieldproof") or []
    except importlib.metadata.PackageNotFoundError:
        return []
    wanted: list[str] = []
    seen: set[str] = set()
    todo = [extra]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for requirement in requires:
            m = _EXTRA_REQUIREMENT.match(requirement)
            if m is None or m.group(3) != current:
                continue
            if m.group(1).lower() == "fieldproof":
                todo.extend(x.strip() for x in (m.group(2) or "").split(",") if x.strip())
            else:
                wanted.append(m.group(1))
    missing = []
    for name in dict.fromkeys(wanted):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


ROOMS = frozenset({"fieldproof", "gateway", "collector", "anchor", "inspector", "demo"})


def main() -> None:
    try:
        cli()
    except FieldproofError as exc:
        # every error of ours says what, where and what to do: that, not a traceback, is what
        # the user needs when a command does not catch it itself (control characters escaped:
        # the text may quote a file or a network answer)
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        text = "".join(c if c in "\n\t" or c.isprintable() else ascii(c)[1:-1] for c in str(exc))
        raise SystemExit(f"fieldproof {command}: {text}") from None
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
