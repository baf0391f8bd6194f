"""``fieldproof verify --all-anchors --scan-seconds N`` sets each node's scan time budget
(:attr:`inspector.anchor_scan.ScanRange.max_seconds`), next to ``--scan-blocks``; without it
the budget is the scan's default hour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import inspector.verify
from anchor.chain_reader import DEFAULT_SCAN_SECONDS
from fieldproof.cli import cli
from inspector.anchor_scan import ScanRange


class Seen(Exception):
    """Stops ``verify`` once it has the options it would verify with."""


def options_of(args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    bundle = tmp_path / "b.bundle"
    bundle.write_bytes(b"not read further")
    seen: list[Any] = []

    def capture(data: bytes, **kw: Any) -> Any:
        seen.append(kw["options"])
        raise Seen

    monkeypatch.setattr(inspector.verify, "verify_bundle", capture)
    got = CliRunner().invoke(cli, ["verify", str(bundle), "--node", "http://127.0.0.1:9",
                                   "--chain", "thor", *args])
    if not seen:
        return got
    assert isinstance(got.exception, Seen), got.output
    return seen[0]


def test_scan_seconds_feeds_the_scan_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = options_of(["--all-anchors", "--scan-blocks", "50", "--scan-seconds", "12.5"],
                      tmp_path, monkeypatch)
    assert opts.all_anchors == ScanRange(None, None, 50, 12.5)


def test_the_default_is_the_scans_hour(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opts = options_of(["--all-anchors"], tmp_path, monkeypatch)
    assert opts.all_anchors.max_seconds == DEFAULT_SCAN_SECONDS == 3600.0


def test_a_negative_budget_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = options_of(["--all-anchors", "--scan-seconds", "-1"], tmp_path, monkeypatch)
    assert got.exit_code == 2 and "--scan-seconds" in got.output
