"""Start a device simulator as a separate process on a pseudo-terminal, and stop it again.

The test keeps the slave side of the pty open for the whole test so the master never sees a
hang-up between two opens by the driver, and sets it raw at once so the line discipline does
not echo the simulator's output back to it before the driver has configured the port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tty
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIM_DIR = Path(__file__).resolve().parent


@dataclass
class Sim:
    port: str
    control_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    _slave_fd: int = field(repr=False, default=-1)

    def control(self, **data: Any) -> None:
        """Replace the simulator's instructions (atomically, so it never reads half a file)."""
        tmp = self.control_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.control_path)

    def log(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]


@contextmanager
def run_sim(script: str, tmp: Path, control: dict[str, Any], *extra: str) -> Iterator[Sim]:
    master, slave = os.openpty()
    tty.setraw(slave)
    control_path = tmp / f"{script}.control.json"
    control_path.write_text(json.dumps(control))
    log_path = tmp / f"{script}.log.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SIM_DIR / script),
            "--fd",
            str(master),
            "--control",
            str(control_path),
            "--log",
            str(log_path),
            *extra,
        ],
        pass_fds=(master,),
    )
    os.close(master)
    sim = Sim(os.ttyname(slave), control_path, log_path, proc, slave)
    try:
        yield sim
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(slave)
