"""``verify --all-anchors`` through a hostile VeChainThor node: every answer of the block scan
is bounded and checked, and each lie ends in a clear ``anchor_scan_incomplete`` finding naming
the node, the block and why — never a traceback, a hang or unbounded memory.

A real node (thor solo, tests/integration/test_verify_all_anchors.py) cannot be made to lie, so
these run on the double tests/support/thornode.py with its hostile knobs (``block_answer``,
``pad_expanded``, ``trickle_s``), one honest scan first to show the double is scanned as a node
is."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from anchor import thor
from anchor.chain_reader import MAX_NODE_ANSWER_BYTES, AnchorScan
from anchor.thor_reader import ThorChainReader
from fieldproof.formats.anchor_record import AnchorRecord
from inspector.anchor_scan import ScanRange, check_all_anchors
from inspector.findings import FindingCode
from inspector.results import Findings
from inspector.split_view import TreeViews
from tests.support.thornode import HANG_UP, RawAnswer, ThorNode, funded

ORIGIN = "farm.example/fieldproof/log/hostile"
KEY = bytes.fromhex("4d3c1b2a" * 8)
ANCHOR_BLOCK = 5
LAST = 12


@pytest.fixture
def node() -> Iterator[ThorNode]:
    """Blocks 0–12; block 5 holds an anchor of ORIGIN and an ordinary transfer."""
    with ThorNode(energy=funded(thor.address_of(KEY))) as n:
        n.mine(ANCHOR_BLOCK - 1)
        record = AnchorRecord.for_checkpoint(ORIGIN, 42, hashlib.sha256(b"root").digest())
        me = thor.address_of(KEY)
        ids = []
        for clauses in ((thor.Clause(me, 0, record.encode()),), (thor.Clause(me, 0, b""),)):
            tx = thor.Transaction(
                chain_tag=n.chain_tag, block_ref=bytes.fromhex(n.block_id(ANCHOR_BLOCK - 1)[2:18]),
                expiration=720, clauses=clauses, gas=thor.intrinsic_gas(clauses) + 10_000,
                gas_price_coef=0, depends_on=None, nonce=secrets.randbits(64))
            ids.append(n.submit(thor.sign_transaction(tx, KEY).encode()))
        n.mine(LAST - ANCHOR_BLOCK + 1)
        assert [n.included_in(i) for i in ids] == [ANCHOR_BLOCK] * 2 and n.best_number == LAST
        yield n


WHOLE = ScanRange(0, None, 1000)


def scan(
    node: ThorNode, rng: ScanRange = WHOLE, timeout: float = 5.0
) -> tuple[AnchorScan, list[str]]:
    """The scan through the reader, and the findings --all-anchors makes of it."""
    reader = ThorChainReader(node.url, timeout=timeout)
    try:
        got = reader.scan_anchors(ORIGIN, rng.from_block or 0, rng.to_block,
                                  max_blocks=rng.max_blocks, max_seconds=rng.max_seconds)
    finally:
        reader.close()
    out = Findings()
    check_all_anchors("thor", [node.url], ORIGIN, [], TreeViews(), rng, timeout, out)
    return got, [f"{f.code}: {f.message}" for f in out.items
                 if f.code == FindingCode.ANCHOR_SCAN_INCOMPLETE]


def test_an_honest_double_is_scanned_whole(node: ThorNode) -> None:
    got, incomplete = scan(node)
    assert (got.complete, got.stopped, got.last_block) == (True, "", LAST)
    assert [(a.block_number, a.record.tree_size) for a in got.anchors] == [(ANCHOR_BLOCK, 42)]
    assert got.transactions_seen == 2 and incomplete == []


def lie_at(number: int, change: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    """A ``block_answer`` that changes the expanded answer for block ``number`` only."""
    def answer(revision: str, expanded: bool, block: Any) -> Any:
        if expanded and revision == str(number) and isinstance(block, dict):
            return change(block)
        return block
    return answer


def with_(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda b: {**b, key: value}


def first_tx(change: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda b: {**b, "transactions": [change(b["transactions"][0]),
                                            *b["transactions"][1:]]}


def other_block(node: ThorNode, number: int) -> Callable[[dict[str, Any]], Any]:
    return lambda b: node._block_json(node._blocks[number], True)


CASES: list[tuple[str, Callable[[ThorNode], Callable[[dict[str, Any]], Any]], str]] = [
    ("not an object", lambda n: lambda b: [b], "the block is not a JSON object"),
    ("null", lambda n: lambda b: None, "the node has no block 5, yet said its best block is 12"),
    ("transactions not a list", lambda n: with_("transactions", {"0": 1}),
     "transactions is not a list"),
    ("a transaction not an object", lambda n: with_("transactions", ["0x" + "ab" * 32]),
     "transaction 0 is not a JSON object"),
    ("clause data not hex", lambda n: first_tx(
        lambda t: {**t, "clauses": [{**t["clauses"][0], "data": "0x" + "zz" * 78}]}),
     "has no 0x-hex data"),
    ("clause data not a string", lambda n: first_tx(
        lambda t: {**t, "clauses": [{**t["clauses"][0], "data": 78}]}), "has no 0x-hex data"),
    ("clauses not a list", lambda n: first_tx(lambda t: {**t, "clauses": "0x"}),
     "has no clause list"),
    ("tx id not an id", lambda n: first_tx(lambda t: {**t, "id": 7}), "is not a 0x-prefixed"),
    ("number as a string", lambda n: with_("number", "5"), "answered block '5' for block 5"),
    ("an earlier block (backwards)", lambda n: other_block(n, 3),
     "answered block 3 for block 5"),
    ("the block before again (repeat)", lambda n: other_block(n, 4),
     "answered block 4 for block 5"),
    ("the right number, another parent", lambda n: with_("parentID", "0x" + "00" * 32),
     "not block 4"),
    ("an id of another number", lambda n: with_("id", "0x00000009" + "11" * 28),
     "does not start with its number"),
    ("20,000 transactions", lambda n: with_("transactions", [{}] * 20_000),
     "lists 20,000 transactions, more than any block holds"),
]


@pytest.mark.parametrize(("lie", "why"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_lying_block_ends_the_scan_with_a_finding(
    node: ThorNode, lie: Callable[[ThorNode], Callable[[dict[str, Any]], Any]], why: str
) -> None:
    node.block_answer = lie_at(ANCHOR_BLOCK, lie(node))
    got, incomplete = scan(node)
    assert not got.complete and got.last_block == ANCHOR_BLOCK - 1, got
    assert got.anchors == [] and why in got.stopped, got.stopped
    assert len(incomplete) == 1, incomplete
    assert f"node {node.url} stopped at block {ANCHOR_BLOCK}" in incomplete[0]
    assert why in incomplete[0] and f"--from-block {ANCHOR_BLOCK}" in incomplete[0]


def test_a_best_block_far_beyond_what_the_node_has(node: ThorNode) -> None:
    """A node claiming a head of 2^31 makes the scan ask for blocks it does not have: the scan
    stops at the first, within its block budget, and says so."""
    def answer(revision: str, expanded: bool, block: Any) -> Any:
        return {**block, "number": 2**31} if revision == "best" else block
    node.block_answer = answer
    got, incomplete = scan(node, ScanRange(0, None, 100))
    assert got.head == 2**31 and got.last_block == LAST and not got.complete
    assert f"the node has no block {LAST + 1}, yet said its best block is {2**31}" in got.stopped
    assert len(incomplete) == 1 and f"--from-block {LAST + 1}" in incomplete[0]


def test_a_head_below_the_range(node: ThorNode) -> None:
    got, incomplete = scan(node, ScanRange(20, None, 100))
    assert (got.complete, got.last_block) == (False, 19)
    assert "best block is 12, below block 20" in got.stopped
    assert len(incomplete) == 1 and "read no block" in incomplete[0]


@pytest.mark.parametrize("declared", [True, False], ids=["Content-Length", "until close"])
def test_an_answer_over_the_size_bound_is_not_read(node: ThorNode, declared: bool) -> None:
    """Valid JSON padded past the bound: refused by its length when it says it, else read no
    further than the bound."""
    node.pad_expanded = MAX_NODE_ANSWER_BYTES
    node.no_length = not declared
    got, incomplete = scan(node)
    said = "announces a" if declared else "answered over"
    assert got.last_block == -1 and said in got.stopped, got.stopped
    assert f"{MAX_NODE_ANSWER_BYTES:,} bytes" in got.stopped
    assert len(incomplete) == 1 and said in incomplete[0]


def test_not_json_and_a_node_that_hangs_up_mid_scan(node: ThorNode) -> None:
    node.block_answer = lie_at(ANCHOR_BLOCK, lambda b: RawAnswer("<html>busy</html>"))
    got, incomplete = scan(node)
    assert got.last_block == ANCHOR_BLOCK - 1 and "block 5" in got.stopped and incomplete
    node.block_answer = lie_at(ANCHOR_BLOCK + 2, lambda b: HANG_UP)
    got, incomplete = scan(node)
    assert got.last_block == ANCHOR_BLOCK + 1 and "is unreachable" in got.stopped
    # what was read is kept: the anchor in block 5 was found and read back
    assert [a.block_number for a in got.anchors] == [ANCHOR_BLOCK]
    assert len(incomplete) == 1 and f"--from-block {ANCHOR_BLOCK + 2}" in incomplete[0]


def test_a_trickled_answer_is_cut_off(node: ThorNode) -> None:
    """Each 64-byte piece comes well within httpx's 1 s read timeout, so only the reader's own
    per-answer deadline stops it (the 3 KB answer would take 5 s at this pace)."""
    node.trickle_s = 0.1
    node.pad_expanded = 2500
    got, incomplete = scan(node, timeout=1.0)
    assert got.last_block == -1 and "took over 1 s to answer" in got.stopped, got.stopped
    assert len(incomplete) == 1


def test_the_time_budget_of_a_scan(node: ThorNode) -> None:
    got, incomplete = scan(node, ScanRange(0, None, 1000, max_seconds=0.0))
    assert got.last_block == -1 and "time budget of 0 s ran out before block 0" in got.stopped
    assert len(incomplete) == 1


def test_the_report_says_why_a_node_stopped_the_scan(node: ThorNode) -> None:
    """The HTML report's scan section names the node's reason, not "its block budget"."""
    from inspector.report import _all_anchors
    from inspector.results import VerificationResult

    node.block_answer = lie_at(ANCHOR_BLOCK, lambda b: [b])
    out = Findings()
    check = check_all_anchors("thor", [node.url], ORIGIN, [], TreeViews(), WHOLE, 5.0, out)
    html = _all_anchors(VerificationResult(all_anchors=check.to_json()))
    assert f"the scan stopped at block {ANCHOR_BLOCK - 1:,}" in html
    assert "the block is not a JSON object" in html and "its block budget" not in html
    assert f"--from-block {ANCHOR_BLOCK}" in html
