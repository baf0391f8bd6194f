"""``fieldproof anchor …``: the operator's view of anchoring."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from fieldproof.cli_common import config_option, load_config_or_exit

if TYPE_CHECKING:
    from anchor.chain import AnchorRow


@click.group("anchor")
def anchor_group() -> None:
    """Anchor the evidence log's checkpoints on chain."""


@anchor_group.command("run")
@config_option
@click.option("--once", is_flag=True, help="one pass, then exit (for cron or checks)")
def run_command(config_path: Path | None, once: bool) -> None:
    """Anchor the newest checkpoint every [anchor] interval_s, until SIGTERM/Ctrl-C."""
    from anchor.service import AnchorService
    from fieldproof.errors import FieldproofError

    try:
        service = AnchorService(load_config_or_exit(config_path))
    except (FieldproofError, ValueError) as exc:
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
    """Every anchor and its state: pending, included, finalized or failed, and why: how far an
    included anchor is from final, why a pending one waits, why a failed one failed."""
    from anchor.service import anchor_views, node_notes

    config = load_config_or_exit(config_path)
    views = anchor_views(config)
    if as_json:
        click.echo(json.dumps([v.to_dict() for v in views], indent=2))
        return
    for note in node_notes(config):
        click.echo(note.explain())
        if note.paused:
            click.echo("anchoring is PAUSED until the node is synced")
    table = Table("size", "chain", "state", "block", "to final", "tx", "why")
    for v in views:
        table.add_row(
            str(v.tree_size),
            v.chain,
            v.state,
            "" if v.block_number is None else str(v.block_number),
            _to_final(v),
            (v.tx_id or "")[:18] + "…",
            v.detail or v.reason or "",
        )
    Console().print(table)
    if not views:
        if config.anchor.chain == "none":
            click.echo(
                "anchoring is not configured: set [anchor] chain (thor or evm), url and "
                "key_file in the collector's config, then run 'fieldproof anchor run'"
            )
        else:
            click.echo(f"no anchors yet on {config.anchor.chain} (is 'fieldproof anchor run' "
                       "running?)")


def _to_final(v: AnchorRow) -> str:
    """Blocks the head must still grow until the anchor is expected final (Thor, included)."""
    if v.expected_final_at_best is None or v.node_best is None:
        return ""
    left = v.expected_final_at_best - v.node_best
    return f"~{left} blocks" if left > 0 else "overdue"
