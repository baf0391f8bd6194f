"""The hostile-input rig: a real SQLite store, evidence log and registry in front of a real
InfluxDB 1.x."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.evidence import EvidenceLog
from collector.influx import V1Writer
from collector.ingest import (
    QUANTITY_RE,
    QUARANTINE_REASONS,
    RESERVED_MEASUREMENTS,
    BatchResult,
    Incoming,
    Ingestor,
    Rejected,
    Verified,
)
from collector.registry import Registry
from collector.store import CollectorStore
from fieldproof import wire
from fieldproof.config import InfluxConfig
from fieldproof.datadir import open_db
from fieldproof.formats import merkle
from fieldproof.services import InfluxDB


def key_for(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(name.encode()).digest())


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    server = InfluxDB(tmp_path_factory.mktemp("influxdb"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Rig:
    """A collector's message path without MQTT: store, log, registry, real InfluxDB."""

    def __init__(self, workdir: Path, server: InfluxDB, quarantine_max_rows: int = 100_000):
        self.server = server
        self.database = f"hostile_{uuid.uuid4().hex[:12]}"
        self.db = open_db(workdir / "collector.sqlite")
        self.evidence = EvidenceLog.open(self.db, ORIGIN, workdir / "log.key")
        self.registry = Registry(self.db, self.evidence)
        self.store = CollectorStore(self.db, self.evidence, quarantine_max_rows)
        self.writer = V1Writer(InfluxConfig(url=server.url, database=self.database))
        self.ingestor = Ingestor(self.store, self.registry, self.writer)
        self.keys: dict[str, Ed25519PrivateKey] = {}
        self.good = self.enroll("good")
        self.victim = self.enroll("victim")
        self.revoked = self.enroll("revoked")
        self.registry.revoke(self.revoked)
        self.next_seq: Counter[str] = Counter()
        self.good_sent: list[tuple[str, int]] = []
        self.quarantined: Counter[str] = Counter()
        self.accepted = 0
        self.t0 = time.time() - 86_400

    def enroll(self, name: str) -> str:
        key = key_for(name)
        pub = wire.public_key_bytes(key)
        gw = wire.gateway_id_for(pub)
        self.registry.add(gw, pub, "hostile-farm", "f1")
        self.keys[gw] = key
        return gw

    @staticmethod
    def topic(gw: str, kind: str = "readings") -> str:
        return f"{PREFIX}/{gw}/{kind}"

    def signed(self, gw: str, payload: bytes, key: Ed25519PrivateKey | None = None) -> bytes:
        return wire.sign1(payload, key or self.keys[gw], gw.encode())

    def message(self, gw: str, seq: int | None = None, n: int = 1, unit: str = "/") -> bytes:
        if seq is None:
            self.next_seq[gw] += 1
            seq = self.next_seq[gw]
        readings = tuple(
            wire.Reading(f"s{i}", "soil_moisture", unit, 0.25, self.t0 + seq) for i in range(n)
        )
        return wire.encode_message(wire.Payload(gw, seq, 1, readings), self.keys[gw])

    def message_with(self, gw: str, quantity: str = "soil_moisture", n: int = 1) -> bytes:
        self.next_seq[gw] += 1
        readings = tuple(wire.Reading(f"s{i}", quantity, "/", 0.5, 1.7e9) for i in range(n))
        return wire.encode_message(wire.Payload(gw, self.next_seq[gw], 1, readings), self.keys[gw])

    def good_message(self) -> Incoming:
        self.next_seq[self.good] += 1
        seq = self.next_seq[self.good]
        self.good_sent.append((self.good, seq))
        return Incoming(self.topic(self.good), self.message(self.good, seq))

    def process(self, batch: list[Incoming]) -> BatchResult:
        """Process and check the per-batch invariants; keeps running totals."""
        result = self.ingestor.process(batch)
        assert result.accepted + sum(result.quarantined.values()) == len(batch)
        assert set(result.quarantined) <= set(QUARANTINE_REASONS)
        self.quarantined.update(result.quarantined)
        self.accepted += result.accepted
        return result

    def hostile_then_good(self, hostile: Incoming) -> BatchResult:
        """One hostile message and one good one in the same batch: the hostile one must be
        decided (never raise), and the good one made durable all the same."""
        outcome = self.ingestor.check(hostile)
        assert isinstance(outcome, Verified | Rejected)
        if isinstance(outcome, Rejected):
            assert outcome.reason in QUARANTINE_REASONS
        good = self.good_message()
        result = self.process([hostile, good])
        assert self.good_sent[-1] in self.store.digests([self.good_sent[-1]])
        if isinstance(outcome, Rejected):
            assert result.quarantined[outcome.reason] >= 1
        return result

    # ---------------------------------------------------------------- end-of-test checks

    def query(self, q: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.server.url}/query", params={"db": self.database, "q": q}, timeout=30)
        r.raise_for_status()
        series: list[dict[str, Any]] = r.json()["results"][0].get("series", [])
        return series

    def check_influx_clean(self) -> None:
        """Every series is a reading measurement tagged with a registered, active gateway."""
        allowed_gateways = {self.good, self.victim}
        for series in self.query("SHOW SERIES"):
            for (key,) in series["values"]:
                measurement, *tag_parts = UNESCAPED_COMMA.split(key)
                tags = dict(UNESCAPED_EQUALS.split(t, maxsplit=1) for t in tag_parts)
                assert QUANTITY_RE.match(measurement), f"foreign measurement: {key!r}"
                assert measurement not in RESERVED_MEASUREMENTS, f"reserved measurement: {key!r}"
                assert tags.get("gateway") in allowed_gateways, f"untagged/forged series: {key!r}"
        good_points = sum(
            int(s["values"][0][1])
            for s in self.query(
                f'SELECT count("seq") FROM "soil_moisture" WHERE "gateway" = \'{self.good}\''
            )
        )
        assert good_points == len(self.good_sent)

    def check_counters_and_log(self) -> None:
        counts = self.store.counters()
        for reason, n in self.quarantined.items():
            assert counts.get(f"quarantined:{reason}", 0) == n, reason
        messages, _ = self.store.accepted_count()
        assert messages == self.accepted == counts.get("accepted", 0)
        log = self.evidence.log
        registry_events = 4  # three enrollments and one revocation
        seals = len(self.evidence.checkpoints())  # every checkpoint ends with its seal
        assert log.size() == messages + registry_events + seals
        entries = log.entries(0, log.size())
        assert log.root() == merkle.root_from_leaves(entries)

    def close(self) -> None:
        self.writer.close()
        self.db.close()


ORIGIN = "fieldproof.test/log/hostile"


PREFIX = "fieldproof/v1"


UNESCAPED_COMMA = re.compile(r"(?<!\\),")


UNESCAPED_EQUALS = re.compile(r"(?<!\\)=")
