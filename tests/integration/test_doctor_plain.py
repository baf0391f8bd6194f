"""Issue 16, finding 1: the doctor judges a gateway by its own config. A gateway whose config
has no [mqtt.tls] (the demo's, a lab's) is delivering through a real Mosquitto to a real
collector: the doctor must say it works (with a warning about TLS), check the broker anyway,
and never call it not ready."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.local_status import read_local_status
from tests.support.stack import PROJECT_ROOT, Stack, started_stack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with started_stack(tmp_path) as s:
        yield s


def doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fieldproof", "gateway", "doctor", "--config", str(config)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_delivering_gateway_without_tls_is_working(stack: Stack) -> None:
    g = stack.add_gateway(interval=0.2)
    stack.start_collector()
    stack.start_gateway(g)
    wait_until(lambda: stack.accepted_readings() > 10, 60, "readings to be accepted")

    def connected() -> bool:
        local = read_local_status(g.config_path.parent)
        return local is not None and local.connected

    wait_until(connected, 30, "the agent's local status to say connected")
    running = doctor(g.config_path)
    out = " ".join(running.stdout.split())  # the report wraps at 60 columns
    assert running.returncode == 0, out + running.stderr
    assert "NOT READY" not in out and "WORKING" in out, out
    assert "WARN tls: connects without TLS" in out, out
    assert "OK broker:" in out and "running service is connected" in out, out
    assert "FAIL" not in out, out
    assert "OK delivery:" in out and "confirmed" in out.split("delivery:", 1)[1][:60], out

    stack.stop_gateways()  # the agent says "offline" as it stops
    stopped = doctor(g.config_path)
    out = " ".join(stopped.stdout.split())
    assert stopped.returncode == 0, out + stopped.stderr
    assert "OK broker:" in out and "MQTT login (no TLS) accepted" in out, out
    assert "OFFLINE" in out and "NOT READY" not in out, out
