"""``fieldproof anchor status`` says what is the matter: not configured is not "no anchors"."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from fieldproof.cli import cli


def test_status_without_an_anchor_section_says_it_is_not_configured(tmp_path: Path) -> None:
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "c"}"\n')
    result = CliRunner().invoke(cli, ["anchor", "status", "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert "anchoring is not configured: set [anchor] chain" in result.output
    assert "no anchors yet" not in result.output
