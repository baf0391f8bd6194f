"""Anchor latency on a real VeChainThor node: submit → included → finalized, in blocks and seconds.

    python benchmarks/bench_anchor_latency.py --anchors 10 --json out.json

Starts thor v2.4.4 ``solo --on-demand`` (``fieldproof.services.ThorSolo``, built by
scripts/peers) in a temporary directory and runs the real ``Anchorer`` against it:

* **submit → included**: for each anchor, a new checkpoint is published and the anchorer steps
  until its state is ``included``; measured are the blocks between the best block at submit and
  the including block, the wall time of the submitting step, and the wall time to inclusion.
  Solo on demand packs the tx into a block of its own before answering the POST, so this is the
  anchorer's own cost plus one block; on a public network add the wait for the next block
  (≤ 10 s) and any queue in the pool.
* **included → finalized**: the chain is driven by posting cheap txs (0 VET to self, one block
  each, from another dev account) while ``/blocks/finalized`` is read after every block; for each
  anchor the blocks from inclusion until finalized ≥ its block are counted, and the wall time
  while driving as fast as the node packs. Then one anchorer step must mark every anchor
  ``finalized`` (through ``?head=<finalized id>``). The finality distance in blocks is the
  network's rule (180-block epochs, finalized two epochs behind the head), so the time on a live
  network is that many blocks × 10 s; both are printed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anchor import thor
from anchor.anchoring import AnchorConfig, Anchorer, AnchorState, AnchorStore
from anchor.thor_client import ThorClient
from anchor.thor_reader import FinalityGap
from fieldproof.services import ThorSolo

# thor solo's funded dev accounts (genesis/devnet.go, thor v2.4.4): public test keys
ANCHOR_KEY = bytes.fromhex("35b5cc144faca7d7f220fca7ad3420090861d5231d80eb23e1013426847371c4")
DRIVER_KEY = bytes.fromhex("2dd2c5b5d65913214783a6bd5679d8c6ef29ca9f2e2eae98b4add061d0b85ea0")
BLOCK_INTERVAL_S = 10
ORIGIN = "bench.example/fieldproof/log"


@dataclass(frozen=True)
class _Checkpoint:
    origin: str
    size: int
    root_hash: bytes


class _Log:
    def __init__(self) -> None:
        self.latest: tuple[_Checkpoint, bytes] | None = None

    def publish(self, size: int) -> None:
        self.latest = (_Checkpoint(ORIGIN, size, secrets.token_bytes(32)), b"note")

    def latest_checkpoint(self) -> tuple[_Checkpoint, bytes] | None:
        return self.latest


def _cheap_tx(client: ThorClient, key: bytes) -> bytes:
    me = thor.address_of(key)
    clause = thor.Clause(me, 0, b"")
    tx = thor.Transaction(
        chain_tag=client.chain_tag(),
        block_ref=client.best_block().block_ref,
        expiration=720,
        clauses=(clause,),
        gas=thor.intrinsic_gas([clause]),
        nonce=secrets.randbits(64),
    )
    return thor.sign_transaction(tx, key).encode()


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def run(anchors: int, dynamic_fee: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fieldproof-bench-anchor-") as tmp:
        node = ThorSolo(Path(tmp) / "thor")
        t = time.perf_counter()
        node.start()
        start_s = time.perf_counter() - t
        try:
            return _measure(node, Path(tmp), anchors, dynamic_fee) | {"node_start_s": start_s}
        finally:
            node.stop()


def _measure(node: ThorSolo, tmp: Path, anchors: int, dynamic_fee: bool) -> dict[str, Any]:
    log = _Log()
    included: list[dict[str, Any]] = []
    with (
        ThorClient(node.url, retries=1) as client,
        AnchorStore(tmp / "anchors.sqlite") as store,
        Anchorer(
            store,
            client,
            log,
            thor.SecretKey(ANCHOR_KEY),
            config=AnchorConfig(dynamic_fee=dynamic_fee),
        ) as anchorer,
    ):
        for i in range(anchors):
            log.publish(i + 1)
            best_before = client.best_block().number
            t0 = time.perf_counter()
            report = anchorer.step()
            submit_s = time.perf_counter() - t0
            if report.errors or not report.submitted:
                raise SystemExit(f"anchor {i + 1} was not submitted: {report}")
            steps = 1
            while True:
                report = anchorer.step()
                steps += 1
                if report.included or steps > 50:
                    break
            included_s = time.perf_counter() - t0
            row = store.get(i + 1)
            if row.state is not AnchorState.INCLUDED or row.block_number is None:
                raise SystemExit(f"anchor {i + 1} not included after {steps} steps: {row}")
            included.append(
                {
                    "anchor": row.id,
                    "block": row.block_number,
                    "blocks_to_include": row.block_number - best_before,
                    "submit_step_s": submit_s,
                    "to_included_s": included_s,
                    "steps": steps,
                    "included_at": time.perf_counter(),
                }
            )

        # drive the chain, one cheap tx a block, reading the finalized block after each
        want = {a["anchor"]: a["block"] for a in included}
        finalized_at: dict[int, tuple[int, float]] = {}
        drive_t0 = time.perf_counter()
        driven = 0
        while len(finalized_at) < len(want):
            client.send_raw(_cheap_tx(client, DRIVER_KEY))
            driven += 1
            fin = client.finalized_block().number
            now = time.perf_counter()
            for anchor_id, block in want.items():
                if anchor_id not in finalized_at and fin >= block:
                    finalized_at[anchor_id] = (client.best_block().number, now)
            if driven > 5000:
                raise SystemExit("the node did not finalize within 5000 blocks")
        drive_s = time.perf_counter() - drive_t0
        t0 = time.perf_counter()
        report = anchorer.step()
        notice_step_s = time.perf_counter() - t0
        if sorted(report.finalized) != sorted(want):
            raise SystemExit(f"the anchorer did not mark all final: {report}")

    rows = []
    for a in included:
        best_at_final, t_final = finalized_at[a["anchor"]]
        gap = FinalityGap(a["block"], 0, a["block"])
        rows.append(
            a
            | {
                "blocks_to_final": best_at_final - a["block"],
                "predicted_blocks_to_final": gap.expected_at_best - a["block"],
                "to_final_driven_s": t_final - a["included_at"],
                "to_final_at_10s_blocks_s": (best_at_final - a["block"]) * BLOCK_INTERVAL_S,
            }
        )
    for r in rows:
        r.pop("included_at")
    return {
        "anchors": anchors,
        "tx_type": "0x51" if dynamic_fee else "legacy",
        "per_anchor": rows,
        "blocks_to_include": _summary([r["blocks_to_include"] for r in rows]),
        "submit_step_s": _summary([r["submit_step_s"] for r in rows]),
        "to_included_s": _summary([r["to_included_s"] for r in rows]),
        "blocks_to_final": _summary([r["blocks_to_final"] for r in rows]),
        "to_final_driven_s": _summary([r["to_final_driven_s"] for r in rows]),
        "to_final_at_10s_blocks_s": _summary([r["to_final_at_10s_blocks_s"] for r in rows]),
        "prediction_exact": all(
            r["blocks_to_final"] == r["predicted_blocks_to_final"] for r in rows
        ),
        "driven_blocks": driven,
        "drive_s": drive_s,
        "drive_ms_per_block": 1000 * drive_s / driven,
        "finalize_step_s": notice_step_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--anchors", type=int, default=10)
    ap.add_argument("--legacy", action="store_true", help="legacy txs instead of 0x51")
    ap.add_argument("--json", type=Path, help="write the full result here")
    args = ap.parse_args()
    result = run(args.anchors, not args.legacy)

    def line(name: str, key: str, unit: str, scale: float = 1.0) -> None:
        s = result[key]
        print(
            f"{name:<34} median {s['median'] * scale:9.2f} {unit:<3} "
            f"min {s['min'] * scale:9.2f}  max {s['max'] * scale:9.2f}"
        )

    print(f"thor solo --on-demand, {result['anchors']} anchors, {result['tx_type']} txs")
    line("submit step", "submit_step_s", "ms", 1000)
    line("submit -> included", "to_included_s", "ms", 1000)
    line("submit -> included", "blocks_to_include", "blk")
    line("included -> finalized", "blocks_to_final", "blk")
    line("included -> finalized (driven)", "to_final_driven_s", "s")
    line("included -> finalized (10 s blocks)", "to_final_at_10s_blocks_s", "s")
    print(
        f"driven {result['driven_blocks']} blocks in {result['drive_s']:.2f} s "
        f"({result['drive_ms_per_block']:.2f} ms/block); the step that saw every anchor final "
        f"took {result['finalize_step_s'] * 1000:.1f} ms; finality at the predicted block: "
        f"{result['prediction_exact']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
