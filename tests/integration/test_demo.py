"""The README's promise: `fieldproof demo` runs the whole path on this machine and exits 0 only
when every published reading is verified, in InfluxDB, in the log, the log is anchored on a
real (anvil) dev chain, and the exported evidence verifies against that chain."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def test_demo_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fieldproof",
            "demo",
            "--gateways",
            "2",
            "--duration",
            "6",
            "--interval",
            "0.5",
            "--workdir",
            str(tmp_path),
            "--report-dir",
            str(tmp_path / "reports"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\w+)=(\d+)", last))
    assert last.startswith("demo OK")
    assert int(counts["published"]) > 0
    assert counts["published"] == counts["verified"] == counts["stored"]
    assert counts["missing"] == "0"
    # every message plus the two enrollments is in the log, and that whole log is anchored
    assert int(counts["log_size"]) == int(counts["messages"]) + 2
    assert counts["anchored_size"] == counts["log_size"]
    # the inspector's side: the farm's bundle verified against the chain, report written
    assert "evidence for north-farm: PASS" in proc.stderr.replace("\n", " ")
    assert (tmp_path / "reports" / "north-farm.fpb").stat().st_size > 0
    assert "PASS" in (tmp_path / "reports" / "north-farm.html").read_text()
