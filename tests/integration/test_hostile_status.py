"""Issue 13, finding 1, performed on the real parts: a client publishes poisoned retained status
messages (wrong types, 1e400, 2000-deep nesting, oversized, control characters) on the status
topics of gateways that are delivering, through a real Mosquitto, to a real collector process
writing to a real InfluxDB. The collector must stay up (also across a restart, when the broker
hands it the poisoned retained messages again), store every reading once, and count each
ignored status by reason in its ``status_ignored`` series."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from fieldproof.services import Mosquitto
from tests.support.stack import PROJECT_ROOT, Stack, started_stack, wait_until

pytestmark = pytest.mark.integration

#: (payload, the reason the collector must count it under)
POISON: list[tuple[bytes, str]] = [
    (b'{"online": true, "spool_depth": []}', "bad_field"),
    (b'{"online": true, "uptime_s": {}}', "bad_field"),
    (b'{"online": true, "uptime_s": 1e400}', "bad_field"),
    (b'{"online": true, "version": "\\u001b]0;owned\\u0007"}', "bad_field"),
    (b"[" * 2000, "invalid_json"),
    (b"\xff" * 10, "invalid_json"),
    (b'{"online": true, "x": "' + b"A" * 20_000 + b'"}', "too_large"),
]


def attacker(port: int) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, "attacker", protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish_all(client: paho.Client, topic: str, payloads: list[bytes]) -> None:
    for payload in payloads:
        client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)


def ignored_totals(stack: Stack, since_ns: int = 0) -> dict[str, int]:
    """The newest ``status_ignored`` totals the collector wrote (each run counts since its
    start), among the points written at or after ``since_ns`` (ns since the epoch)."""
    r = httpx.get(
        f"{stack.influx.url}/query",
        params={
            "db": stack.database,
            "q": f'SELECT last("total") FROM status_ignored WHERE time >= {since_ns} '
            "GROUP BY reason",
        },
        timeout=10,
    )
    r.raise_for_status()
    return {
        s["tags"]["reason"]: int(s["values"][0][1])
        for s in r.json()["results"][0].get("series", [])
    }


def _stopped(pid: int) -> bool:
    """The process is stopped (SIGSTOP took effect): state T in /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with started_stack(tmp_path) as s:
        yield s


def test_poisoned_status_neither_stops_nor_stalls_the_collector(stack: Stack) -> None:
    honest = [stack.add_gateway(interval=0.2) for _ in range(2)]
    stack.start_collector()
    for g in honest:
        stack.start_gateway(g)
    wait_until(lambda: stack.accepted_readings() > 20, 60, "readings to flow")

    bad = attacker(stack.broker.port)
    try:
        payloads = [p for p, _ in POISON]
        for g in honest:
            publish_all(bad, f"fieldproof/v1/{g.gateway_id}/status", payloads)
        # a well-formed status for a gateway nobody registered
        publish_all(bad, "fieldproof/v1/gw-00000000deadbeef/status", [b'{"online": true}'])
        want = Counter(reason for _, reason in POISON for _ in honest)
        want["unknown_gateway"] += 1
        wait_until(
            lambda: ignored_totals(stack) == want,
            30,
            f"status_ignored to count {dict(want)}, has {ignored_totals(stack)}",
        )
        assert stack.collector is not None and stack.collector.poll() is None
        before = stack.accepted_readings()
        wait_until(lambda: stack.accepted_readings() > before + 10, 30, "readings to keep flowing")

        # The crash loop of the finding: at every start the broker hands the collector the
        # retained statuses again. Leave a poisoned one retained on each topic, restart. The
        # gateways are paused meanwhile: a status of their own (every 5 s) would replace the
        # poison before the restarted collector subscribes.
        stack.stop_collector()
        paused = [g.proc for g in honest if g.proc is not None]
        for proc in paused:
            proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: all(_stopped(p.pid) for p in paused), 30, "gateways paused")
            for g in honest:
                publish_all(bad, f"fieldproof/v1/{g.gateway_id}/status", [b"[" * 2000])
            # only the restarted collector's points: the first run's totals are higher already
            restarted_ns = time.time_ns()
            stack.start_collector()
            retained = Counter({"invalid_json": len(honest), "unknown_gateway": 1})
            wait_until(
                lambda: all(
                    ignored_totals(stack, restarted_ns).get(k, 0) >= n for k, n in retained.items()
                ),
                30,
                f"the restarted collector to count the retained poison {dict(retained)}",
            )
        finally:
            for proc in paused:
                proc.send_signal(signal.SIGCONT)
        before = stack.accepted_readings()
        wait_until(lambda: stack.accepted_readings() > before + 10, 30, "readings after restart")
    finally:
        bad.loop_stop()
        bad.disconnect()

    stack.stop_gateways()
    stack.wait_caught_up()
    assert stack.collector is not None and stack.collector.poll() is None
    published = stack.published()
    assert stack.stored() == published and all(published.values())
    log = stack.log("collector.log")
    assert "Traceback" not in log
    assert re.search(r"ignored \d+ status message\(s\) from gw-\w+ as invalid_json", log), log


def test_demo_passes_while_a_client_poisons_the_gateways_status(tmp_path: Path) -> None:
    """The issue's contract: ``fieldproof demo --mqtt-port P`` exits 0 with every reading
    stored while another client keeps publishing poisoned retained status messages on every
    gateway status topic it sees."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    stop = threading.Event()
    seen: set[str] = set()
    poisoned = Counter[str]()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        if not msg.topic.startswith("fieldproof/v1/_collector/"):
            seen.add(msg.topic)

    bad = attacker(broker.port)
    bad.on_message = on_message
    bad.subscribe("fieldproof/v1/+/status", qos=1)

    def poison() -> None:
        i = 0
        while not stop.wait(0.2):
            for topic in list(seen):
                payload = POISON[i % len(POISON)][0]
                bad.publish(topic, payload, qos=1, retain=True)
                poisoned[topic] += 1
            i += 1

    thread = threading.Thread(target=poison, daemon=True)
    thread.start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "fieldproof", "demo", "--mqtt-port", str(broker.port),
             "--chain", "none", "--gateways", "2", "--duration", "8", "--interval", "0.5",
             "--workdir", str(tmp_path / "demo"), "--report-dir", str(tmp_path / "reports")],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join(5)
        bad.loop_stop()
        bad.disconnect()
        broker.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(poisoned) == 2 and min(poisoned.values()) > 5, poisoned  # the attack ran
    last = proc.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\w+)=(\d+)", last))
    assert last.startswith("demo OK") and counts["missing"] == "0", last
    assert int(counts["published"]) > 0 and counts["published"] == counts["stored"]
