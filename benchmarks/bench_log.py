"""Evidence log benchmark: what a transparency log costs per batch, and that it does not grow.

    python benchmarks/bench_log.py --sizes 10000,100000,1000000,10000000 --json out.json

For each size n a fresh SQLite log (WAL, synchronous=FULL) is filled from 0 to n in batches,
one commit per batch, computing the root after every commit (a log that signs a checkpoint per
commit); appends and roots are timed apart, so raw durable appends/s comes out too. Then, on a
reopened connection: the root at n (the first root after opening), inclusion and consistency
proofs for fresh random indexes (each timed on first touch, then once more on a repeat), their
verification, and K rounds of "append one committed batch and produce the new root" starting
at n. The same work runs on pymerkle's SqliteTree (if installed) with identical entries; roots
are checked equal at every size both reached.

Entries are generated lazily from a seeded RNG, so memory stays bounded at 10^7, and each
size's databases are deleted once measured. Any measurement that exceeds --budget seconds for
one implementation is cut short, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anchor.logstore import MerkleLog, open_log
from fieldproof.formats import merkle

ENTRY_SIZE = 200  # about one signed SenML reading


def _batches(count: int, batch: int, rng: random.Random) -> Iterator[list[bytes]]:
    """Batches made on demand: 10^7 entries held at once would be ~3 GB of Python objects."""
    for lo in range(0, count, batch):
        blob = rng.randbytes(ENTRY_SIZE * min(batch, count - lo))
        yield [blob[i : i + ENTRY_SIZE] for i in range(0, len(blob), ENTRY_SIZE)]


def _fill_rng(size: int) -> random.Random:
    return random.Random(size)


def _rounds_rng(size: int) -> random.Random:
    """A separate stream so both implementations append the same round entries."""
    return random.Random(f"rounds-{size}")


def _median_us(fn: Callable[[int], object], count: int) -> float:
    """Median of fn(k) for k in 0..count-1, each call timed alone."""
    times = []
    for k in range(count):
        t = time.perf_counter_ns()
        fn(k)
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def _db_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Impl(Protocol):
    """The operations both implementations are measured on, behind one interface."""

    name: str

    def append(self, entries: list[bytes]) -> None: ...
    def reopen(self) -> None: ...
    def root(self, size: int | None = None) -> bytes: ...
    def inclusion_proof(self, index: int, size: int) -> Any: ...
    def consistency_proof(self, size1: int, size2: int) -> Any: ...
    def leaf_hash(self, index: int) -> bytes: ...
    def verify_inclusion(
        self, leaf: bytes, index: int, size: int, proof: Any, root: bytes
    ) -> None: ...
    def verify_consistency(
        self, size1: int, size2: int, proof: Any, root1: bytes, root2: bytes
    ) -> None: ...
    def proof_len(self, proof: Any) -> int: ...
    def close(self) -> None: ...


class Fieldproof:
    """anchor.logstore.open_log: one durable commit per append."""

    name = "fieldproof"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log: MerkleLog = open_log(path)

    def append(self, entries: list[bytes]) -> None:
        self.log.append(entries)

    def reopen(self) -> None:
        """A new connection, so proofs start from an empty SQLite page cache."""
        self.log.close()
        self.log = open_log(self.path)

    def root(self, size: int | None = None) -> bytes:
        return self.log.root(size)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return self.log.inclusion_proof(index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return self.log.consistency_proof(size1, size2)

    def leaf_hash(self, index: int) -> bytes:
        return self.log.leaf_hash(index)

    def verify_inclusion(
        self, leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes
    ) -> None:
        merkle.verify_inclusion(leaf, index, size, proof, root)

    def verify_consistency(
        self, size1: int, size2: int, proof: list[bytes], root1: bytes, root2: bytes
    ) -> None:
        merkle.verify_consistency(size1, size2, proof, root1, root2)

    def proof_len(self, proof: list[bytes]) -> int:
        return len(proof)

    def close(self) -> None:
        self.log.close()


class Pymerkle:
    """pymerkle's SqliteTree, made as durable as ours (WAL, synchronous=FULL).

    It counts leaves from 1; indexes are shifted here so both take the same arguments.
    """

    name = "pymerkle 7 SqliteTree"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tree = self._open()

    def _open(self) -> Any:
        import pymerkle

        tree = pymerkle.SqliteTree(str(self.path))
        tree.con.execute("PRAGMA journal_mode=WAL")
        tree.con.execute("PRAGMA synchronous=FULL")
        return tree

    def append(self, entries: list[bytes]) -> None:
        self.tree.append_entries(entries)  # one transaction per batch

    def reopen(self) -> None:
        """A new connection and an empty subroot cache, as after a restart."""
        self.tree.close()
        self.tree = self._open()

    def root(self, size: int | None = None) -> bytes:
        return bytes(self.tree.get_root(size))

    def inclusion_proof(self, index: int, size: int) -> Any:
        return self.tree.prove_inclusion(index + 1, size)

    def consistency_proof(self, size1: int, size2: int) -> Any:
        return self.tree.prove_consistency(size1, size2)

    def leaf_hash(self, index: int) -> bytes:
        return bytes(self.tree.get_leaf(index + 1))

    def verify_inclusion(self, leaf: bytes, index: int, size: int, proof: Any, root: bytes) -> None:
        import pymerkle

        pymerkle.verify_inclusion(leaf, root, proof)

    def verify_consistency(
        self, size1: int, size2: int, proof: Any, root1: bytes, root2: bytes
    ) -> None:
        import pymerkle

        pymerkle.verify_consistency(root1, root2, proof)

    def proof_len(self, proof: Any) -> int:
        return len(proof.path)

    def close(self) -> None:
        self.tree.close()


def _timed_pass(
    fn: Callable[[int], object], count: int, budget_s: float
) -> tuple[list[object], list[float]]:
    """Call fn(0..count-1), timing each; stops early once budget_s is spent."""
    out: list[object] = []
    times: list[float] = []
    start = time.perf_counter()
    for k in range(count):
        t = time.perf_counter_ns()
        out.append(fn(k))
        times.append((time.perf_counter_ns() - t) / 1000)
        if time.perf_counter() - start > budget_s and k + 1 < count:
            break
    return out, times


def measure(impl: Impl, size: int, batch: int, samples: int, rounds: int, budget_s: float) -> Any:
    """Every figure for one implementation at one size (see the module docstring)."""
    notes: list[str] = []
    label = f"{impl.name} n={size:,}"

    # Filling from 0 to n: a root after every committed batch, as a log signing a checkpoint
    # per commit would; append and root are timed apart so raw appends/s comes out too.
    t0 = time.perf_counter()
    append_s = root_s = 0.0
    fill_ms: list[float] = []
    roots: dict[int, str] = {}
    count = rooted = 0
    for b in _batches(size, batch, _fill_rng(size)):
        t1 = time.perf_counter()
        impl.append(b)  # one durable transaction per batch
        t2 = time.perf_counter()
        append_s += t2 - t1
        count += len(b)
        if root_s <= budget_s:
            roots[count] = impl.root().hex()
            rooted = count
            t3 = time.perf_counter()
            root_s += t3 - t2
            fill_ms.append((t3 - t1) * 1000)
            if root_s > budget_s and count < size:
                notes.append(
                    f"{label}: append+root while filling measured over the first {count:,} "
                    f"entries only (roots took over the {budget_s:g} s budget); the rest "
                    "appended without roots"
                )
    took = time.perf_counter() - t0
    _log(f"{label}: filled in {took:.0f} s ({size / append_s:,.0f} raw appends/s)")

    impl.reopen()
    t = time.perf_counter()
    root = impl.root()
    root_ms = (time.perf_counter() - t) * 1000

    # Fresh random indexes, each timed the first time it is asked for (cold pages and caches).
    rng = random.Random(size + 1)
    cases = [(rng.randrange(size), rng.randrange(1, size)) for _ in range(samples)]
    incl, incl_t = _timed_pass(lambda k: impl.inclusion_proof(cases[k][0], size), samples, budget_s)
    cons, cons_t = _timed_pass(
        lambda k: impl.consistency_proof(cases[k][1], size), samples, budget_s
    )
    for what, done in (("inclusion", len(incl)), ("consistency", len(cons))):
        if done < samples:
            notes.append(
                f"{label}: {what} proofs timed for {done} of {samples} indexes "
                f"(first pass passed the {budget_s:g} s budget)"
            )
    _log(
        f"{label}: root {root_ms:.1f} ms, first-touch proofs in {sum(incl_t + cons_t) / 1e6:.1f} s"
    )
    incl_warm = _median_us(lambda k: impl.inclusion_proof(cases[k][0], size), len(incl))
    cons_warm = _median_us(lambda k: impl.consistency_proof(cases[k][1], size), len(cons))

    leaves = [impl.leaf_hash(i) for i, _ in cases[: len(incl)]]
    old_roots = [impl.root(m) for _, m in cases[: len(cons)]]
    incl_ver = _median_us(
        lambda k: impl.verify_inclusion(leaves[k], cases[k][0], size, incl[k], root), len(incl)
    )
    cons_ver = _median_us(
        lambda k: impl.verify_consistency(cases[k][1], size, cons[k], old_roots[k], root),
        len(cons),
    )

    # The transparency-log unit of work: commit a batch, then compute the root to sign.
    round_ms: list[float] = []
    append_ms: list[float] = []
    root_only_ms: list[float] = []
    new_size = size
    start = time.perf_counter()
    for b in _batches(rounds * batch, batch, _rounds_rng(size)):
        t1 = time.perf_counter()
        impl.append(b)
        t2 = time.perf_counter()
        r = impl.root()
        t3 = time.perf_counter()
        new_size += len(b)
        roots[new_size] = r.hex()
        append_ms.append((t2 - t1) * 1000)
        root_only_ms.append((t3 - t2) * 1000)
        round_ms.append((t3 - t1) * 1000)
        if time.perf_counter() - start > budget_s and len(round_ms) < rounds:
            notes.append(
                f"{label}: {len(round_ms)} of {rounds} append+root rounds "
                f"(passed the {budget_s:g} s budget)"
            )
            break
    _log(f"{label}: {len(round_ms)} append+root rounds in {sum(round_ms) / 1000:.1f} s")
    impl.close()

    return {
        "impl": impl.name,
        "size": size,
        "append_root_entries_per_s": (new_size - size) / (sum(round_ms) / 1000),
        "append_root_ms_per_batch": statistics.median(round_ms),
        "append_root_max_ms": max(round_ms),
        "append_root_append_ms": statistics.median(append_ms),
        "append_root_root_ms": statistics.median(root_only_ms),
        "append_root_rounds": len(round_ms),
        "fill_append_root_entries_per_s": rooted / (sum(fill_ms) / 1000),
        "fill_append_root_worst_ms": max(fill_ms),
        "fill_append_root_entries": rooted,
        "appends_per_s": size / append_s,
        "root_ms": root_ms,
        "incl_gen_us": statistics.median(incl_t),
        "incl_gen_mean_us": statistics.fmean(incl_t),
        "incl_gen_repeat_us": incl_warm,
        "incl_verify_us": incl_ver,
        "cons_gen_us": statistics.median(cons_t),
        "cons_gen_mean_us": statistics.fmean(cons_t),
        "cons_gen_repeat_us": cons_warm,
        "cons_verify_us": cons_ver,
        "proof_samples": min(len(incl), len(cons)),
        "incl_proof_len": statistics.median(impl.proof_len(p) for p in incl),
        "measure_s": time.perf_counter() - t0,
        "notes": notes,
        "roots": roots,
    }


def _ratio(ours: dict[str, Any], theirs: dict[str, Any], key: str, rate: bool) -> float:
    """fieldproof ÷ pymerkle in operations per second: > 1 means fieldproof is faster."""
    return float(ours[key] / theirs[key] if rate else theirs[key] / ours[key])


RATIOS = [
    ("append_root", "A append+root at n", "append_root_entries_per_s", True),
    ("fill_append_root", "B append+root 0 → n", "fill_append_root_entries_per_s", True),
    ("fill_worst", "B worst batch", "fill_append_root_worst_ms", False),
    ("root", "D root", "root_ms", False),
    ("incl_gen", "incl. proof gen (new)", "incl_gen_us", False),
    ("cons_gen", "cons. proof gen (new)", "cons_gen_us", False),
    ("raw_appends", "C raw appends", "appends_per_s", True),
]


def markdown(results: list[dict[str, Any]], ratios: list[dict[str, Any]], args: Any) -> str:
    """Two tables: the figures per implementation, then fieldproof's speed-up over pymerkle."""
    b = args.batch
    cols: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("entries (n)", lambda r: f"{r['size']:,}"),
        ("implementation", lambda r: str(r["impl"])),
        (f"**A** append {b} + root at n: entries/s", lambda r: _rate(r, "append_root")),
        ("**A** ms/batch: median / worst", _a_ms),
        (f"**B** append {b} + root, 0 → n: entries/s", lambda r: _rate(r, "fill_append_root")),
        ("**B** worst batch ms", _worst),
        ("**C** raw durable appends/s", lambda r: f"{r['appends_per_s']:,.0f}"),
        ("**D** root ms", lambda r: f"{r['root_ms']:.2f}"),
        ("incl. proof gen µs: new / repeat", lambda r: _pair(r, "incl_gen")),
        ("incl. verify µs", lambda r: f"{r['incl_verify_us']:.0f}"),
        ("cons. proof gen µs: new / repeat", lambda r: _pair(r, "cons_gen")),
        ("cons. verify µs", lambda r: f"{r['cons_verify_us']:.0f}"),
        ("db MB (with WAL)", lambda r: f"{r['db_mb']:,.0f}"),
    ]
    lines = [
        f"Entries of {ENTRY_SIZE} bytes in batches of {b}, one commit per batch (WAL, "
        "synchronous=FULL).",
        "",
        f"- **A**: {args.rounds} rounds starting at n, each committing one batch and computing "
        "the new root (a checkpoint could be signed at every commit); entries/s over all "
        "rounds, so one slow round (worst) lowers it.",
        "- **B**: the same work while filling the log from 0 to n; worst = slowest round.",
        "- **C**: the appends alone while filling (no root).",
        "- **D**: the first root at n after reopening the database.",
        f"- Proofs: medians over {args.samples} random indexes; 'new' is each index's first "
        "proof (empty SQLite page cache, OS file cache warm), 'repeat' the same indexes again. "
        "Verify: medians over the same proofs.",
        "",
        "| " + " | ".join(c[0] for c in cols) + " |",
        "|---:|---|" + "---:|" * (len(cols) - 2),
    ]
    lines += ["| " + " | ".join(fn(r) for _, fn in cols) + " |" for r in results]
    if ratios:
        lines += [
            "",
            "fieldproof ÷ pymerkle, in operations per second (> 1: fieldproof faster; for times, "
            "pymerkle's time ÷ fieldproof's):",
            "",
            "| entries (n) | " + " | ".join(c[1] for c in RATIOS) + " |",
            "|---:|" + "---:|" * len(RATIOS),
        ]
        for q in ratios:
            cells = [f"{q[c[0]]:,.1f}×" for c in RATIOS]
            lines.append(f"| {q['size']:,} | " + " | ".join(cells) + " |")
    notes = [n for r in results for n in r["notes"]]
    if ratios:
        notes.append(
            "pymerkle stores only leaf hashes when appending and computes every subtree when a "
            "root or proof is asked for, which is why it wins raw appends (C). Its first root "
            "after opening (D) and each first proof touching a new subtree cost O(size of that "
            "subtree); later ones reuse its in-memory subroot cache, which is warm in A."
        )
    lines += ["", *(f"- {n}" for n in notes)]
    return "\n".join(lines)


def _rate(r: dict[str, Any], key: str) -> str:
    return f"{r[key + '_entries_per_s']:,.0f}"


def _ms(ms: float) -> str:
    return f"{ms:,.0f}" if ms >= 10 else f"{ms:.1f}"


def _worst(r: dict[str, Any]) -> str:
    return _ms(r["fill_append_root_worst_ms"])


def _a_ms(r: dict[str, Any]) -> str:
    return f"{r['append_root_ms_per_batch']:.1f} / {_ms(r['append_root_max_ms'])}"


def _pair(r: dict[str, Any], key: str) -> str:
    return f"{r[key + '_us']:,.0f} / {r[key + '_repeat_us']:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--batch", type=int, default=500, help="entries per committed batch")
    ap.add_argument("--samples", type=int, default=300, help="proofs timed per size")
    ap.add_argument("--rounds", type=int, default=100, help="append+root rounds per size")
    ap.add_argument(
        "--budget", type=float, default=300.0, help="seconds per timed pass before cutting it short"
    )
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

    started = time.perf_counter()
    load = os.getloadavg()
    results: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            size_start = time.perf_counter()
            factories: list[Callable[[Path], Impl]] = [Fieldproof]
            if have_pymerkle:
                factories.append(Pymerkle)
            roots: list[dict[int, str]] = []
            per_size: list[dict[str, Any]] = []
            for i, factory in enumerate(factories):
                work = Path(tmp) / f"{i}-{size}"
                work.mkdir()
                path = work / "log.db"
                r = measure(factory(path), size, args.batch, args.samples, args.rounds, args.budget)
                r["db_mb"] = _db_mb(path)
                shutil.rmtree(work)  # keeps disk use to one database at a time
                roots.append(r.pop("roots"))
                per_size.append(r)
            common = sorted(set.intersection(*(set(x) for x in roots)))
            bad = [s for s in common if len({x[s] for x in roots}) != 1]
            if bad:
                raise SystemExit(f"implementations disagree on the root at sizes {bad}")
            took = time.perf_counter() - size_start
            _log(f"n={size:,}: roots agree at all {len(common)} sizes both reached; {took:.0f} s")
            for r in per_size:
                r["size_total_s"] = took
            results += per_size
            if len(per_size) == 2:
                ours, theirs = per_size
                ratio = {c[0]: _ratio(ours, theirs, c[2], c[3]) for c in RATIOS}
                ratios.append({"size": size, **ratio})

    elapsed = time.perf_counter() - started
    print()
    print(markdown(results, ratios, args))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nwhole run: {elapsed:.0f} s, peak memory {rss:,.0f} MB")
    if args.json:
        meta = {
            "batch": args.batch,
            "entry_size": ENTRY_SIZE,
            "samples": args.samples,
            "rounds": args.rounds,
            "budget_s": args.budget,
            "elapsed_s": elapsed,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "loadavg_at_start": load,
            "cpus": os.cpu_count(),
            "python": sys.version,
        }
        out = {"meta": meta, "results": results, "ratios": ratios}
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
