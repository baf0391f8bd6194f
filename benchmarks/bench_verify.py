"""Verifier benchmark: a bundle of N signed messages, verified offline, next to the raw Ed25519
verify rate measured in the same run on the same machine.

    python benchmarks/bench_verify.py --messages 100000 --json out.json

A collector database is filled the way the collector fills it (registry with its evidence log,
accepted-message store, checkpoint signed with the log key), exported as a bundle, then
verified: every message's inclusion proof, key and COSE signature. Signature checks dominate,
so the verifier spreads them over all cores; the raw rate is measured both on one core and over
a process pool of the same size, so the ratio shows what the rest of the verifier costs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.evidence import EvidenceLog
from anchor.export import export_bundle
from anchor.verify import VerifyOptions, verify_bundle
from collector.registry import Registry
from collector.store import AcceptedRow, CollectorStore, open_db
from fieldproof.config import CollectorConfig
from fieldproof.wire import Payload, Reading, encode_message, gateway_id_for, public_key_bytes

QUANTITIES = (("soil_moisture", "/"), ("soil_temperature", "Cel"), ("air_temperature", "Cel"),
              ("air_humidity", "%RH"), ("soil_ec", "S/m"))
T0 = 1_750_000_000.0


def _sign_batch(args: tuple[bytes, str, int, int]) -> list[tuple[str, int, bytes]]:
    """Worker: messages ``first..first+count-1`` of one gateway (seed = its private key)."""
    seed, gw, first, count = args
    key = Ed25519PrivateKey.from_private_bytes(seed)
    out = []
    for seq in range(first, first + count):
        t = T0 + 60.0 * seq
        readings = tuple(Reading("station", q, u, round(0.1 + (seq % 97) / 100, 3), t)
                         for q, u in QUANTITIES)
        out.append((gw, seq, encode_message(Payload(gw, seq, 1, readings), key)))
    return out


def build(root: Path, messages: int, gateways: int, workers: int) -> tuple[CollectorConfig, str]:
    config = CollectorConfig(collector_id="bench", data_dir=root)
    db = open_db(config.db_path)
    evidence = EvidenceLog.open(db, config.log_origin, config.log_key_file)
    registry = Registry(db, evidence)
    store = CollectorStore(db, evidence)
    keys = [Ed25519PrivateKey.generate() for _ in range(gateways)]
    jobs = []
    per = messages // gateways
    for k in keys:
        gw = gateway_id_for(public_key_bytes(k))
        registry.add(gw, public_key_bytes(k), "bench-farm", "f1")
        seed = k.private_bytes_raw()
        jobs += [(seed, gw, first, min(2000, per - first + 1)) for first in range(1, per + 1, 2000)]
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
        for batch in pool.map(_sign_batch, jobs):
            store.commit([AcceptedRow(gw, seq, 1, len(QUANTITIES), m) for gw, seq, m in batch],
                         [], {})
    evidence.checkpoint()
    vkey = evidence.verifier().vkey
    db.close()
    return config, vkey


def _raw_verify(n: int) -> int:
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    msg = os.urandom(200)
    sig = key.sign(msg)
    for _ in range(n):
        pub.verify(sig, msg)
    return n


def raw_rates(n: int, workers: int) -> tuple[float, float]:
    """Ed25519 verifications per second (cryptography): one core, and over ``workers``."""
    t = time.perf_counter()
    _raw_verify(n)
    single = n / (time.perf_counter() - t)
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
        list(pool.map(_raw_verify, [1000] * workers))  # start the workers outside the clock
        t = time.perf_counter()
        done = sum(pool.map(_raw_verify, [n // workers] * workers))
        pooled = done / (time.perf_counter() - t)
    return single, pooled


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out: dict[str, Any] = {"messages": args.messages, "gateways": args.gateways,
                           "workers": args.workers, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="fieldproof-bench-") as tmp:
        t = time.perf_counter()
        config, vkey = build(Path(tmp), args.messages, args.gateways, args.workers)
        out["build_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        data = export_bundle(config, farm=None, field=None, gateway=None, start=0, end=4e9)
        out["export_s"] = round(time.perf_counter() - t, 2)
        out["bundle_mb"] = round(len(data) / 1e6, 1)
        for workers in sorted({1, args.workers}):
            t = time.perf_counter()
            r = verify_bundle(data, nodes=[], chain=None, offline=True, log_key=vkey,
                              options=VerifyOptions(workers=workers))
            dt = time.perf_counter() - t
            assert r.passed and len(r.messages) == args.messages // args.gateways * args.gateways
            out[f"verify_{workers}w_s"] = round(dt, 2)
            out[f"verify_{workers}w_msgs_per_s"] = round(len(r.messages) / dt)
    single, pooled = raw_rates(20_000, args.workers)
    out["raw_ed25519_1core_per_s"] = round(single)
    out[f"raw_ed25519_{args.workers}w_per_s"] = round(pooled)
    w = args.workers
    out["verify_vs_raw_same_workers"] = round(out[f"verify_{w}w_msgs_per_s"] / pooled, 2)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
