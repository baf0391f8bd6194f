"""Issue 16, finding 5: the operator can keep the demo's stack to try things. With
``--keep-running`` the demo checks everything as usual, then keeps the broker and InfluxDB
running, prints where they are and the configs to use — and those printed commands work —
until it is stopped."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.stack import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_keep_running_prints_a_stack_that_works(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fieldproof", "demo", "--chain", "none", "--gateways", "1",
         "--duration", "3", "--interval", "0.5", "--workdir", str(tmp_path / "w"),
         "--report-dir", str(tmp_path / "r"), "--keep-running"],
        cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert proc.stderr is not None
    printed: list[str] = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            printed.append(line.rstrip("\n"))
            if line.strip().startswith("reports"):
                break
        text = "\n".join(printed)
        assert "kept running; Ctrl-C stops everything" in text, text
        port = int(re.search(r"MQTT broker\s+127\.0\.0\.1:(\d+)", text).group(1))  # type: ignore[union-attr]
        influx = re.search(r"InfluxDB\s+(http://\S+)", text).group(1)  # type: ignore[union-attr]
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the broker still answers
        assert httpx.get(f"{influx}/ping", timeout=5).status_code == 204
        status_cmd = next(x for x in printed if "fieldproof collector status --config" in x)
        args = status_cmd.split()
        status = subprocess.run([sys.executable, "-m", *args], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert "accepted:" in status.stdout and "collector: NOT running" in status.stdout
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert out.strip().splitlines()[-1].startswith("demo OK")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # stopped
