"""``fieldproof collector quarantine`` shows text that hostile messages chose (topic, detail):
terminal escape sequences in it must reach the operator's terminal escaped, never raw, and
rich markup in it must be shown as written, never rendered (issue 13, Low)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from collector.store import CollectorStore, QuarantineRow
from fieldproof.cli import cli
from fieldproof.config import load_collector_config
from fieldproof.datadir import open_db

#: clear screen, move home, and an OSC 8 hyperlink: what an attacker would send a terminal
ESC_SEQUENCES = "\x1b[2J\x1b[H\x1b]8;;http://evil.example/\x07click\x1b]8;;\x07"


def test_quarantine_listing_escapes_terminal_sequences(tmp_path: Path) -> None:
    cfg_file = tmp_path / "collector.toml"
    cfg_file.write_text(f'data_dir = "{tmp_path / "c"}"\n')
    cfg = load_collector_config(cfg_file)
    cfg.data_dir.mkdir(parents=True)
    store = CollectorStore(open_db(cfg.db_path))
    hostile_topic = f"fieldproof/v1/{ESC_SEQUENCES}/readings"
    store.commit(
        [],
        [
            QuarantineRow(hostile_topic, None, "bad_topic", f"detail {ESC_SEQUENCES}", b"\x1b[2J"),
            QuarantineRow("fieldproof/v1/gw-00/readings", None, "malformed", "[red]x[/red]\r", b""),
        ],
        {"quarantined:bad_topic": 1, "quarantined:malformed": 1},
    )
    store.db.close()

    # wide enough that rich does not wrap the cells: the escaped text is then one run
    result = CliRunner(env={"COLUMNS": "400"}).invoke(
        cli, ["collector", "quarantine", "--config", str(cfg_file)]
    )
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\r" not in result.output.replace("\r\n", "\n")
    assert "\\x1b[2J\\x1b[H\\x1b]8;;http://evil.example/\\x07click" in result.output
    assert "[red]x[/red]\\r" in result.output  # markup shown as text, the CR escaped
    assert "bad_topic: 1 in total" in result.output
