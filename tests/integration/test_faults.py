"""Fault injection over the real stack (gateway processes → Mosquitto → collector process →
InfluxDB 1.x), counting every reading from the sensor to the evidence log.

Faults: the broker killed -9 and restarted under load; the collector killed -9 a dozen times,
at random moments and at exact points of its commit path (after the InfluxDB write, after the
SQLite commit, after the receipts, after the acks); InfluxDB killed -9 for a while; a gateway
killed -9 while it writes its spool; a gateway's disk full (a tiny tmpfs mounted here when
we are root and may mount; otherwise SQLite's max_page_count emulates it, and the test says
which it used); the gateway's clock jumping backwards and forwards (the ``clock=`` hook, and
the whole process's wall clock); a duplicate collector started with the same configuration.

After each, the invariant is checked the same way (``check_invariants``):

* every message a gateway ever spooled (sequence numbers 1..next_seq-1, none dropped) is in the
  collector's evidence log exactly once, and its readings are in InfluxDB exactly once — or it
  is still in a spool that will drain (the tests drain and then require the spools empty);
* the log entries are exactly the ``received`` rows; no sequence gaps; no sequence number
  reused with different content;
* nothing was acknowledged before it was durable: a listener subscribed to every gateway's
  receipts looks each confirmed (gateway, seq) up in the collector's database the moment the
  receipt arrives (``ReceiptAuditor``);
* every checkpoint's signature verifies, its root is the root of the entries it covers, and
  consistency proofs hold between every pair of checkpoints
  (``fieldproof.formats.merkle.verify_consistency`` over ``EvidenceLog.checkpoints()``).

A kill -9 is a process crash: the kernel keeps what was written. A real power cut also loses
the page cache; SQLite's WAL with synchronous=FULL is what covers that, and it cannot be shown
without a fault-injecting file system (not available here).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import gateway.agent
import gateway.spool
from anchor.evidence import EvidenceLog
from collector.registry import Registry
from demo import DemoGateway, write_gateway
from fieldproof import wire
from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats import merkle
from fieldproof.keys import load_key_file
from fieldproof.mqtt import wait_for_retained
from gateway.agent import GatewayAgent
from gateway.config import load_gateway_config
from tests.support.stack import PROJECT_ROOT, Stack, fill_disk, make_stack, wait_until

pytestmark = pytest.mark.integration

PREFIX = "fieldproof/v1"
PRESENCE = f"{PREFIX}/_collector/demo-collector/status"

# ------------------------------------------------------------------------------------------
# the stack, with a few more handles than tests/support/stack.py gives
# ------------------------------------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = make_stack(tmp_path)
    # short, so even the collectors a test kills within a second or two sign checkpoints and
    # check_invariants has consistency proofs between several of them to check
    set_checkpoint_interval(s.collector_config, 0.3)
    try:
        yield s
    finally:
        s.shutdown()
        for proc in EXTRA_PROCS.pop(id(s), []):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        s.broker.stop()
        s.influx.stop()


EXTRA_PROCS: dict[int, list[subprocess.Popen[bytes]]] = {}


def set_checkpoint_interval(config: Path, seconds: float) -> None:
    """Checkpoints every ``seconds``, so every test has several to prove consistent."""
    text = config.read_text()
    if re.search(r"^checkpoint_interval_s\s*=", text, re.M):
        text = re.sub(
            r"^checkpoint_interval_s\s*=.*$", f"checkpoint_interval_s = {seconds}", text, flags=re.M
        )
    elif re.search(r"^\[log\]\s*$", text, re.M):
        text = re.sub(
            r"^\[log\]\s*$", f"[log]\ncheckpoint_interval_s = {seconds}", text, count=1, flags=re.M
        )
    else:
        text += f"\n[log]\ncheckpoint_interval_s = {seconds}\n"
    config.write_text(text)
    assert load_collector_config(config).log.checkpoint_interval_s == seconds


def collector_config(stack: Stack) -> CollectorConfig:
    return load_collector_config(stack.collector_config)


def add_gateway(
    stack: Stack, interval: float, confirm_timeout: float = 2.0, data_dir: Path | None = None
) -> DemoGateway:
    """A registered gateway that resends unconfirmed messages after ``confirm_timeout``."""
    g = write_gateway(
        stack.workdir,
        len(stack.gateways),
        stack.broker.port,
        interval,
        "test-farm",
        "f1",
        confirm_timeout=confirm_timeout,
    )
    if data_dir is not None:
        text = g.config_path.read_text()
        old = f'data_dir = "{g.config_path.parent}"'
        assert old in text
        g.config_path.write_text(text.replace(old, f'data_dir = "{data_dir}"'))
        g = DemoGateway(g.gateway_id, g.config_path, data_dir / "spool.sqlite", g.farm, g.field)
    pub = wire.public_key_bytes(load_key_file(g.config_path.parent / "gateway.key"))
    db = open_db(stack.db_path)
    Registry(db).add(g.gateway_id, pub, "test-farm", "f1")
    db.close()
    stack.gateways.append(g)
    return g


# A collector that kills itself (SIGKILL, no clean-up) the Nth time it passes a given point of
# its commit path. The points, in the order a batch passes them:
#   after_influx   the batch is in InfluxDB, not yet committed to SQLite
#   after_commit   committed (log + dedupe rows), no receipts sent, nothing acked
#   after_receipts receipts handed to paho (maybe not yet on the wire), nothing acked
#   after_ack      PUBACKs handed to paho
CRASH_POINTS = ("after_influx", "after_commit", "after_receipts", "after_ack")
CRASHING_COLLECTOR = r"""
import os, signal, sys
point = os.environ["FP_CRASH_POINT"]
left = [int(os.environ["FP_CRASH_AFTER"])]
def here(name):
    if name == point:
        left[0] -= 1
        if left[0] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
from collector import ingest, service, store
_write = ingest.write_salvaging
def write_salvaging(writer, lines):
    n = _write(writer, lines)
    here("after_influx")
    return n
ingest.write_salvaging = write_salvaging
_commit = store.CollectorStore.commit
def commit(self, *a, **k):
    _commit(self, *a, **k)
    here("after_commit")
store.CollectorStore.commit = commit
_receipts = service.Collector._send_receipts
def send_receipts(self, confirmed):
    _receipts(self, confirmed)
    here("after_receipts")
service.Collector._send_receipts = send_receipts
_ack = service.Collector._ack
def ack(self, items):
    _ack(self, items)
    here("after_ack")
service.Collector._ack = ack
from fieldproof.cli import main
sys.argv = ["fieldproof", "collector", "run", "--config", sys.argv[1]]
main()
"""


def start_collector(
    stack: Stack,
    crash_point: str = "",
    crash_after: int = 1,
    config: Path | None = None,
    log_name: str = "collector.log",
    wait: bool = True,
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    config = config or stack.collector_config
    if crash_point:
        env.update(FP_CRASH_POINT=crash_point, FP_CRASH_AFTER=str(crash_after))
        args = [sys.executable, "-c", CRASHING_COLLECTOR, str(config)]
    else:
        args = [sys.executable, "-m", "fieldproof", "collector", "run", "--config", str(config)]
    with (stack.logs / log_name).open("ab") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT
        )
    if wait:
        deadline = time.monotonic() + 60
        while not wait_for_retained("127.0.0.1", stack.broker.port, PRESENCE, b'"online": true', 1):
            if proc.poll() is not None:
                assert crash_point, f"collector exited:\n{stack.log(log_name)}"
                break  # crashed on purpose before it said so
            assert time.monotonic() < deadline, (
                f"collector did not subscribe:\n{stack.log(log_name)}"
            )
    return proc


def kill9(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


# ------------------------------------------------------------------------------------------
# observers
# ------------------------------------------------------------------------------------------


class ReceiptAuditor:
    """Hears every receipt a collector sends and checks, at that moment, that the collector's
    database already holds each (gateway, seq) it confirms: acknowledged ⇒ durable."""

    def __init__(self, port: int, db_path: Path) -> None:
        self.db_path = db_path
        self.receipts = 0
        self.confirmed = 0
        self.violations: list[str] = []
        self._db: sqlite3.Connection | None = None
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"auditor-{time.time_ns()}",
            protocol=paho.MQTTv5,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "auditor could not subscribe"

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe(f"{PREFIX}/+/receipts", qos=1)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        gw = msg.topic.split("/")[-2]
        try:
            _, seqs = wire.decode_receipt(bytes(msg.payload))
        except wire.MalformedMessage as exc:
            self.violations.append(f"unreadable receipt on {msg.topic}: {exc}")
            return
        if self._db is None:
            self._db = sqlite3.connect(
                f"file:{self.db_path}?mode=ro", uri=True, timeout=30, check_same_thread=False
            )
        found = {
            int(s)
            for (s,) in self._db.execute(
                "SELECT seq FROM received WHERE gateway = ? AND seq IN"
                " (SELECT value FROM json_each(?))",
                (gw, json.dumps(seqs)),
            )
        }
        missing = sorted(set(seqs) - found)
        self.receipts += 1
        self.confirmed += len(seqs)
        if missing:
            self.violations.append(f"{gw}: receipt for {missing[:10]} before they were durable")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        if self._db is not None:
            self._db.close()


def flowing_past(stack: Stack, readings: int) -> Callable[[], bool]:
    return lambda: stack.accepted_readings() > readings


def spool_meta(path: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        meta["depth"] = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
        meta["integrity_ok"] = int(db.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
    finally:
        db.close()
    return meta


def _booted(path: Path, boot: int) -> bool:
    """The gateway has counted this boot (False while its spool is still being created)."""
    try:
        return path.exists() and spool_meta(path)["boot"] == boot
    except (sqlite3.Error, KeyError):
        return False


def _spooled_past(path: Path, next_seq: int) -> bool:
    """The gateway has spooled a message since its next_seq was ``next_seq``."""
    return spool_meta(path)["next_seq"] > next_seq


def drain(stack: Stack, timeout: float = 60.0) -> None:
    """Stop the gateways (each drains on SIGTERM); a spool still holding messages is started
    again until it is empty — "still in a spool that will drain" must actually drain."""
    deadline = time.monotonic() + timeout
    while True:
        stack.stop_gateways()
        left = [
            g for g in stack.gateways if g.spool_path.exists() and spool_meta(g.spool_path)["depth"]
        ]
        if not left:
            return
        assert time.monotonic() < deadline, (
            f"spools did not drain: {[(g.gateway_id, spool_meta(g.spool_path)) for g in left]}"
        )
        for g in left:
            stack.start_gateway(g)
        time.sleep(3)


def log_contents(db_path: Path) -> tuple[Counter[tuple[str, int]], Counter[str], list[bytes]]:
    """(message count per (gateway, seq), readings per gateway, all entries) of a log."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        entries = [bytes(e) for (e,) in db.execute("SELECT entry FROM fp_log_entries ORDER BY idx")]
    finally:
        db.close()
    per_seq: Counter[tuple[str, int]] = Counter()
    readings: Counter[str] = Counter()
    for e in entries:
        if e[:1] != b"\xd2":
            continue  # a registry event
        payload = wire.payload_from_cbor(wire.parse_sign1(e, require_tag=True).payload)
        per_seq[(payload.gateway, payload.seq)] += 1
        readings[payload.gateway] += len(payload.readings)
    return per_seq, readings, entries


def check_log_proofs(config: CollectorConfig) -> int:
    """Checkpoint signatures, roots against the entries, consistency between every pair."""
    db = open_db(config.db_path)
    try:
        evidence = EvidenceLog.open(db, config.log_origin, config.log_key_file)
        checkpoints = evidence.checkpoints()
        size = evidence.log.size()
        entries = evidence.log.entries(0, size)
        assert evidence.log.root() == merkle.root_from_leaves(entries)
        for cp in checkpoints:
            opened = evidence.check_note(cp.note)
            assert (opened.size, opened.root_hash) == (cp.checkpoint.size, cp.checkpoint.root_hash)
            assert cp.checkpoint.root_hash == merkle.root_from_leaves(entries[: cp.checkpoint.size])
        for i, a in enumerate(checkpoints):
            for b in checkpoints[i + 1 :]:
                proof = evidence.log.consistency_proof(a.checkpoint.size, b.checkpoint.size)
                merkle.verify_consistency(
                    a.checkpoint.size,
                    b.checkpoint.size,
                    proof,
                    a.checkpoint.root_hash,
                    b.checkpoint.root_hash,
                )
        return len(checkpoints)
    finally:
        db.close()


def check_invariants(
    stack: Stack, auditor: ReceiptAuditor | None, min_checkpoints: int = 2
) -> dict[str, int]:
    """Every spooled reading in InfluxDB and in the log exactly once (spools drained)."""
    cfg = collector_config(stack)
    spooled_messages = 0
    spooled_readings: Counter[str] = Counter()
    for g in stack.gateways:
        meta = spool_meta(g.spool_path)
        assert meta["integrity_ok"], f"{g.gateway_id}: spool database damaged"
        assert meta["depth"] == 0, f"{g.gateway_id}: {meta['depth']} messages still spooled"
        assert meta["dropped_messages"] == 0
        spooled_messages += meta["next_seq"] - 1
        spooled_readings[g.gateway_id] = meta["confirmed_readings"]
    per_seq, log_readings, _ = log_contents(cfg.db_path)
    twice = {k: n for k, n in per_seq.items() if n > 1}
    assert not twice, f"in the log more than once: {sorted(twice)[:10]}"
    for g in stack.gateways:
        next_seq = spool_meta(g.spool_path)["next_seq"]
        missing = [s for s in range(1, next_seq) if (g.gateway_id, s) not in per_seq]
        assert not missing, f"{g.gateway_id}: spooled but not in the log: {missing[:20]}"
    assert len(per_seq) == spooled_messages
    assert dict(log_readings) == dict(spooled_readings)
    stored = stack.stored()
    expected = {gw: n for gw, n in spooled_readings.items() if n}
    assert stored == expected, "InfluxDB differs from what was spooled"
    store = stack.store()
    try:
        assert store.accepted_count() == (spooled_messages, sum(spooled_readings.values()))
        assert store.gaps() == []
        reused = [r for r in store.quarantine_rows(100_000) if "DIFFERENT content" in r[4]]
        assert not reused, f"a sequence number was reused: {reused[:3]}"
        assert store.quarantine_by_reason().get("seq_conflict", 0) == 0
    finally:
        store.db.close()
    checkpoints = check_log_proofs(cfg)
    assert checkpoints >= min_checkpoints
    if auditor is not None:
        assert not auditor.violations, auditor.violations[:5]
        assert auditor.confirmed > 0
    return {
        "messages": spooled_messages,
        "readings": sum(spooled_readings.values()),
        "checkpoints": checkpoints,
    }


# ------------------------------------------------------------------------------------------
# the faults
# ------------------------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_broker_killed_and_restarted_under_load(stack: Stack) -> None:
    """kill -9 Mosquitto twice under load (it loses everything it had not autosaved) and start
    it again on the same port: the gateways resend what no collector confirmed."""
    proc = start_collector(stack)
    stack.collector = proc
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    try:
        for _ in range(2):
            stack.start_gateway(add_gateway(stack, interval=0.05))
        time.sleep(2)
        for _ in range(2):
            before = stack.accepted_readings()
            stack.broker.kill()
            time.sleep(1.5)
            stack.broker.start()
            t = time.monotonic()
            wait_until(flowing_past(stack, before + 100), 60, "ingest to flow again")
            print(f"flowing again after {time.monotonic() - t:.1f} s")
            time.sleep(1)
        t = time.monotonic()
        drain(stack)
        print(f"drained in {time.monotonic() - t:.1f} s")
        stack.wait_caught_up()
        check_invariants(stack, auditor)
    finally:
        auditor.close()


@pytest.mark.timeout(170)
def test_collector_kill9_a_dozen_times_at_random_points(stack: Stack) -> None:
    """12 crashes of the collector under load: half at a random moment, half at an exact
    point of the commit path, chosen at random. Nothing lost, nothing stored twice."""
    rng = random.Random(20261125)
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    try:
        stack.collector = start_collector(stack)
        for _ in range(2):
            stack.start_gateway(add_gateway(stack, interval=0.04))
        time.sleep(1.0)
        kills: Counter[str] = Counter()
        for i in range(12):
            if i % 2 == 0:
                time.sleep(rng.uniform(0.2, 1.2))
                kill9(stack.collector)
                kills["random moment"] += 1
            else:
                point = rng.choice(CRASH_POINTS)
                kill9(stack.collector)  # the running one, so the crashing one takes over
                stack.collector = start_collector(stack, point, rng.randint(1, 4))
                try:
                    stack.collector.wait(20)
                    kills[point] += 1
                except subprocess.TimeoutExpired:
                    kill9(stack.collector)  # did not reach the point in time
                    kills["random moment"] += 1
            assert stack.collector.poll() is not None
            time.sleep(rng.uniform(0.0, 0.5))
            stack.collector = start_collector(stack)
        assert sum(kills.values()) == 12
        assert sum(kills[p] for p in CRASH_POINTS) >= 3, kills
        drain(stack)
        stack.wait_caught_up()
        check_invariants(stack, auditor)
    finally:
        auditor.close()


@pytest.mark.timeout(120)
def test_influxdb_killed_for_a_while(stack: Stack) -> None:
    """kill -9 InfluxDB for 4 s: the collector holds its acks (and receipts), nothing is
    committed meanwhile, and everything arrives once it is back."""
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    try:
        stack.collector = start_collector(stack)
        stack.start_gateway(add_gateway(stack, interval=0.05))
        wait_until(lambda: stack.accepted_readings() > 0, 60, "first readings accepted")
        stack.influx.kill()
        # The batch already past its InfluxDB write may still commit. The collector's one
        # ingest thread logs "holding acks" at the first failed write, so by then that batch
        # is committed and its receipts are handed to the broker; the auditor has heard them
        # once it counts a confirmation for every message the collector holds.
        wait_until(
            lambda: "holding acks" in stack.log("collector.log"),
            60,
            "the collector to hold acks (log 'holding acks') after InfluxDB was killed",
        )
        before = stack.accepted_readings()
        held = stack.store_counts()[0]
        wait_until(
            lambda: auditor.confirmed >= held,
            30,
            f"the auditor to hear the receipts of the {held} messages committed before the kill",
        )
        confirmed_before = auditor.confirmed
        time.sleep(4)
        assert stack.accepted_readings() == before
        assert auditor.confirmed == confirmed_before  # no receipt while nothing is durable
        stack.influx.start()
        wait_until(lambda: stack.accepted_readings() > before, 60, "ingest to resume")
        time.sleep(1)
        drain(stack)
        stack.wait_caught_up()
        check_invariants(stack, auditor)
    finally:
        auditor.close()


@pytest.mark.timeout(120)
def test_gateway_kill9_while_writing_its_spool(stack: Stack) -> None:
    """A gateway sampling every 10 ms (a spool commit every 10 ms) killed -9 eight times, each
    time after it has booted (so every kill lands while it is writing its spool): the spool
    stays intact, sequence numbers are never reused or skipped, every boot is counted."""
    rng = random.Random(7)
    stack.collector = start_collector(stack)
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    try:
        g = add_gateway(stack, interval=0.01)
        calm = add_gateway(stack, interval=0.1)
        stack.start_gateway(calm)
        for boot in range(1, 9):
            stack.start_gateway(g)
            wait_until(partial(_booted, g.spool_path, boot), 30, f"boot {boot} counted")
            # this boot writing messages (a busy machine starts sampling later), then a kill
            # at a random moment of that writing
            wait_until(
                partial(_spooled_past, g.spool_path, spool_meta(g.spool_path)["next_seq"]),
                30,
                f"boot {boot} to spool a message",
            )
            time.sleep(rng.uniform(0.2, 0.8))
            kill9(g.proc)
            g.proc = None
        meta = spool_meta(g.spool_path)
        assert meta["integrity_ok"]
        assert meta["boot"] == 8
        assert meta["next_seq"] > 100
        drain(stack)
        stack.wait_caught_up()
        check_invariants(stack, auditor)
    finally:
        auditor.close()


@contextlib.contextmanager
def tiny_disk(where: Path, size_kib: int) -> Iterator[tuple[Path, str]]:
    """A real small file system (tmpfs) when we may mount one; else a plain directory, and
    the caller emulates "full" with SQLite's max_page_count."""
    where.mkdir(parents=True, exist_ok=True)
    mounted = False
    may_mount = not os.environ.get("FIELDPROOF_TEST_NO_MOUNT")  # =1 tries the emulation
    if may_mount and os.geteuid() == 0 and shutil.which("mount"):
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        )
        mounted = r.returncode == 0
    try:
        yield where, "tmpfs" if mounted else "max_page_count"
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


# the gateway, with a switch that makes its spool database refuse to grow (SQLITE_FULL), for
# machines where no small file system can be mounted
PAGE_LIMITED_GATEWAY = r"""
import os, sys
from gateway import spool
flag = os.environ["FP_DISK_FULL_FLAG"]
_add = spool.Spool.add
def add(self, build):
    full = os.path.exists(flag)
    pages = self._db.execute("PRAGMA page_count").fetchone()[0]
    self._db.execute(f"PRAGMA max_page_count = {pages if full else 1073741823}")
    return _add(self, build)
spool.Spool.add = add
from fieldproof.cli import main
sys.argv = ["fieldproof", "gateway", "run", "--config", sys.argv[1]]
main()
"""


@pytest.mark.timeout(150)
def test_gateway_disk_full(stack: Stack, tmp_path: Path) -> None:
    """The gateway's disk fills while the collector is away: the agent keeps its readings in
    memory, says so, and when space comes back everything is spooled, sent and stored once."""
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    # SQLite lets the WAL grow to ~4 MiB before it checkpoints: leave room for normal work
    with tiny_disk(tmp_path / "gwdisk", 16 * 1024) as (disk, how):
        try:
            stack.collector = start_collector(stack)
            g = add_gateway(stack, interval=0.02, data_dir=disk)
            flag = tmp_path / "disk-is-full"
            if how == "tmpfs":
                stack.start_gateway(g)
            else:
                env = {**os.environ, "FP_DISK_FULL_FLAG": str(flag), "PYTHONUNBUFFERED": "1"}
                with (stack.logs / f"{g.gateway_id}.log").open("ab") as out:
                    g.proc = subprocess.Popen(
                        [sys.executable, "-c", PAGE_LIMITED_GATEWAY, str(g.config_path)],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=PROJECT_ROOT,
                    )
            # the gateway delivering (its spool created and written) before its disk fills
            wait_until(lambda: stack.accepted_readings() > 0, 60, "the gateway's first readings")
            # the collector goes away, so the spool has to grow
            stack.stop_collector()
            time.sleep(1)
            filler = disk / "filler"
            if how == "tmpfs":
                fill_disk(filler)
            else:
                flag.touch()
            wait_until(
                lambda: "cannot write the spool" in stack.log(f"{g.gateway_id}.log"),
                30,
                f"the gateway to hit the full disk ({how})",
            )
            time.sleep(1.5)  # readings pile up in memory
            assert g.proc is not None and g.proc.poll() is None, "gateway died on a full disk"
            if how == "tmpfs":
                filler.unlink()
            else:
                flag.unlink()
            stack.collector = start_collector(stack)
            time.sleep(2)
            drain(stack)
            stack.wait_caught_up()
            result = check_invariants(stack, auditor)
            print(f"disk full emulated with {how}: {result}")
        finally:
            auditor.close()
            stack.stop_gateways()


class SteppableClock:
    """Wall-clock time plus an offset the test moves, like an NTP step or a bad RTC."""

    def __init__(self) -> None:
        self.offset = 0.0
        self._real = time.time

    def __call__(self) -> float:
        return self._real() + self.offset


def run_agent(agent: GatewayAgent) -> threading.Thread:
    t = threading.Thread(target=agent.run, name=f"agent-{agent.gateway_id}", daemon=True)
    t.start()
    return t


@pytest.mark.timeout(120)
def test_gateway_clock_jumps_back_and_forth(stack: Stack) -> None:
    """Sample times jump a day back, a year ahead, and back to now (the agent's ``clock=``
    hook): every reading is still stored once, under the time the gateway signed."""
    stack.collector = start_collector(stack)
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    g = add_gateway(stack, interval=0.05)
    clock = SteppableClock()
    agent = GatewayAgent(load_gateway_config(g.config_path), clock=clock)
    thread = run_agent(agent)
    try:
        for offset in (0.0, -86_400.0, 365 * 86_400.0, -3600.0, 0.0):
            clock.offset = offset
            time.sleep(1.2)
        agent.stop()
        thread.join(30)
        assert not thread.is_alive()
        drain(stack)
        stack.wait_caught_up()
        check_invariants(stack, auditor)
        # the points carry the signed (jumped) times
        rows = stack.influx.query('SELECT count("value") FROM "air_temperature" WHERE time > now()')
        values = rows[0]["values"] if rows else []
        assert isinstance(values, list) and values and values[0][1] > 0
    finally:
        agent.stop()
        auditor.close()


class SteppedTimeModule(ModuleType):
    """Stands in for the ``time`` module inside the gateway: ``time()`` follows the stepped
    clock, everything else (monotonic, sleep) is the real one — a system clock step."""

    def __init__(self, clock: SteppableClock) -> None:
        super().__init__("time")
        self._clock = clock

    def time(self) -> float:
        return self._clock()

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@pytest.mark.timeout(120)
def test_wall_clock_step_back_does_not_stall_resending(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker loses messages a gateway saw PUBACKed (kill -9 before its autosave) while
    no collector was there to take them; then the gateway's system clock steps back an hour.
    The gateway must still resend them within its confirm timeout, not an hour later."""
    clock = SteppableClock()
    stepped = SteppedTimeModule(clock)
    monkeypatch.setattr(gateway.spool, "time", stepped)
    monkeypatch.setattr(gateway.agent, "time", stepped)
    stack.collector = start_collector(stack)
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    g = add_gateway(stack, interval=0.1, confirm_timeout=2.0)
    agent = GatewayAgent(load_gateway_config(g.config_path), clock=clock)
    thread = run_agent(agent)
    try:
        time.sleep(1.5)
        kill9(stack.collector)  # its Last Will says offline: the gateway waits, not resends
        # published to the broker, queued for the collector's session
        wait_until(lambda: agent.spool.unconfirmed > 0, 30, "messages published, unconfirmed")
        stack.broker.kill()  # ... and lost with the broker
        lost = stack.spooled_seqs()  # every seq the broker may have lost is at most this
        clock.offset = -3600.0  # NTP steps the gateway's clock back an hour
        stack.broker.start()
        stack.collector = start_collector(stack)
        # the lost messages are resent after confirm_timeout (2 s, doubling at most to 8 s)
        # once the collector is back, not an hour later; the gateway samples on meanwhile,
        # so wait for those seqs, not for the spool to empty
        wait_until(lambda: stack.holds_up_to(lost), 60, f"lost messages {lost} to be resent")
        agent.stop()
        thread.join(30)
        drain(stack)
        stack.wait_caught_up()
        check_invariants(stack, auditor, min_checkpoints=1)
    finally:
        agent.stop()
        thread.join(10)
        auditor.close()


@pytest.mark.timeout(150)
def test_duplicate_collector_with_the_same_configuration(stack: Stack) -> None:
    """The same collector started twice (same id, same data directory — systemd and a shell,
    or a restart racing the old process). Two writers would fork the evidence log, so the
    second is refused at once with a message naming the first, and the first carries on:
    nothing lost, nothing stored twice, the one log consistent."""
    auditor = ReceiptAuditor(stack.broker.port, stack.db_path)
    try:
        stack.collector = start_collector(stack)
        for _ in range(2):
            stack.start_gateway(add_gateway(stack, interval=0.04))
        time.sleep(1)
        twin = start_collector(stack, log_name="collector-twin.log", wait=False)
        EXTRA_PROCS.setdefault(id(stack), []).append(twin)
        assert twin.wait(60) == 1, stack.log("collector-twin.log")
        refusal = stack.log("collector-twin.log")
        assert f"pid {stack.collector.pid}" in refusal and "another collector" in refusal
        before = stack.accepted_readings()
        wait_until(flowing_past(stack, before + 100), 60, "the first collector to carry on")
        assert stack.collector.poll() is None, f"collector crashed:\n{stack.log('collector.log')}"
        drain(stack)
        stack.wait_caught_up()
        check_invariants(stack, auditor)
    finally:
        auditor.close()


# A collector with an (injected) bug: anything from one chosen gateway makes the message path
# raise an exception nobody anticipated — the stand-in for the next OverflowError or encoder
# error a fuzzer finds. The design: bad messages are quarantined with a reason, counted, and never
# stop the loop.
BUGGY_COLLECTOR = r"""
import os, sys
from collector import ingest
victim = os.environ["FP_POISON_GATEWAY"]
_check = ingest.Ingestor.check
def check(self, msg):
    if f"/{victim}/" in msg.topic:
        raise ZeroDivisionError("an unanticipated bug in the message path")
    return _check(self, msg)
ingest.Ingestor.check = check
from fieldproof.cli import main
sys.argv = ["fieldproof", "collector", "run", "--config", sys.argv[1]]
main()
"""


@pytest.mark.timeout(90)
def test_one_poisoned_gateway_does_not_stop_the_others(stack: Stack) -> None:
    """One gateway's messages hit a collector bug (an exception the code did not foresee).
    The other gateway's readings must keep arriving; the poisoned messages must end up
    quarantined (counted, with the reason), not block every batch they share."""
    healthy = add_gateway(stack, interval=0.05)
    poisoned = add_gateway(stack, interval=0.05)  # in every batch, like broken firmware
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "FP_POISON_GATEWAY": poisoned.gateway_id}
    with (stack.logs / "collector.log").open("ab") as out:
        stack.collector = subprocess.Popen(
            [sys.executable, "-c", BUGGY_COLLECTOR, str(stack.collector_config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
        )
    assert wait_for_retained("127.0.0.1", stack.broker.port, PRESENCE, b'"online": true', 60)
    stack.start_gateway(healthy)
    stack.start_gateway(poisoned)

    def quarantined() -> int:
        store = stack.store()
        try:
            return sum(store.quarantine_by_reason().values())
        finally:
            store.db.close()

    # the healthy gateway sends ~20 messages a second; blocked, it never gets past 50
    wait_until(
        lambda: stack.accepted_by_gateway().get(healthy.gateway_id, 0) > 50,
        60,
        "the healthy gateway's messages to keep arriving (is it blocked by the poisoned one?)",
    )
    wait_until(
        lambda: quarantined() > 0,
        60,
        "the poisoned messages to be quarantined (neither accepted nor quarantined so far)",
    )
