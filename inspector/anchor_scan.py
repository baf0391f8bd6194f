"""``fieldproof verify --all-anchors``: every anchor of the bundle's log that the chain holds in a
block range, checked against every tree the verification knows (docs/bundle.md §5 step 4b).

A bundle lists the anchors its exporter chose; an operator who showed someone else another
tree of the same size may have anchored that one too. So the inspector asks the chain itself,
through each node given (:meth:`anchor.chain_reader.ChainReader.scan_anchors`: a bounded read of
every block, since neither Thor nor EVM chains index what an anchor carries), and compares each
anchored (size, root) with what is known for that size: the bundle's signed checkpoints, the
known and outside checkpoints, and any mirror at least that large (its tiles give the root of
every smaller tree; :class:`inspector.split_view.TreeViews`).

* An anchored root that differs from a signed one for the same size is ``anchor_conflict``: an
  error when its sender also sent an anchor of this bundle that checked out (the operator's
  anchoring account anchored two histories), a warning otherwise (an anchor record carries no
  log signature: a stranger can anchor any root under any origin, so it proves nothing alone).
* Anchors at sizes nothing here can check are counted (``anchors_not_checked``, info).
* A scan cut short by its block budget is ``anchor_scan_incomplete`` (a warning) with the block
  to go on from; nodes that find different anchors are ``node_disagreement``.
* Every node answer is hostile (:meth:`anchor.chain_reader.ChainReader.scan_anchors`): a node
  that stops answering mid-scan, answers what no node should (an answer over the size bound,
  a block that is not the one asked for or not the child of the one before, a malformed
  transaction), or is slower than the scan's time budget ends its scan there, with what it
  read kept: ``anchor_scan_incomplete`` naming the node, the block and why. The scan judged is
  the one of the node that read furthest.

The block range is ``--from-block`` (default: the lowest block of the bundle's anchors on this
chain, as verified, else as claimed, else 0) up to ``--to-block`` (default: the head), at most
``--scan-blocks`` blocks per verification (default 10,000: a day of Thor mainnet, one request
per block)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from anchor.chain_reader import (
    DEFAULT_SCAN_BLOCKS,
    DEFAULT_SCAN_SECONDS,
    AnchorScan,
    ChainAnchor,
    ChainNodeUnavailable,
    make_reader,
)
from fieldproof.errors import FieldproofError
from inspector.findings import FindingCode
from inspector.results import CheckpointSummary, Findings
from inspector.split_view import TreeViews

__all__ = ["AllAnchorsCheck", "ScanRange", "check_all_anchors", "default_from_block"]


@dataclass(frozen=True)
class ScanRange:
    """Which blocks ``--all-anchors`` reads: ``from_block`` None is the default above;
    ``max_seconds``: how long one node's scan may take (None: no limit)."""

    from_block: int | None = None
    to_block: int | None = None
    max_blocks: int = DEFAULT_SCAN_BLOCKS
    max_seconds: float | None = DEFAULT_SCAN_SECONDS


@dataclass
class AllAnchorsCheck:
    """What the scan found, per anchor: ``status`` ``matches`` (every known root of that size
    is the anchored one), ``conflict``, or ``unchecked`` (no root known for that size).
    ``detail``: why the judged node's scan stopped short of its block budget (a node that
    stopped answering or answered what no node should, the time budget), else empty."""

    chain: str
    nodes: list[str]
    first_block: int = 0
    last_block: int = -1
    head: int | None = None
    complete: bool = False
    anchors: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def default_from_block(cps: Sequence[CheckpointSummary], chain: str) -> int:
    """The lowest block of the bundle's anchors on ``chain``: as the nodes answered where
    they were verified (a bundle's claim could point past earlier anchors), else as claimed;
    0 without any."""
    verified = [a.block_number for c in cps for ac in c.anchors if ac.ref.chain == chain
                for a in ac.answers if a.ok and a.block_number is not None]
    blocks = verified or [ac.ref.block_number for c in cps for ac in c.anchors
                          if ac.ref.chain == chain]
    return max(0, min(blocks)) if blocks else 0


def _scan(chain: str, url: str, network: str | None, origin: str, first: int, rng: ScanRange,
          timeout: float) -> AnchorScan:
    reader = make_reader(chain, url, network=network, timeout=timeout)
    try:
        return reader.scan_anchors(origin, first, rng.to_block, max_blocks=rng.max_blocks,
                                   max_seconds=rng.max_seconds)
    finally:
        reader.close()


def check_all_anchors(
    chain: str, nodes: Sequence[str], origin: str, cps: Sequence[CheckpointSummary],
    views: TreeViews, rng: ScanRange, timeout: float, out: Findings,
) -> AllAnchorsCheck:
    """Scan ``chain`` through every node for anchors of ``origin`` and judge each one."""
    check = AllAnchorsCheck(chain, list(nodes))
    first = rng.from_block if rng.from_block is not None else default_from_block(cps, chain)
    # the network the bundle's anchors name: a node of another one is refused, not scanned
    network = next((a.ref.network for c in cps for a in c.anchors if a.ref.chain == chain), None)
    scans: list[tuple[str, AnchorScan]] = []
    for url in nodes:
        try:
            scans.append((url, _scan(chain, url, network, origin, first, rng, timeout)))
        except ChainNodeUnavailable as exc:
            out.add(FindingCode.NODE_UNREACHABLE,
                    f"--all-anchors: node {url} could not be asked ({str(exc)[:300]}); the "
                    "scan for this log's anchors is incomplete")
        except (FieldproofError, ValueError) as exc:
            out.add(FindingCode.ANCHOR_SCAN_INCOMPLETE,
                    f"--all-anchors: node {url} could not be scanned: {str(exc)[:300]}")
    if not scans:
        check.detail = "no node could be scanned"
        return check
    for other, s in scans:
        if s.stopped:
            read = (f"read blocks {s.first_block}–{s.last_block}"
                    if s.last_block >= s.first_block else "read no block")
            out.add(FindingCode.ANCHOR_SCAN_INCOMPLETE,
                    f"--all-anchors: the scan through node {other} stopped at block "
                    f"{s.last_block + 1} ({read} of {s.first_block}–"
                    f"{rng.to_block if rng.to_block is not None else s.head}): {s.stopped}. "
                    f"Run again with --from-block {s.last_block + 1}, or ask another node")
    url, scan = max(scans, key=lambda us: us[1].last_block)  # the first of the furthest
    check.first_block, check.last_block, check.head = scan.first_block, scan.last_block, scan.head
    check.complete = scan.complete
    check.detail = scan.stopped  # why a scan stopped before its block budget, else ""
    found = {(a.tx_id, a.record.tree_size, a.record.root_hash) for a in scan.anchors}
    for other, s in scans:
        if s is scan:
            continue
        theirs = {(a.tx_id, a.record.tree_size, a.record.root_hash) for a in s.anchors}
        if (s.first_block, s.last_block) == (scan.first_block, scan.last_block) and \
                theirs != found:
            out.add(FindingCode.NODE_DISAGREEMENT,
                    f"--all-anchors: nodes {url} and {other} find different anchors of this "
                    f"log in blocks {scan.first_block}–{scan.last_block} ({len(found)} vs "
                    f"{len(theirs)}): one of them hides or invents transactions")
    for tx_id, why in scan.unreadable:
        out.add(FindingCode.ANCHOR_SCAN_INCOMPLETE,
                f"--all-anchors: tx {tx_id} carries a record of this log but cannot be read "
                f"back from {url}: {why}")
    if not scan.complete and not scan.stopped:
        out.add(FindingCode.ANCHOR_SCAN_INCOMPLETE,
                f"--all-anchors read blocks {scan.first_block}–{scan.last_block} of "
                f"{scan.first_block}–{rng.to_block if rng.to_block is not None else scan.head} "
                f"(at most {rng.max_blocks:,} per run): run again with --from-block "
                f"{scan.last_block + 1} to check the rest")
    ours = {a.sender.lower() for c in cps for ac in c.anchors for a in ac.answers
            if a.ok and a.sender}
    unchecked = 0
    for a in sorted(scan.anchors, key=lambda a: (a.block_number, a.tx_id)):
        status = _judge(a, views, ours, out)
        unchecked += status == "unchecked"
        check.anchors.append({
            "tx": a.tx_id, "sender": a.sender, "block_number": a.block_number,
            "block_id": a.block_id, "block_time": a.block_timestamp, "final": a.finalized,
            "size": a.record.tree_size, "root": a.record.root_hash.hex(), "status": status})
    if unchecked:
        out.add(FindingCode.ANCHORS_NOT_CHECKED,
                f"--all-anchors: {unchecked} anchor(s) of this log on {chain} are for tree "
                "sizes no checkpoint or mirror here knows, so their roots were not compared: "
                "pass a mirror of the log (--mirror) to check every one", severity="info")
    return check


def _judge(a: ChainAnchor, views: TreeViews, ours: set[str], out: Findings) -> str:
    size, root = a.record.tree_size, a.record.root_hash
    known = views.roots_for(size)
    if not known:
        return "unchecked"
    differ = [(src, r) for src, r in known if r != root]
    if not differ:
        return "matches"
    operator = a.sender.lower() in ours
    names = "; ".join(f"{src} signs root {r.hex()}" for src, r in differ)
    final = "" if a.finalized else " (its block is not final yet)"
    out.add(FindingCode.ANCHOR_CONFLICT,
            f"{a.chain} tx {a.tx_id} in block {a.block_number}{final}, sent by {a.sender}, "
            f"anchors root {root.hex()} for {size} entries of this log, but {names}. "
            + ("The same account sent this bundle's verified anchors: the operator anchored "
               "two histories (a split view)" if operator else
               "Its sender sent no anchor of this bundle, and a record carries no log "
               "signature, so this alone proves no fork; ask the operator whose it is"),
            severity="error" if operator else "warning")
    return "conflict"
