"""Pre-signed benchmark traffic: gateway keys derived from a seed, messages signed before any
timed phase (on both cores), saved to a file the load generator reads.

Messages go round-robin over the gateways (message i is gateway ``i % G``, seq ``i // G + 1``),
the way a fleet with evenly spread sampling phases sends. Each carries ``readings`` SenML
records over the five quantities of a field station (two sensors for ten readings), sample time
``t0 + seq * interval`` so no two points of a series share a timestamp in InfluxDB."""

from __future__ import annotations

import contextlib
import hashlib
import pickle
import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.evidence import EvidenceLog
from collector.registry import Registry
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db
from fieldproof.wire import Payload, Reading, encode_message, gateway_id_for, public_key_bytes

QUANTITIES = (
    ("soil_moisture", "/"),
    ("soil_temperature", "Cel"),
    ("air_temperature", "Cel"),
    ("air_humidity", "%RH"),
    ("soil_ec", "S/m"),
)
TOPIC_PREFIX = "fieldproof/v1"


def gateway_key(seed: str, index: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"fieldproof-bench/{seed}/{index}".encode()).digest()
    )


@dataclass
class Workload:
    seed: str
    gateways: list[str]
    public_keys: list[bytes]
    readings_per_message: int
    interval_s: float
    #: (gateway index, seq, signed message) in sending order
    messages: list[tuple[int, int, bytes]]

    @property
    def readings(self) -> int:
        return len(self.messages) * self.readings_per_message

    def topic(self, gateway_index: int) -> str:
        return f"{TOPIC_PREFIX}/{self.gateways[gateway_index]}/readings"

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            pickle.dump(self, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @staticmethod
    def load(path: Path) -> Workload:
        with path.open("rb") as f:
            w = pickle.load(f)
        assert isinstance(w, Workload)
        return w


def _sign_range(
    seed: str, gateways: int, readings: int, interval: float, t0: float, first: int, last: int
) -> list[tuple[int, int, bytes]]:
    keys: dict[int, tuple[Ed25519PrivateKey, str]] = {}
    out = []
    for i in range(first, last):
        g, seq = i % gateways, i // gateways + 1
        if g not in keys:
            k = gateway_key(seed, g)
            keys[g] = (k, gateway_id_for(public_key_bytes(k)))
        key, gw = keys[g]
        t = t0 + seq * interval
        recs = tuple(
            Reading(
                f"s{j // len(QUANTITIES)}",
                QUANTITIES[j % len(QUANTITIES)][0],
                QUANTITIES[j % len(QUANTITIES)][1],
                round(0.2 + 0.001 * ((seq * 7 + j) % 100), 4),
                t,
            )
            for j in range(readings)
        )
        out.append((g, seq, encode_message(Payload(gw, seq, 1, recs), key)))
    return out


def build(
    seed: str,
    gateways: int,
    messages: int,
    readings: int,
    interval: float,
    cache_dir: Path,
    workers: int = 2,
) -> tuple[Workload, Path]:
    """Sign ``messages`` messages, saved in (and reused from) ``cache_dir``; returns the
    workload and the file the load generator reads."""
    path = cache_dir / f"wl-{seed}-g{gateways}-m{messages}-r{readings}-i{interval}.pickle"
    if path.exists():
        return Workload.load(path), path
    # sample times an hour back from now, so every run's points land in one InfluxDB shard
    t0 = round(time.time() - 3600 - (messages // gateways + 1) * interval)
    keys = [gateway_key(seed, g) for g in range(gateways)]
    pubs = [public_key_bytes(k) for k in keys]
    ids = [gateway_id_for(p) for p in pubs]
    step = max(1, -(-messages // (workers * 8)))
    ranges = [(lo, min(messages, lo + step)) for lo in range(0, messages, step)]
    signed: list[tuple[int, int, bytes]] = []
    if workers > 1 and messages > 2000:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            futures = [
                pool.submit(_sign_range, seed, gateways, readings, interval, t0, lo, hi)
                for lo, hi in ranges
            ]
            for f in futures:
                signed.extend(f.result())
    else:
        for lo, hi in ranges:
            signed.extend(_sign_range(seed, gateways, readings, interval, t0, lo, hi))
    w = Workload(seed, ids, pubs, readings, interval, signed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    w.save(path)
    return w, path


def register(config: CollectorConfig, ids: list[str], pubs: list[bytes]) -> None:
    """Enroll every gateway in a collector's registry, with its evidence-log entry, the way
    ``fieldproof collector devices add`` does (fsync off for the bulk load only)."""
    db = open_db(config.db_path)
    evidence = EvidenceLog.open(db, config.log_origin, key_file=None)
    db.execute("PRAGMA synchronous=OFF")
    registry = Registry(db, evidence)
    known = {r[0] for r in db.execute("SELECT gateway FROM devices")}
    for gw, pub in zip(ids, pubs, strict=True):
        if gw not in known:
            registry.add(gw, pub, "bench-farm", f"field-{int(gw[3:5], 16) % 8}")
    db.execute("PRAGMA synchronous=FULL")
    with contextlib.suppress(sqlite3.OperationalError):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
