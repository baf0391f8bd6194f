"""Evidence log benchmark: durable appends/s and proof cost at growing log sizes.

    python benchmarks/bench_log.py --sizes 10000,100000,1000000 --json out.json

For each size a fresh SQLite log (WAL, synchronous=FULL) is filled in batches with one commit
per batch, then random inclusion and consistency proofs are generated against the full tree
and verified. The same work runs on pymerkle's SqliteTree (if installed) side by side; its
roots are checked equal to ours, since both follow RFC 6962/9162 hashing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anchor import merkle
from anchor.logstore import open_log

ENTRY_SIZE = 200  # about one signed SenML reading


def _batches(n: int, batch: int, seed: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    return [
        [rng.randbytes(ENTRY_SIZE) for _ in range(min(batch, n - lo))] for lo in range(0, n, batch)
    ]


def _median_us(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def _db_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


def bench_fieldproof(
    path: Path, batches: list[list[bytes]], samples: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    with open_log(path) as log:
        t = time.perf_counter()
        for b in batches:
            log.append(b)  # one durable transaction per batch
        append_s = time.perf_counter() - t
        n = log.size()
        t = time.perf_counter()
        root = log.root()
        root_ms = (time.perf_counter() - t) * 1000

        cases = [(rng.randrange(n), rng.randrange(1, n)) for _ in range(samples)]
        incl = [log.inclusion_proof(i, n) for i, _ in cases]
        leaf_hashes = [log.leaf_hash(i) for i, _ in cases]
        cons = [log.consistency_proof(m, n) for _, m in cases]
        old_roots = [log.root(m) for _, m in cases]

        it = iter(range(10**9))
        incl_gen = _median_us(lambda: log.inclusion_proof(cases[next(it) % samples][0], n), samples)
        it = iter(range(10**9))
        cons_gen = _median_us(
            lambda: log.consistency_proof(cases[next(it) % samples][1], n), samples
        )

        def v_incl(k: int) -> None:
            merkle.verify_inclusion(leaf_hashes[k], cases[k][0], n, incl[k], root)

        def v_cons(k: int) -> None:
            merkle.verify_consistency(cases[k][1], n, cons[k], old_roots[k], root)

        it = iter(range(10**9))
        incl_ver = _median_us(lambda: v_incl(next(it) % samples), samples)
        it = iter(range(10**9))
        cons_ver = _median_us(lambda: v_cons(next(it) % samples), samples)
    return {
        "impl": "fieldproof",
        "appends_per_s": n / append_s,
        "root_ms": root_ms,
        "incl_gen_us": incl_gen,
        "incl_verify_us": incl_ver,
        "cons_gen_us": cons_gen,
        "cons_verify_us": cons_ver,
        "incl_proof_len": statistics.median(len(p) for p in incl),
        "db_mb": _db_mb(path),
        "root": root.hex(),
    }


def bench_pymerkle(
    path: Path, batches: list[list[bytes]], samples: int, seed: int
) -> dict[str, Any]:
    import pymerkle  # type: ignore[import-untyped]

    rng = random.Random(seed)
    tree = pymerkle.SqliteTree(str(path))
    tree.con.execute("PRAGMA journal_mode=WAL")
    tree.con.execute("PRAGMA synchronous=FULL")
    t = time.perf_counter()
    for b in batches:
        tree.append_entries(b)  # one transaction per batch
    append_s = time.perf_counter() - t
    n = tree.get_size()
    t = time.perf_counter()
    root = tree.get_root()
    root_ms = (time.perf_counter() - t) * 1000

    # pymerkle counts leaves from 1 and needs prior size >= 1.
    cases = [(rng.randrange(n), rng.randrange(1, n)) for _ in range(samples)]
    t = time.perf_counter()
    incl = [tree.prove_inclusion(i + 1, n) for i, _ in cases]
    first_pass = (time.perf_counter() - t) / samples * 1e6
    cons = [tree.prove_consistency(m, n) for _, m in cases]
    bases = [tree.get_leaf(i + 1) for i, _ in cases]
    old_roots = [tree.get_root(m) for _, m in cases]

    it = iter(range(10**9))
    incl_gen = _median_us(
        lambda: tree.prove_inclusion(cases[next(it) % samples][0] + 1, n), samples
    )
    it = iter(range(10**9))
    cons_gen = _median_us(lambda: tree.prove_consistency(cases[next(it) % samples][1], n), samples)
    it = iter(range(10**9))

    def v_incl(k: int) -> None:
        pymerkle.verify_inclusion(bases[k], root, incl[k])

    def v_cons(k: int) -> None:
        pymerkle.verify_consistency(old_roots[k], root, cons[k])

    incl_ver = _median_us(lambda: v_incl(next(it) % samples), samples)
    it = iter(range(10**9))
    cons_ver = _median_us(lambda: v_cons(next(it) % samples), samples)
    tree.close()
    return {
        "impl": "pymerkle 7 SqliteTree",
        "appends_per_s": n / append_s,
        "root_ms": root_ms,
        "incl_gen_us": incl_gen,
        "incl_gen_first_pass_us": first_pass,
        "incl_verify_us": incl_ver,
        "cons_gen_us": cons_gen,
        "cons_verify_us": cons_ver,
        "incl_proof_len": statistics.median(len(p.path) for p in incl),
        "db_mb": _db_mb(path),
        "root": root.hex(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--batch", type=int, default=500, help="entries per committed batch")
    ap.add_argument("--samples", type=int, default=300, help="proofs timed per size")
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("--dir", type=Path, help="where to put the databases (default: a temp dir)")
    ap.add_argument("--no-pymerkle", action="store_true")
    args = ap.parse_args()

    try:
        import pymerkle  # noqa: F401

        have_pymerkle = not args.no_pymerkle
    except ImportError:
        print("pymerkle not installed: measuring fieldproof only", file=sys.stderr)
        have_pymerkle = False

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            batches = _batches(size, args.batch, seed=size)
            impls = [("fieldproof", bench_fieldproof)]
            if have_pymerkle:
                impls.append(("pymerkle", bench_pymerkle))
            roots = set()
            for name, fn in impls:
                r = fn(Path(tmp) / f"{name}-{size}.db", batches, args.samples, seed=size)
                r["size"] = size
                roots.add(r.pop("root"))
                results.append(r)
                print(
                    f"{name} n={size}: {r['appends_per_s']:.0f} appends/s",
                    file=sys.stderr,
                    flush=True,
                )
            if len(roots) != 1:
                raise SystemExit(f"implementations disagree on the root at size {size}: {roots}")

    cols = [
        ("size", "size", "{:,}"),
        ("impl", "implementation", "{}"),
        ("appends_per_s", "durable appends/s", "{:,.0f}"),
        ("root_ms", "root ms", "{:.2f}"),
        ("incl_gen_us", "incl. proof gen µs", "{:.0f}"),
        ("incl_verify_us", "incl. verify µs", "{:.0f}"),
        ("cons_gen_us", "cons. proof gen µs", "{:.0f}"),
        ("cons_verify_us", "cons. verify µs", "{:.0f}"),
        ("db_mb", "db MB", "{:.0f}"),
    ]
    print(f"\nbatches of {args.batch}, one commit each (WAL, synchronous=FULL)", end="")
    print(f"; medians of {args.samples}")
    print("| " + " | ".join(c[1] for c in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(fmt.format(r[key]) for key, _, fmt in cols) + " |")
    if args.json:
        meta = {
            "batch": args.batch,
            "samples": args.samples,
            "cpus": os.cpu_count(),
            "python": sys.version,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
