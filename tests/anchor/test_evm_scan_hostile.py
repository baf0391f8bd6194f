"""``verify --all-anchors`` through a hostile EVM JSON-RPC node: every answer of the block scan
is bounded and checked, and each lie ends in a clear ``anchor_scan_incomplete`` finding naming
the node, the block and why — never a traceback, a hang or unbounded memory.

:class:`ScriptedNode` is a small JSON-RPC double serving a scripted chain, because a real dev
chain (anvil, tests/integration/test_verify_all_anchors.py) cannot be made to lie: it answers
``eth_getBlockByNumber`` only with its own blocks. It serves what the reader asks
(``eth_chainId``, ``eth_blockNumber``, ``eth_getBlockByNumber``, ``eth_getTransactionByHash``,
``eth_getTransactionReceipt``), with knobs to lie: ``lie(method, params, result)`` returns
another result (or :data:`HANG_UP`, or a :class:`Raw` body), ``pad`` appends spaces, ``trickle_s``
sends the answer 64 bytes at a time, ``no_length`` omits ``Content-Length``. One honest scan
shows the double is scanned as a node is."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from anchor.chain_reader import MAX_NODE_ANSWER_BYTES, AnchorScan, NodeAnswerError, NodeTooSlow
from anchor.evm_reader import EvmChainReader
from fieldproof.formats.anchor_record import AnchorRecord
from inspector.anchor_scan import ScanRange, check_all_anchors
from inspector.findings import FindingCode
from inspector.results import Findings
from inspector.split_view import TreeViews

ORIGIN = "farm.example/fieldproof/log/hostile-evm"
CHAIN_ID = 31337
ANCHOR_BLOCK = 5
LAST = 12
SENDER = "0x" + "5a" * 20
HANG_UP = object()


@dataclass(frozen=True)
class Raw:
    text: str


def h32(*parts: object) -> str:
    return "0x" + hashlib.sha256(repr(parts).encode()).hexdigest()


class ScriptedNode:
    """Blocks 0–12 of a made-up chain; block 5 holds an anchor of ORIGIN and a plain call."""

    def __init__(self) -> None:
        record = AnchorRecord.for_checkpoint(ORIGIN, 42, hashlib.sha256(b"root").digest())
        self.blocks: list[dict[str, Any]] = []
        self.txs: dict[str, dict[str, Any]] = {}
        for n in range(LAST + 1):
            block: dict[str, Any] = {"number": hex(n), "hash": h32("block", n),
                     "parentHash": self.blocks[-1]["hash"] if n else "0x" + "00" * 32,
                     "timestamp": hex(1_700_000_000 + 12 * n), "gasLimit": hex(30_000_000),
                     "gasUsed": "0x0", "miner": "0x" + "00" * 20, "extraData": "0x",
                     "transactions": []}  # fmt: skip
            inputs = ["0x" + record.encode().hex(), "0x"] if n == ANCHOR_BLOCK else []
            for i, data in enumerate(inputs):
                tx: dict[str, Any] = {
                    "hash": h32("tx", n, i), "from": SENDER, "to": SENDER, "input": data,
                    "blockHash": block["hash"], "blockNumber": hex(n),
                    "transactionIndex": hex(i), "value": "0x0", "gas": hex(50_000),
                    "gasPrice": hex(10**9), "nonce": hex(i), "type": "0x0", "v": "0x1b",
                    "r": h32("r", n, i), "s": h32("s", n, i), "chainId": hex(CHAIN_ID)}
                self.txs[tx["hash"]] = tx
                block["transactions"].append(tx)
            self.blocks.append(block)
        self.head = LAST
        self.lie: Callable[[str, list[Any], Any], Any] | None = None
        self.pad = 0
        self.trickle_s = 0.0
        self.no_length = False
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def receipt(self, tx: dict[str, Any]) -> dict[str, Any]:
        return {"transactionHash": tx["hash"], "blockHash": tx["blockHash"],
                "blockNumber": tx["blockNumber"], "transactionIndex": tx["transactionIndex"],
                "from": tx["from"], "to": tx["to"], "status": "0x1", "gasUsed": hex(30_000),
                "cumulativeGasUsed": hex(30_000), "effectiveGasPrice": tx["gasPrice"],
                "logs": [], "logsBloom": "0x" + "00" * 256, "contractAddress": None,
                "type": "0x0"}  # fmt: skip

    def answer(self, method: str, params: list[Any]) -> Any:
        if method == "eth_chainId":
            return hex(CHAIN_ID)
        if method == "eth_blockNumber":
            return hex(self.head)
        if method == "eth_getBlockByNumber":
            tag, full = params
            n = {"latest": self.head, "finalized": self.head - 2}.get(tag)
            n = int(tag, 16) if n is None else n
            if n >= len(self.blocks):
                return None
            b = self.blocks[n]
            return b if full else {**b, "transactions": [t["hash"] for t in b["transactions"]]}
        if method == "eth_getTransactionByHash":
            return self.txs.get(params[0])
        if method == "eth_getTransactionReceipt":
            tx = self.txs.get(params[0])
            return None if tx is None else self.receipt(tx)
        raise KeyError(method)

    def handle(self, body: bytes) -> Any:
        req = json.loads(body)
        try:
            result = self.answer(req["method"], req["params"])
        except KeyError:
            return {"jsonrpc": "2.0", "id": req["id"],
                    "error": {"code": -32601, "message": "the method does not exist"}}
        if self.lie is not None:
            result = self.lie(req["method"], req["params"], result)
        if result is HANG_UP or isinstance(result, Raw):
            return result
        return {"jsonrpc": "2.0", "id": req["id"], "result": result}


def _handler(node: ScriptedNode) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            answer = node.handle(body)
            if answer is HANG_UP:
                self.close_connection = True
                return
            text = answer.text if isinstance(answer, Raw) else json.dumps(answer)
            data = (text + " " * node.pad).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if node.no_length:
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for i in range(0, len(data), 64 if node.trickle_s else len(data) or 1):
                    self.wfile.write(data[i : i + (64 if node.trickle_s else len(data))])
                    self.wfile.flush()
                    time.sleep(node.trickle_s)
            except ConnectionError:
                pass  # the reader gave up on it: what the knob is for

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def node() -> Iterator[ScriptedNode]:
    n = ScriptedNode()
    yield n
    n.server.shutdown()
    n.server.server_close()


WHOLE = ScanRange(0, None, 1000)


def scan(
    node: ScriptedNode, rng: ScanRange = WHOLE, timeout: float = 5.0
) -> tuple[AnchorScan, list[str]]:
    """The scan through the reader, and the findings --all-anchors makes of it."""
    reader = EvmChainReader(node.url, chain_id=CHAIN_ID, confirmations=2, timeout_s=timeout)
    got = reader.scan_anchors(ORIGIN, rng.from_block or 0, rng.to_block,
                              max_blocks=rng.max_blocks, max_seconds=rng.max_seconds)
    out = Findings()
    check_all_anchors("evm", [node.url], ORIGIN, [], TreeViews(), rng, timeout, out)
    return got, [f"{f.code}: {f.message}" for f in out.items
                 if f.code == FindingCode.ANCHOR_SCAN_INCOMPLETE]


def test_an_honest_double_is_scanned_whole(node: ScriptedNode) -> None:
    got, incomplete = scan(node)
    assert (got.complete, got.stopped, got.last_block) == (True, "", LAST)
    assert [(a.block_number, a.record.tree_size, a.finalized) for a in got.anchors] == \
        [(ANCHOR_BLOCK, 42, True)]
    assert got.transactions_seen == 2 and got.unreadable == [] and incomplete == []


def at_block(number: int, change: Callable[[dict[str, Any]], Any]) -> Callable[..., Any]:
    """A ``lie`` that changes the full-transaction answer for block ``number`` only."""
    def lie(method: str, params: list[Any], result: Any) -> Any:
        if method == "eth_getBlockByNumber" and params == [hex(number), True]:
            return change(result)
        return result
    return lie


def with_(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda b: {**b, key: value}


def first_tx(key: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda b: {**b, "transactions": [{**b["transactions"][0], key: value},
                                            *b["transactions"][1:]]}


CASES: list[tuple[str, Callable[[ScriptedNode], Callable[[dict[str, Any]], Any]], str]] = [
    ("not an object", lambda n: lambda b: [b], "the block is not a JSON object"),
    ("null", lambda n: lambda b: None, "the node has no block 5, yet said its head is 12"),
    ("transactions not a list", lambda n: with_("transactions", "0x"),
     "transactions is not a list"),
    ("hashes, not transactions", lambda n: lambda b: {
        **b, "transactions": [t["hash"] for t in b["transactions"]]},
     "transaction 0 is not a JSON object"),
    ("input not hex", lambda n: first_tx("input", "0x" + "zz" * 78), "input is not 0x-hex"),
    ("input not a string", lambda n: first_tx("input", 78), "input is not 0x-hex"),
    ("hash not 32 bytes", lambda n: first_tx("hash", "0x1234"), "is not a 32-byte hash"),
    ("number not a quantity", lambda n: with_("number", 5), "number is not a 0x-hex quantity"),
    ("an earlier block (backwards)", lambda n: lambda b: n.blocks[3],
     "answered block 3 for block 5"),
    ("the block before again (repeat)", lambda n: lambda b: n.blocks[4],
     "answered block 4 for block 5"),
    ("the right number, another parent", lambda n: with_("parentHash", h32("elsewhere")),
     "not block 4"),
    ("20,000 transactions", lambda n: with_("transactions", [{}] * 20_000),
     "lists 20,000 transactions, more than any block holds"),
]


@pytest.mark.parametrize(("lie", "why"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_lying_block_ends_the_scan_with_a_finding(
    node: ScriptedNode, lie: Callable[[ScriptedNode], Callable[[dict[str, Any]], Any]], why: str
) -> None:
    node.lie = at_block(ANCHOR_BLOCK, lie(node))
    got, incomplete = scan(node)
    assert not got.complete and got.last_block == ANCHOR_BLOCK - 1, got
    assert got.anchors == [] and why in got.stopped, got.stopped
    assert len(incomplete) == 1, incomplete
    assert f"node {node.url} stopped at block {ANCHOR_BLOCK}" in incomplete[0]
    assert why in incomplete[0] and f"--from-block {ANCHOR_BLOCK}" in incomplete[0]


def test_an_error_or_not_json_mid_scan(node: ScriptedNode) -> None:
    node.lie = lambda m, p, r: Raw('{"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, '
                                   '"message": "header not found"}}') \
        if p == [hex(3), True] else r
    got, incomplete = scan(node)
    assert got.last_block == 2 and "header not found" in got.stopped and len(incomplete) == 1
    node.lie = lambda m, p, r: Raw("<html>busy</html>") if p == [hex(3), True] else r
    got, incomplete = scan(node)
    assert got.last_block == 2 and "answered no JSON-RPC response" in got.stopped, got.stopped
    assert len(incomplete) == 1


def test_a_head_far_beyond_or_below_the_range(node: ScriptedNode) -> None:
    node.head = 2**40
    got, incomplete = scan(node, ScanRange(0, None, 100))
    assert got.head == 2**40 and got.last_block == LAST and not got.complete
    assert f"the node has no block {LAST + 1}, yet said its head is {2**40}" in got.stopped
    assert len(incomplete) == 1 and f"--from-block {LAST + 1}" in incomplete[0]
    node.head = LAST
    got, incomplete = scan(node, ScanRange(20, None, 100))
    assert (got.complete, got.last_block) == (False, 19) and "below block 20" in got.stopped
    assert len(incomplete) == 1 and "read no block" in incomplete[0]


@pytest.mark.parametrize("declared", [True, False], ids=["Content-Length", "until close"])
def test_an_answer_over_the_size_bound_is_not_read(node: ScriptedNode, declared: bool) -> None:
    node.lie = at_block(0, lambda b: b)
    node.no_length = not declared
    node.pad = MAX_NODE_ANSWER_BYTES
    reader = EvmChainReader(node.url, timeout_s=5.0)
    with pytest.raises(NodeAnswerError, match="announces a" if declared else "answered over") as e:
        reader.scan_anchors(ORIGIN, 0)  # the very first answer: the scan cannot start
    assert f"{MAX_NODE_ANSWER_BYTES:,} bytes" in str(e.value)
    out = Findings()
    check_all_anchors("evm", [node.url], ORIGIN, [], TreeViews(), WHOLE, 5.0, out)
    assert [f.code for f in out.items] == [FindingCode.ANCHOR_SCAN_INCOMPLETE]
    assert "could not be scanned" in out.items[0].message


def test_a_node_that_hangs_up_mid_scan_keeps_what_was_read(node: ScriptedNode) -> None:
    node.lie = at_block(ANCHOR_BLOCK + 2, lambda b: HANG_UP)
    got, incomplete = scan(node)
    assert got.last_block == ANCHOR_BLOCK + 1 and "did not answer" in got.stopped, got.stopped
    assert [a.block_number for a in got.anchors] == [ANCHOR_BLOCK]
    assert len(incomplete) == 1 and f"--from-block {ANCHOR_BLOCK + 2}" in incomplete[0]


def test_a_malformed_read_back_is_unreadable(node: ScriptedNode) -> None:
    """The candidate's receipt is not an object, then names another transaction: that tx is
    unreadable (web3 parses read-backs: what it raises is that tx's error), the scan goes on."""
    anchor_tx = node.blocks[ANCHOR_BLOCK]["transactions"][0]["hash"]
    for receipt in ("nonsense", {**node.receipt(node.txs[anchor_tx]),
                                 "transactionHash": h32("other")}):
        node.lie = lambda m, p, r, x=receipt: x if m == "eth_getTransactionReceipt" else r
        got, incomplete = scan(node)
        assert got.complete and got.anchors == [] and [u[0] for u in got.unreadable] == \
            [anchor_tx]
        assert len(incomplete) == 1 and anchor_tx in incomplete[0]


def test_a_trickled_answer_is_cut_off(node: ScriptedNode) -> None:
    """Each 64-byte piece comes well within requests' 1 s read timeout, so only the reader's
    own per-answer deadline stops it (the 3 KB answer would take 5 s at this pace)."""
    node.trickle_s, node.pad = 0.1, 2500
    reader = EvmChainReader(node.url, timeout_s=1.0)
    with pytest.raises(NodeTooSlow, match="took over 1 s to answer"):
        reader.scan_anchors(ORIGIN, 0)
    node.trickle_s, node.pad = 0.0, 0

    def slow_at_block_2(method: str, params: list[Any], result: Any) -> Any:
        slow = params == [hex(2), True]
        node.trickle_s, node.pad = (0.1, 2500) if slow else (0.0, 0)
        return result

    node.lie = slow_at_block_2
    got, incomplete = scan(node, timeout=1.0)
    assert got.last_block == 1 and "took over 1 s to answer" in got.stopped, got.stopped
    assert len(incomplete) == 1 and "stopped at block 2" in incomplete[0]
