"""A real fieldproof stack for integration tests: Mosquitto, InfluxDB, a collector process and
gateway processes, each started and killed the way an operator or a power cut would."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from collector.cli_common import open_registry
from collector.store import CollectorStore
from demo import (
    DemoGateway,
    influx_counts,
    spool_counts,
    write_collector_config,
    write_gateway,
)
from fieldproof.config import load_collector_config
from fieldproof.datadir import open_db
from fieldproof.keys import load_key_file
from fieldproof.mqtt import wait_for_retained
from fieldproof.services import InfluxDB, Mosquitto
from fieldproof.wire import public_key_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, step: float = 0.1) -> None:
    """Poll until ``predicate`` holds; fail the test with ``what`` if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


def spooled_seqs(spools: Iterable[tuple[str, Path]]) -> dict[str, int]:
    """The last seq each ``(gateway id, spool path)`` has spooled so far (its next_seq commits
    with the message); a spool not created yet is left out."""
    out: dict[str, int] = {}
    for gateway, path in spools:
        if path.exists():
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                row = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
            finally:
                db.close()
            out[gateway] = int(row[0]) - 1 if row else 0
    return out


def holds_up_to(db_path: Path, seqs: dict[str, int]) -> bool:
    """The collector database at ``db_path`` holds every seq 1..n of each gateway in ``seqs``
    (a fixed target, so it can be reached while the gateways keep sampling)."""
    store = CollectorStore(open_db(db_path))
    try:
        for gateway, n in seqs.items():
            row = store.db.execute(
                "SELECT count(*) FROM received WHERE gateway = ? AND seq <= ?", (gateway, n)
            ).fetchone()
            if int(row[0]) < n:
                return False
        return True
    finally:
        store.db.close()


def wait_holds_spooled(
    spools: Iterable[tuple[str, Path]], db_path: Path, timeout: float, log: Callable[[], str]
) -> None:
    """With the gateways still running, wait until the collector holds every message they have
    spooled so far. The target is fixed when this is called (gateways keep sampling, so
    "everything spooled" is a moving target a busy machine may never meet), and it is met
    only by delivery: messages the broker dropped come back after the gateway's confirm
    timeout, which a gateway stopped too early never reaches (it keeps them spooled)."""
    target = spooled_seqs(spools)
    try:
        wait_until(
            lambda: holds_up_to(db_path, target),
            timeout,
            f"the collector to hold every seq up to {target} spooled so far (a dropped message "
            "is resent after the gateway's confirm timeout)",
            step=0.2,
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\ncollector log:\n{log()[-1500:]}") from None


def spawn(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """``python -m fieldproof args`` from the project root, unbuffered, its output appended to
    ``log_path``: what the rigs start their collector and gateway processes with."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "fieldproof", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
        )


def terminate(procs: Iterable[subprocess.Popen[bytes] | None], timeout: float) -> None:
    """SIGTERM every running process first, so they shut down (drain spools) side by side, then
    wait up to ``timeout`` for each and kill one that does not exit."""
    running = [p for p in procs if p is not None and p.poll() is None]
    for p in running:
        p.send_signal(signal.SIGTERM)
    for p in running:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class Stack:
    workdir: Path
    broker: Mosquitto
    influx: InfluxDB
    collector_config: Path = field(init=False)
    collector: subprocess.Popen[bytes] | None = None
    gateways: list[DemoGateway] = field(default_factory=list)
    database: str = "fieldproof"

    def __post_init__(self) -> None:
        self.collector_config = write_collector_config(
            self.workdir, "127.0.0.1", self.broker.port, self.influx.url, self.database
        )
        self.db_path = self.collector_config.parent / "collector.sqlite"
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)

    # ---------------------------------------------------------------- processes

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        return spawn(args, self.logs / log_name)

    def start_collector(self, wait: bool = True) -> None:
        self.collector = self._spawn(
            ["collector", "run", "--config", str(self.collector_config)], "collector.log"
        )
        if wait:
            ok = wait_for_retained(
                "127.0.0.1",
                self.broker.port,
                "fieldproof/v1/_collector/demo-collector/status",
                b'"online": true',
                60,
            )
            assert ok, f"collector did not subscribe:\n{self.log('collector.log')}"

    def kill_collector(self) -> None:
        assert self.collector is not None
        self.collector.send_signal(signal.SIGKILL)
        self.collector.wait()
        self.collector = None

    def stop_collector(self) -> None:
        terminate([self.collector], 30)
        self.collector = None

    def add_gateway(
        self,
        interval: float = 0.2,
        farm: str = "test-farm",
        field_: str = "f1",
        register: bool = True,
    ) -> DemoGateway:
        g = write_gateway(
            self.workdir, len(self.gateways), self.broker.port, interval, farm, field_
        )
        if register:
            pub = public_key_bytes(load_key_file(g.config_path.parent / "gateway.key"))
            registry = open_registry(load_collector_config(self.collector_config))
            registry.add(g.gateway_id, pub, farm, field_)
            registry.db.close()
        self.gateways.append(g)
        return g

    def start_gateway(self, g: DemoGateway) -> None:
        g.proc = self._spawn(
            ["gateway", "run", "--config", str(g.config_path)], f"{g.gateway_id}.log"
        )

    def stop_gateways(self) -> None:
        terminate([g.proc for g in self.gateways], 40)
        for g in self.gateways:
            g.proc = None

    def shutdown(self) -> None:
        for g in self.gateways:
            if g.proc is not None and g.proc.poll() is None:
                g.proc.kill()
                g.proc.wait()
        if self.collector is not None and self.collector.poll() is None:
            self.collector.kill()
            self.collector.wait()

    # ---------------------------------------------------------------- observations

    def log(self, name: str) -> str:
        path = self.logs / name
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def published(self) -> dict[str, int]:
        """Readings each gateway saw acknowledged (from its spool)."""
        return {g.gateway_id: spool_counts(g.spool_path)[0] for g in self.gateways}

    def still_spooled(self) -> int:
        """Rows still in the spools. A receipted row is deleted with the gateway's next write
        (or at shutdown), so while gateways run this can lag behind; see wait_holds_spooled()."""
        return sum(spool_counts(g.spool_path)[1] for g in self.gateways)

    def spooled_seqs(self) -> dict[str, int]:
        """The last seq each gateway has spooled so far (its next_seq commits with the message)."""
        return spooled_seqs((g.gateway_id, g.spool_path) for g in self.gateways)

    def holds_up_to(self, seqs: dict[str, int]) -> bool:
        """The collector holds every seq 1..n of each gateway in ``seqs`` (a fixed target, so it
        can be reached while the gateways keep sampling)."""
        return holds_up_to(self.db_path, seqs)

    def wait_holds_spooled(self, timeout: float = 120) -> None:
        """Before stopping running gateways whose spools must end up empty: wait until the
        collector holds everything they have spooled so far (see :func:`wait_holds_spooled`),
        so their shutdown drain has only the last moments to deliver."""
        wait_holds_spooled(
            [(g.gateway_id, g.spool_path) for g in self.gateways],
            self.db_path,
            timeout,
            lambda: self.log("collector.log"),
        )

    def accepted_by_gateway(self) -> dict[str, int]:
        """Messages the collector has accepted, per gateway."""
        store = self.store()
        try:
            rows = store.db.execute("SELECT gateway, count(*) FROM received GROUP BY gateway")
            return {str(gw): int(n) for gw, n in rows}
        finally:
            store.db.close()

    def store_counts(self) -> tuple[int, int]:
        store = self.store()
        try:
            return store.accepted_count()
        finally:
            store.db.close()

    def store(self) -> CollectorStore:
        return CollectorStore(open_db(self.db_path))

    def accepted_readings(self) -> int:
        store = self.store()
        try:
            return store.accepted_count()[1]
        finally:
            store.db.close()

    def stored(self) -> dict[str, int]:
        return influx_counts(self.influx.url, self.database)

    def wait_caught_up(self, timeout: float = 60) -> None:
        """Every acknowledged reading verified by the collector."""
        total = sum(self.published().values())
        wait_until(
            lambda: self.accepted_readings() >= total,
            timeout,
            f"collector to accept {total} readings (log: {self.log('collector.log')[-800:]})",
        )


def make_stack(tmp_path: Path) -> Stack:
    broker = Mosquitto(tmp_path / "mosquitto")
    influx = InfluxDB(tmp_path / "influxdb")
    broker.start()
    influx.start()
    return Stack(tmp_path, broker, influx)


@contextlib.contextmanager
def started_stack(tmp_path: Path) -> Iterator[Stack]:
    """A broker and InfluxDB started in ``tmp_path``; every process stopped afterwards."""
    s = make_stack(tmp_path)
    try:
        yield s
    finally:
        s.shutdown()
        s.broker.stop()
        s.influx.stop()


def fill_disk(path: Path) -> None:
    """Write ``path`` until its file system has no byte left (pages first, then bytes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0")
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
