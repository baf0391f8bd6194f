"""Completeness seal benchmark: what writing a seal with each checkpoint costs the collector.

    python benchmarks/bench_seal.py --gateways 100 --farms 10 --per-checkpoint 10000 --json out.json

A collector database (the collector's own classes, tests/support/bundles.Farm) gets
``--per-checkpoint`` signed messages spread over ``--gateways`` gateways in ``--farms`` farms,
then a checkpoint, ``--rounds`` times. Per checkpoint it reports the whole call and the part
under the database write lock (ingestion waits only for that part: the entries since the last
seal are folded in before the lock is taken), then the cost of one farm's export.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anchor.evidence import EvidenceLog
from collector.export import build_bundle
from fieldproof.formats.seal import SealAccumulator
from tests.support.bundles import Farm

T0 = 1_750_000_000.0


def run(gateways: int, farms: int, per_checkpoint: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        f = Farm(Path(d))
        gws = [f.enroll(f"farm-{i % farms}", "x") for i in range(gateways)]
        ev: EvidenceLog = f.evidence
        locked: list[float] = []
        original = ev._append_seal

        def timed(size: int, ahead: tuple[SealAccumulator, tuple[int, bytes] | None] | None
                  ) -> int:
            t = time.perf_counter()
            out = original(size, ahead)
            locked.append(time.perf_counter() - t)
            return out

        ev._append_seal = timed  # type: ignore[method-assign]
        whole: list[float] = []
        each = max(1, per_checkpoint // gateways)
        for r in range(rounds):
            for g in gws:
                f.run(g, T0 + r * each * 60, each)
            t = time.perf_counter()
            f.checkpoint()
            whole.append(time.perf_counter() - t)
        t = time.perf_counter()
        build_bundle(f.config, farm="farm-0", field=None, gateway=None, start=T0,
                     end=T0 + 600)
        export_s = time.perf_counter() - t
        size = ev.log.size()
        f.close()
    return {
        "gateways": gateways, "farms": farms, "entries_per_checkpoint": each * gateways,
        "rounds": rounds, "log_size": size,
        "checkpoint_ms_median": round(1000 * statistics.median(whole), 1),
        "checkpoint_ms_max": round(1000 * max(whole), 1),
        "locked_ms_median": round(1000 * statistics.median(locked), 1),
        "locked_ms_max": round(1000 * max(locked), 1),
        "export_one_farm_ms": round(1000 * export_s, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--farms", type=int, default=10)
    ap.add_argument("--per-checkpoint", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = run(args.gateways, args.farms, args.per_checkpoint, args.rounds)
    print(json.dumps(out, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
