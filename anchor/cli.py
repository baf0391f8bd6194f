"""``fieldproof anchor …``: the operator's view of anchoring."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fieldproof.cli_common import config_option, load_config_or_exit


@click.group("anchor")
def anchor_group() -> None:
    """Anchor the evidence log's checkpoints on chain."""


@anchor_group.command("run")
@config_option
@click.option("--once", is_flag=True, help="one pass, then exit (for cron or checks)")
def run_command(config_path: Path | None, once: bool) -> None:
    """Anchor the newest checkpoint every [anchor] interval_s, until SIGTERM/Ctrl-C."""
    from anchor.anchoring import AnchorError
    from anchor.evm_reader import EvmAnchorError
    from anchor.service import AnchorService, AnchorSetupError

    try:
        service = AnchorService(load_config_or_exit(config_path))
    except (AnchorSetupError, AnchorError, EvmAnchorError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        if once:
            service.step()
        else:
            service.run(stop)
    finally:
        service.close()


@anchor_group.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status_command(config_path: Path | None, as_json: bool) -> None:
    """Every anchor and its state: pending, included, finalized or failed (with the reason)."""
    from anchor.service import anchor_views

    views = anchor_views(load_config_or_exit(config_path))
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in views], indent=2))
        return
    table = Table("size", "chain", "state", "block", "tx", "reason")
    for v in views:
        table.add_row(
            str(v.tree_size),
            v.chain,
            v.state,
            "" if v.block_number is None else str(v.block_number),
            (v.tx_id or "")[:18] + "…",
            v.reason or "",
        )
    Console().print(table)
    if not views:
        click.echo("no anchors yet")
