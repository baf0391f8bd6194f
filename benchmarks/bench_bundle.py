"""Bundle benchmark: what decoding a bundle costs (time, peak memory as a multiple of the file)
and what exporting one costs when the period is short and the history long — each next to its
previous approach measured in the same run, so the ratios hold on any machine.

    python benchmarks/bench_bundle.py [--history 200000] [--json out.json]

* **decode**: ``decode_bundle`` (reads item heads, checks every count and length before it
  builds anything, builds the entries) against ``cbor2.loads`` of the whole file alone — the
  first step of the previous decoder, which built every item first and checked limits and
  types after (so its full cost was this plus its checks) — on an honest bundle (messages of
  ~300 bytes, two subtree hashes per message) and on hostile shapes of ~4 MiB. Peak memory by
  tracemalloc.
* **export**: ``build_bundle`` for a one-hour period of two gateways that have sent a message a
  minute for ``--history`` minutes, against the previous selection (every message of the
  gateways read and decoded, then filtered by time), on the same generated collector database.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.evidence import EvidenceLog
from collector.export import _sample_span, build_bundle
from collector.registry import Registry
from collector.store import AcceptedRow, CollectorStore
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db
from fieldproof.formats.bundle import BUNDLE_FORMAT, decode_bundle
from fieldproof.wire import Payload, Reading, encode_message, gateway_id_for, public_key_bytes

T0 = 1_700_000_000.0
SIZE = 4 << 20


def _peak(fn: Callable[[], Any]) -> tuple[float, int, str]:
    """(seconds without tracing, peak traced bytes, outcome) of ``fn()``."""
    t = time.perf_counter()
    try:
        fn()
        outcome = "ok"
    except Exception as exc:
        outcome = f"refused ({type(exc).__name__})"
    elapsed = time.perf_counter() - t
    tracemalloc.start()
    with contextlib.suppress(Exception):  # the same outcome as above
        fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak, outcome


def _bundle(**fields: Any) -> bytes:
    obj: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "version": 2, "created": 1.0,
        "scope": {"farm": None, "field": None, "gateway": None, "from": 0.0, "to": 1.0},
        "log": {"origin": "o", "vkey": "v"}, "checkpoints": [], "consistency": [],
        "hashes": [], "registry": [], "messages": [], "notes": []}
    obj.update(fields)
    return bytes(cbor2.dumps(obj))


def bench_decode(messages: int) -> dict[str, Any]:
    h = b"\x11" * 32
    shapes = {
        "honest": _bundle(messages=[[2 * i, b"\xd2" + bytes([i % 251]) * 300]
                                    for i in range(messages)],
                          hashes=[[i, i + 1, h] for i in range(2 * messages)]),
        "hostile_tiny_entries": _bundle(messages=[[1000 + i, b"\xd2" * 64]
                                                  for i in range(SIZE // 69)]),
        "hostile_empty_arrays": _bundle(created=[[]] * SIZE),
        "hostile_empty_maps": _bundle(notes=[{}] * SIZE),
    }
    out: dict[str, Any] = {}
    for name, data in shapes.items():
        row: dict[str, Any] = {"mb": round(len(data) / 1e6, 1)}
        for impl, fn in (("cbor2_loads", lambda d=data: cbor2.loads(d)),
                         ("decode_bundle", lambda d=data: decode_bundle(d))):
            elapsed, peak, outcome = _peak(fn)
            row[impl] = {"s": round(elapsed, 3), "peak_x_file": round(peak / len(data), 1),
                         "outcome": outcome}
        out[name] = row
    return out


def build_store(root: Path, history: int) -> CollectorConfig:
    """Two gateways of one farm, one message a minute each for ``history`` minutes, received
    two seconds after sampling; a checkpoint at the end."""
    config = CollectorConfig(collector_id="bench", data_dir=root)
    db = open_db(config.db_path)
    evidence = EvidenceLog.open(db, config.log_origin, config.log_key_file)
    registry = Registry(db, evidence)
    store = CollectorStore(db, evidence)
    for _ in range(2):
        key = Ed25519PrivateKey.generate()
        gw = gateway_id_for(public_key_bytes(key))
        registry.add(gw, public_key_bytes(key), "bench-farm", "f1")
        for first in range(1, history + 1, 5000):
            rows = []
            for seq in range(first, min(first + 5000, history + 1)):
                t = T0 + 60.0 * seq
                p = Payload(gw, seq, 1, tuple(Reading("station", q, u, 0.5, t) for q, u in
                                              (("soil_moisture", "/"), ("air_temperature",
                                                                        "Cel"))))
                rows.append(AcceptedRow(gw, seq, 1, 2, encode_message(p, key)))
            store.commit(rows, [], {})
    with db:
        db.execute("UPDATE received SET received_at = ? + 60.0 * seq + 2", (T0,))
    evidence.checkpoint()
    db.close()
    return config


def _previous_selection(config: CollectorConfig, start: float, end: float) -> int:
    """What export did before: read and decode every message of the selected gateways, then
    keep those whose sample times overlap the period or that arrived during it."""
    db = sqlite3.connect(f"file:{config.db_path}?mode=ro", uri=True)
    kept = 0
    try:
        for (gw,) in db.execute("SELECT DISTINCT gateway FROM received").fetchall():
            rows = db.execute(
                "SELECT r.log_index, r.received_at, e.entry FROM received r"
                " JOIN fp_log_entries e ON e.idx = r.log_index"
                " WHERE r.gateway = ? AND r.log_index IS NOT NULL", (gw,))
            for _, received_at, raw in rows:
                span = _sample_span(bytes(raw))
                if (span is None or (span[1] >= start and span[0] <= end)
                        or start <= float(received_at) <= end):
                    kept += 1
    finally:
        db.close()
    return kept


def bench_export(history: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fieldproof-bench-bundle-") as tmp:
        t = time.perf_counter()
        config = build_store(Path(tmp), history)
        out: dict[str, Any] = {"history_per_gateway": history,
                               "build_s": round(time.perf_counter() - t, 1)}
        middle = T0 + 60.0 * (history // 2)
        start, end = middle, middle + 3600
        t = time.perf_counter()
        kept = _previous_selection(config, start, end)
        out["previous_selection_s"] = round(time.perf_counter() - t, 3)
        out["previous_messages"] = kept
        t = time.perf_counter()
        bundle, stats = build_bundle(config, farm="bench-farm", field=None, gateway=None,
                                     start=start, end=end)
        out["build_bundle_s"] = round(time.perf_counter() - t, 3)
        out["messages"] = stats.messages
        out["registry_events"] = stats.registry_events
        out["decoded"] = stats.decoded
        out["speedup"] = round(out["previous_selection_s"] / out["build_bundle_s"], 1)
        assert bundle.completeness is not None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000, help="messages of the honest bundle")
    ap.add_argument("--history", type=int, default=200_000,
                    help="messages per gateway in the export benchmark's database")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out = {"decode": bench_decode(args.messages), "export": bench_export(args.history)}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
