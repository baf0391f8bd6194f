"""Helpers for the verifier tests on a real run (collector process, broker, InfluxDB)."""

from __future__ import annotations

import re
from pathlib import Path

from anchor.evidence import EvidenceLog
from fieldproof.datadir import open_db
from fieldproof.formats.checkpoint import Checkpoint


def latest_checkpoint(db_path: Path, origin: str) -> tuple[Checkpoint, bytes]:
    db = open_db(db_path)
    try:
        got = EvidenceLog(db, origin, None).latest_checkpoint()
    finally:
        db.close()
    assert got is not None
    cp, note = got
    assert isinstance(cp, Checkpoint)
    return cp, note


def checkpoint_often(path: Path) -> None:
    """Let the collector sign a checkpoint every half second (the demo config may already
    have a [log] table)."""
    text = path.read_text()
    if re.search(r"^checkpoint_interval_s\s*=.*$", text, re.M):
        text = re.sub(
            r"^checkpoint_interval_s\s*=.*$", "checkpoint_interval_s = 0.5", text, flags=re.M
        )
    elif re.search(r"^\[log\]\s*$", text, re.M):
        text = re.sub(
            r"^\[log\]\s*$", "[log]\ncheckpoint_interval_s = 0.5", text, count=1, flags=re.M
        )
    else:
        text += "\n[log]\ncheckpoint_interval_s = 0.5\n"
    path.write_text(text)
