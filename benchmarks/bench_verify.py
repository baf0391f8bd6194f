"""Verifier benchmark: a bundle of N signed messages, verified offline, next to the raw Ed25519
verify rate measured in the same run on the same machine.

    python benchmarks/bench_verify.py --messages 100000 --json out.json

A collector database is filled the way the collector fills it (registry with its evidence log,
accepted-message store, checkpoint signed with the log key), exported as a bundle, then
verified with 1 and ``--workers`` processes: every message's inclusion proof, key and COSE
signature. Verification must be bound by signature checks, so the raw rate is measured beside
it, for both Ed25519 implementations on one core and over ``--workers`` processes:

* libsodium (``fieldproof.ed25519.verify``, PyNaCl): what the product verifies with, so the
  ratios ``verify_vs_raw_*`` are against it;
* OpenSSL (``cryptography``), for comparison with older runs.

Raw rates are measured for a fixed time per process (not a fixed count), after the pool has
started, so a slow worker start or a busy neighbour does not pass for a slow verify. The JSON
keeps the keys of earlier versions (``raw_ed25519_1core_per_s`` and
``raw_ed25519_<w>w_per_s`` are now the libsodium figures; ``raw_ed25519_backend`` says so).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
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
from collector.export import export_bundle
from collector.registry import Registry
from collector.store import AcceptedRow, CollectorStore
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db
from fieldproof.wire import Payload, Reading, encode_message, gateway_id_for, public_key_bytes
from inspector.verify import VerifyOptions, verify_bundle

QUANTITIES = (("soil_moisture", "/"), ("soil_temperature", "Cel"), ("air_temperature", "Cel"),
              ("air_humidity", "%RH"), ("soil_ec", "S/m"))
T0 = 1_750_000_000.0
BACKENDS = ("libsodium", "openssl")


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


def _raw_verify(args: tuple[str, float]) -> float:
    """Ed25519 verifications per second with one backend, for ``seconds`` of wall time.

    The signed data is as long as a 5-reading message's Sig_structure (~300 bytes); a few
    different signatures are cycled so no backend can cache its way to a better figure."""
    backend, seconds = args
    from fieldproof import ed25519

    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    raw = public_key_bytes(key)
    items = [(key.sign(m), m) for m in (os.urandom(300) for _ in range(16))]
    n = 0
    t0 = time.perf_counter()
    while True:
        if backend == "libsodium":
            for sig, m in items:
                ed25519.verify(raw, sig, m)
        else:
            for sig, m in items:
                pub.verify(sig, m)
        n += len(items)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def raw_rates(workers: int, seconds: float) -> dict[str, tuple[float, float]]:
    """backend -> (verifications/s on one core, summed over ``workers`` processes)."""
    out: dict[str, tuple[float, float]] = {}
    with ProcessPoolExecutor(workers, mp_context=get_context("forkserver")) as pool:
        list(pool.map(_raw_verify, [("libsodium", 0.05)] * workers))  # started outside the clock
        for backend in BACKENDS:
            single = _raw_verify((backend, seconds))
            pooled = sum(pool.map(_raw_verify, [(backend, seconds)] * workers))
            out[backend] = (single, pooled)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--gateways", type=int, default=20)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=1, help="verifications per worker count (median)")
    ap.add_argument("--raw-seconds", type=float, default=2.0,
                    help="wall time per raw Ed25519 measurement")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    w = args.workers
    out: dict[str, Any] = {"messages": args.messages, "gateways": args.gateways,
                           "workers": w, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="fieldproof-bench-") as tmp:
        t = time.perf_counter()
        config, vkey = build(Path(tmp), args.messages, args.gateways, w)
        out["build_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        data = export_bundle(config, farm=None, field=None, gateway=None, start=0, end=4e9)
        out["export_s"] = round(time.perf_counter() - t, 2)
        out["bundle_mb"] = round(len(data) / 1e6, 1)
        expected = args.messages // args.gateways * args.gateways
        for workers in sorted({1, w}):
            times = []
            for _ in range(max(1, args.runs)):
                t = time.perf_counter()
                r = verify_bundle(data, nodes=[], chain=None, offline=True, log_key=vkey,
                                  options=VerifyOptions(workers=workers))
                times.append(time.perf_counter() - t)
                if not r.passed or len(r.messages) != expected:
                    raise SystemExit(f"verification went wrong: {r.summary_line()}")
                # an inspector verifies once: a previous result kept alive (600,000 objects)
                # made the next run ~15 % slower (a bigger heap for the cyclic collector to
                # walk and for fork to map), which is the harness, not the verifier
                del r
                gc.collect()
            dt = statistics.median(times)
            out[f"verify_{workers}w_s"] = round(dt, 2)
            out[f"verify_{workers}w_msgs_per_s"] = round(expected / dt)
        del data
    raw = raw_rates(w, args.raw_seconds)
    for backend, (single, pooled) in raw.items():
        out[f"raw_ed25519_{backend}_1core_per_s"] = round(single)
        out[f"raw_ed25519_{backend}_{w}w_per_s"] = round(pooled)
    sodium_1, sodium_w = raw["libsodium"]
    out["raw_ed25519_backend"] = "libsodium"
    out["raw_ed25519_1core_per_s"] = round(sodium_1)
    out[f"raw_ed25519_{w}w_per_s"] = round(sodium_w)
    out["verify_vs_raw_1w"] = round(out["verify_1w_msgs_per_s"] / sodium_1, 2)
    out["verify_vs_raw_same_workers"] = round(out[f"verify_{w}w_msgs_per_s"] / sodium_w, 2)
    print(json.dumps(out, indent=2))
    print(f"verifier: {out['verify_1w_msgs_per_s']:,} msgs/s on 1 worker "
          f"({out['verify_vs_raw_1w']:.0%} of raw libsodium {round(sodium_1):,}/s), "
          f"{out[f'verify_{w}w_msgs_per_s']:,} msgs/s on {w} "
          f"({out['verify_vs_raw_same_workers']:.0%} of {round(sodium_w):,}/s)", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
