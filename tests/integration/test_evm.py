"""EVM anchoring against a real dev chain: Foundry's anvil, installed from
deploy/devchain/package-lock.json and started as its own process on a loopback port.

Every transaction is signed, sent, mined and read back through JSON-RPC; the one stand-in is
a pass-through proxy that refuses the ``finalized`` tag, as some nodes do (anvil never does).
The node mines only when a test says so (``automine=False``), so block heights and therefore
finality are exact and nothing depends on time. Reorgs come from anvil's evm_snapshot/evm_revert,
a node restart from stopping the process (it keeps its chain in a state file, not its mempool).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_typing import HexStr
from web3 import Web3

from anchor.devchain import DevChain, DevChainError, ensure_installed
from anchor.evm import (
    CheckpointConflictError,
    CheckpointRef,
    EvmAnchorer,
    EvmAnchorStore,
    EvmConfig,
    StepReport,
)
from anchor.evm_reader import (
    AnchorNotFoundError,
    ChainIdMismatchError,
    EvmConfigError,
    NotAnAnchorError,
    connect,
    read_anchor,
)
from fieldproof.formats.anchor_record import RECORD_SIZE, AnchorRecord

pytestmark = pytest.mark.integration

ORIGIN = "farm.example/fieldproof/log-1"
GWEI = 10**9

# A contract that accepts any call until someone sends it exactly one byte of calldata; from
# then on it reverts every call. Lets a test make an anchor tx revert after its gas estimate.
#   runtime: if calldatasize == 1 { sstore(0, 1) stop } if sload(0) { revert(0, 0) } stop
_TRAP_RUNTIME = "".join([
    "36", "6001", "14", "600e", "57",  # 0x00 calldatasize == 1 ? jump 0x0e
    "6000", "54", "6015", "57",        # 0x07 sload(0) != 0 ? jump 0x15
    "00",                              # 0x0d stop
    "5b", "6001", "6000", "55", "00",  # 0x0e sstore(0, 1) stop
    "5b", "6000", "6000", "fd",        # 0x15 revert(0, 0)
])
_TRAP_INIT = "601b600c600039601b6000f3" + _TRAP_RUNTIME  # codecopy the 27-byte runtime, return it


def ckpt(size: int, origin: str = ORIGIN, salt: str = "") -> CheckpointRef:
    return CheckpointRef(origin, size, hashlib.sha256(f"{salt}{size}".encode()).digest())


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[DevChain]:
    """Mines only on demand; ``finalized`` trails the head by 2 x 2 blocks."""
    with DevChain(tmp_path / "chain", automine=False, slots_in_an_epoch=2) as c:
        yield c


@pytest.fixture
def make_anchorer(tmp_path: Path) -> Iterator[Callable[..., EvmAnchorer]]:
    made: list[EvmAnchorer] = []

    def make(chain: DevChain, key_index: int = 0, db: str = "anchors.db",
             key: str | None = None, **config: Any) -> EvmAnchorer:
        cfg = EvmConfig(url=config.pop("url", chain.url),
                        chain_id=config.pop("chain_id", chain.chain_id), **config)
        a = EvmAnchorer(cfg, key or chain.private_keys[key_index], tmp_path / db)
        made.append(a)
        return a

    yield make
    for a in made:
        a.close()


def ok(report: StepReport) -> StepReport:
    assert report.error is None, report.error
    return report


def states(a: EvmAnchorer) -> list[str]:
    return [r.state for r in a.anchors()]


def finalized_height(chain: DevChain) -> int:
    return int(chain.rpc("eth_getBlockByNumber", "finalized", False)["number"], 16)


def send_plain(chain: DevChain, key: str, data: bytes, *, to: str | None = None,
               nonce: int | None = None, tip: int = GWEI, gas: int = 100_000) -> HexStr:
    """Send a transaction outside the anchorer (another user of the chain or of the key)."""
    w3 = connect(chain.url)
    acct = Account.from_key(key)
    tx: dict[str, Any] = {
        "chainId": chain.chain_id, "to": to, "value": 0, "data": data, "gas": gas,
        "nonce": w3.eth.get_transaction_count(acct.address, "pending") if nonce is None else nonce,
        "maxFeePerGas": 100 * GWEI + tip, "maxPriorityFeePerGas": tip,
    }
    if to is None:
        del tx["to"]
    return HexStr(
        "0x" + w3.eth.send_raw_transaction(acct.sign_transaction(tx).raw_transaction).hex())


# -- the dev chain itself ------------------------------------------------------------------


def test_devchain_is_a_funded_node_process_that_stops_without_orphans(tmp_path: Path) -> None:
    chain = DevChain(tmp_path / "c", chain_id=4242, accounts=3)
    with chain:
        w3 = connect(chain.url)
        assert chain.url.startswith("http://127.0.0.1:")
        assert w3.eth.chain_id == 4242
        assert len(chain.private_keys) == 3
        for key, address in zip(chain.private_keys, chain.accounts, strict=True):
            assert Account.from_key(key).address.lower() == address.lower()
            assert w3.eth.get_balance(Web3.to_checksum_address(address)) > 10**18
        assert chain.proc is not None
        pid = chain.proc.pid
    assert chain.proc is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_devchain_restart_keeps_the_chain_and_the_port(chain: DevChain) -> None:
    chain.mine(3)
    head = chain.rpc("eth_getBlockByNumber", "latest", False)
    port = chain.port
    chain.stop()
    assert not chain.running
    chain.start()
    assert chain.port == port
    assert chain.rpc("eth_getBlockByNumber", "latest", False)["hash"] == head["hash"]


def test_install_is_idempotent_and_needs_no_npm_once_done(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.delenv("FIELDPROOF_ANVIL", raising=False)
    binary = ensure_installed()
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm, no node from here on
    assert ensure_installed() == binary
    with pytest.raises(DevChainError, match=r"apt-get install nodejs npm"):
        ensure_installed(cache_dir=tmp_path / "empty-cache")

    monkeypatch.setenv("FIELDPROOF_ANVIL", str(binary))  # an anvil the operator already has
    assert ensure_installed(cache_dir=tmp_path / "empty-cache") == binary
    monkeypatch.setenv("FIELDPROOF_ANVIL", str(tmp_path / "no-such-anvil"))
    with pytest.raises(DevChainError, match="not an executable"):
        ensure_installed()


# -- anchoring -----------------------------------------------------------------------------


def test_several_checkpoints_anchor_finalize_and_read_back(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain)
    sizes = [3, 8, 21]
    for size in sizes:
        report = ok(a.step(ckpt(size)))
        assert report.submitted is not None
        assert report.submitted.tree_size == size
        chain.mine(1)
    ok(a.step())
    rows = a.anchors()
    assert [r.tree_size for r in rows] == sizes
    assert [r.nonce for r in rows] == [0, 1, 2]
    assert rows[0].block_number is not None
    assert finalized_height(chain) < rows[0].block_number
    assert states(a) == ["included"] * 3
    # An older or equal checkpoint is not anchored again.
    assert ok(a.step(ckpt(8))).submitted is None
    assert ok(a.step(ckpt(21))).submitted is None
    chain.mine(4)
    ok(a.step())
    assert states(a) == ["finalized"] * 3

    w3 = connect(chain.url)
    for row, size in zip(a.anchors(), sizes, strict=True):
        got = read_anchor(chain.url, row.tx_hash, chain_id=chain.chain_id)
        assert got.record == ckpt(size).record()
        assert got.record.matches(ORIGIN)
        assert not got.record.matches("other/log")
        assert (got.block_number, got.block_hash) == (row.block_number, row.block_hash)
        assert got.timestamp == row.block_timestamp
        assert got.finalized is True
        assert got.sender == a.sender
        tx = w3.eth.get_transaction(row.tx_hash)
        assert tx["value"] == 0
        assert tx["to"] == a.sender
        assert tx["type"] == 2
        assert len(bytes(tx["input"])) == RECORD_SIZE
        assert AnchorRecord.decode(bytes(tx["input"])).tree_size == size


def test_finalized_only_when_the_node_finalizes_the_block(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain)
    ok(a.step(ckpt(5)))
    chain.mine(1)
    ok(a.step())
    (row,) = a.anchors()
    assert row.state == "included"
    assert row.block_number is not None
    assert read_anchor(chain.url, row.tx_hash).finalized is False
    for _ in range(10):
        if finalized_height(chain) >= row.block_number:
            break
        assert states(a) == ["included"]
        chain.mine(1)
        ok(a.step())
    else:
        pytest.fail("the dev chain never finalized the block")
    assert states(a) == ["finalized"]
    assert read_anchor(chain.url, row.tx_hash).finalized is True


def test_confirmations_when_configured(chain: DevChain,
                                       make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain, finality="confirmations", confirmations=3)
    ok(a.step(ckpt(5)))
    chain.mine(1)  # 1 confirmation
    ok(a.step())
    chain.mine(1)  # 2
    assert ok(a.step()).changed == []
    assert states(a) == ["included"]
    chain.mine(1)  # 3
    assert ok(a.step()).changed == [(1, "included", "finalized")]
    tx_hash = a.anchors()[0].tx_hash
    assert read_anchor(chain.url, tx_hash, finality="confirmations", confirmations=3).finalized
    assert not read_anchor(chain.url, tx_hash, finality="confirmations",
                           confirmations=4).finalized


class _NoFinalizedTag:
    """A JSON-RPC pass-through to the dev chain that refuses the ``finalized`` and ``safe``
    block tags, as pre-merge nodes and some L2/sidechain nodes do. The only stand-in in this
    file: anvil itself always serves the tag, so this is how the fallback meets a refusal."""

    def __init__(self, upstream: str) -> None:
        upstream_url = upstream

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                req = json.loads(body)
                if (req.get("method") == "eth_getBlockByNumber"
                        and req["params"][0] in ("finalized", "safe")):
                    out = json.dumps({"jsonrpc": "2.0", "id": req.get("id"), "error": {
                        "code": -32602, "message": "invalid block tag"}}).encode()
                else:
                    out = httpx.post(upstream_url, content=body, timeout=10,
                                     headers={"content-type": "application/json"}).content
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_auto_finality_falls_back_to_confirmations_without_the_tag(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    proxy = _NoFinalizedTag(chain.url)
    try:
        strict = make_anchorer(chain, db="strict.db", url=proxy.url, finality="finalized")
        with pytest.raises(EvmConfigError, match="finality='confirmations'"):
            strict.step(ckpt(1))
        a = make_anchorer(chain, url=proxy.url, confirmations=2)  # finality="auto"
        ok(a.step(ckpt(1)))
        chain.mine(1)
        ok(a.step())
        assert states(a) == ["included"]
        chain.mine(1)
        ok(a.step())
        assert states(a) == ["finalized"]
        tx_hash = a.anchors()[0].tx_hash
        assert read_anchor(proxy.url, tx_hash, confirmations=2).finalized
        assert not read_anchor(proxy.url, tx_hash, confirmations=3).finalized
    finally:
        proxy.close()


def test_legacy_gas_price_on_a_chain_without_base_fee(
        tmp_path: Path, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    with DevChain(tmp_path / "berlin", automine=False, hardfork="berlin") as chain:
        assert "baseFeePerGas" not in chain.rpc("eth_getBlockByNumber", "latest", False)
        a = make_anchorer(chain, finality="confirmations", confirmations=2)
        ok(a.step(ckpt(9)))
        chain.mine(2)
        ok(a.step())
        (row,) = a.anchors()
        assert row.state == "finalized"
        tx = connect(chain.url).eth.get_transaction(row.tx_hash)
        assert tx["type"] == 0
        assert tx["gasPrice"] > 0
        assert read_anchor(chain.url, row.tx_hash, finality="confirmations",
                           confirmations=2).record.tree_size == 9
        with pytest.raises(EvmConfigError, match="no base fee"):
            make_anchorer(chain, db="b.db", fee_mode="eip1559").step(ckpt(10))


def test_anchor_to_a_configured_address(chain: DevChain,
                                        make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain, to=chain.accounts[5])
    ok(a.step(ckpt(2)))
    chain.mine(1)
    ok(a.step())
    tx = connect(chain.url).eth.get_transaction(a.anchors()[0].tx_hash)
    assert tx["to"].lower() == chain.accounts[5].lower()
    assert tx["from"] == a.sender


# -- nothing lost ------------------------------------------------------------------------


def test_node_stopped_and_restarted_keeps_pending_and_loses_nothing(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain)
    first = ok(a.step(ckpt(10))).submitted
    assert first is not None
    chain.stop()

    report = a.step(ckpt(20))
    assert report.error is not None
    assert "did not answer" in report.error
    assert report.submitted is None
    assert [(r.state, r.tx_hash) for r in a.anchors()] == [("pending", first.tx_hash)]

    chain.start()  # same chain, empty mempool: the node forgot the pending tx
    assert chain.rpc("eth_getTransactionByHash", first.tx_hash) is None
    a.close()
    a = make_anchorer(chain)  # and the anchoring process restarted too
    report = ok(a.step(ckpt(20)))
    assert chain.rpc("eth_getTransactionByHash", first.tx_hash) is not None  # same bytes again
    assert report.submitted is not None
    assert report.submitted.nonce == 1
    chain.mine(1)
    chain.mine(4)
    ok(a.step())
    rows = a.anchors()
    assert [(r.tree_size, r.state, r.nonce) for r in rows] == [(10, "finalized", 0),
                                                               (20, "finalized", 1)]
    assert rows[0].tx_hash == first.tx_hash
    assert rows[0].attempts == 1


def test_crash_after_signing_before_broadcast(chain: DevChain,
                                              make_anchorer: Callable[..., EvmAnchorer],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_anchorer(chain)
    real_insert = EvmAnchorStore.insert

    def insert_then_lose_node(self: EvmAnchorStore, *args: Any) -> int:
        anchor_id = real_insert(self, *args)
        chain.stop()  # the node goes away between the commit and the broadcast
        return anchor_id

    monkeypatch.setattr(EvmAnchorStore, "insert", insert_then_lose_node)
    report = a.step(ckpt(4))
    monkeypatch.undo()
    assert report.error is not None
    (row,) = a.anchors()
    assert row.state == "pending"
    chain.start()
    assert chain.rpc("eth_getTransactionByHash", row.tx_hash) is None
    ok(a.step())
    assert chain.rpc("eth_getTransactionByHash", row.tx_hash) is not None
    chain.mine(5)
    ok(a.step())
    assert states(a) == ["finalized"]


def test_reorg_sends_an_included_anchor_back_to_pending(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain)
    snapshot = chain.snapshot()
    ok(a.step(ckpt(6)))
    chain.mine(1)
    ok(a.step())
    (row,) = a.anchors()
    assert row.state == "included"
    chain.revert(snapshot)  # the block holding the anchor is gone
    chain.mine(1)  # an empty block takes its height
    report = ok(a.step())
    assert report.changed == [(row.id, "included", "pending")]
    assert "left the canonical chain" in (a.anchors()[0].reason or "")
    chain.mine(5)
    ok(a.step())
    (again,) = a.anchors()
    assert again.state == "finalized"
    assert again.tx_hash == row.tx_hash
    assert again.block_hash != row.block_hash


# -- fees and nonces ---------------------------------------------------------------------


def test_fee_bumped_after_waiting_blocks(chain: DevChain,
                                         make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain, bump_after_blocks=3)
    ok(a.step(ckpt(7)))
    original = a.anchors()[0]
    chain.rpc("evm_setBlockGasLimit", hex(45_000))
    # Each block, another account's transaction with a slightly higher tip (so the node's
    # tip suggestion stays below our bump) leaves too little room for ours.
    for waited in (1, 2, 3):
        send_plain(chain, chain.private_keys[1], b"", to=chain.accounts[2],
                   tip=GWEI + GWEI // 20, gas=21_000)
        chain.mine(1)
        report = ok(a.step())
        assert states(a) == ["pending"]
        assert a.anchors()[0].attempts == (1 if waited < 3 else 2), report
    replaced = a.anchors()[0]
    assert replaced.tx_hash != original.tx_hash
    assert replaced.nonce == original.nonce
    new, old = a.store.attempts(replaced.id)  # newest first
    assert "0x" + old.tx_hash.hex() == original.tx_hash
    assert new.priority_fee is not None
    assert old.priority_fee is not None
    assert new.max_fee is not None
    assert old.max_fee is not None
    assert new.priority_fee >= old.priority_fee * 115 // 100
    assert new.max_fee >= old.max_fee * 115 // 100
    pooled = connect(chain.url).eth.get_transaction(replaced.tx_hash)  # the node took it
    assert pooled["maxPriorityFeePerGas"] == new.priority_fee
    chain.mine(1)
    ok(a.step())
    (row,) = a.anchors()
    assert row.state == "included"
    assert row.tx_hash == replaced.tx_hash


def test_nonce_used_elsewhere_gets_a_fresh_nonce(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain)
    ok(a.step(ckpt(11)))
    chain.stop()
    chain.start()  # our pending tx is gone from the mempool ...
    send_plain(chain, chain.private_keys[0], b"other use of the key", to=chain.accounts[3],
               nonce=0)
    chain.mine(1)  # ... and another tx of the same account took its nonce
    report = ok(a.step())
    assert any("nonce 0 was used by another transaction" in n for n in report.notes)
    chain.mine(1)
    ok(a.step())
    (row,) = a.anchors()
    assert row.state == "included"
    assert row.nonce == 1
    assert row.attempts == 2


def test_unfunded_account_waits_for_funds(chain: DevChain,
                                          make_anchorer: Callable[..., EvmAnchorer]) -> None:
    key = "0x" + hashlib.sha256(b"fieldproof test key, never funded").hexdigest()
    a = make_anchorer(chain, key=key)
    report = ok(a.step(ckpt(3)))  # signed and stored; the node refuses it for want of funds
    assert report.submitted is not None
    assert any("send it funds" in n for n in report.notes)
    assert "send it funds" in (a.anchors()[0].reason or "")
    # The node never saw nonce 0, yet the next anchor must not reuse it.
    ok(a.step(ckpt(4)))
    assert [(r.state, r.nonce) for r in a.anchors()] == [("pending", 0), ("pending", 1)]
    chain.rpc("anvil_setBalance", a.sender, hex(10**18))
    ok(a.step())
    chain.mine(1)
    ok(a.step())
    assert states(a) == ["included", "included"]
    assert [r.reason for r in a.anchors()] == [None, None]


def test_reverted_anchor_fails_with_reason_and_is_not_counted(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    deploy = send_plain(chain, chain.private_keys[1], bytes.fromhex(_TRAP_INIT), gas=200_000)
    chain.mine(1)
    trap = str(connect(chain.url).eth.get_transaction_receipt(deploy)["contractAddress"])
    a = make_anchorer(chain, to=trap)
    assert ok(a.step(ckpt(12))).submitted is not None
    # Another user flips the trap in the same block, ahead of us (higher tip).
    send_plain(chain, chain.private_keys[1], b"\x01", to=trap, tip=20 * GWEI)
    chain.mine(1)
    report = ok(a.step())
    assert report.changed == [(1, "pending", "failed")]
    (row,) = a.anchors()
    assert row.state == "failed"
    assert "reverted" in (row.reason or "")
    with pytest.raises(AnchorNotFoundError, match="reverted"):
        read_anchor(chain.url, row.tx_hash)
    # A failed anchor does not count: the same checkpoint is tried again (and now refused at
    # the estimate, which says why).
    report = ok(a.step(ckpt(12)))
    assert report.submitted is None
    assert any("gas estimate failed" in n for n in report.notes)


# -- refusals ----------------------------------------------------------------------------


def test_wrong_chain_id_is_refused_before_signing(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain, chain_id=1)
    with pytest.raises(ChainIdMismatchError, match="serves chain id 31337"):
        a.step(ckpt(1))
    assert a.anchors() == []
    assert connect(chain.url).eth.get_transaction_count(a.sender, "pending") == 0

    good = make_anchorer(chain, db="good.db")
    ok(good.step(ckpt(1)))
    chain.mine(1)
    ok(good.step())
    tx_hash = good.anchors()[0].tx_hash
    with pytest.raises(ChainIdMismatchError):
        read_anchor(chain.url, tx_hash, chain_id=100)
    assert read_anchor(chain.url, tx_hash, chain_id=31337).record.tree_size == 1


def test_node_of_another_chain_mid_flight_keeps_pending(
        tmp_path: Path, chain: DevChain, make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain)
    ok(a.step(ckpt(1)))
    chain.stop()
    with (DevChain(tmp_path / "other", port=chain.port, chain_id=1337, automine=False),
          pytest.raises(ChainIdMismatchError)):
        a.step(ckpt(2))
    chain.start()
    assert states(a) == ["pending"]
    ok(a.step(ckpt(2)))
    chain.mine(5)
    ok(a.step())
    assert states(a) == ["finalized", "finalized"]


def test_same_size_other_root_is_a_conflict(chain: DevChain,
                                            make_anchorer: Callable[..., EvmAnchorer]) -> None:
    a = make_anchorer(chain)
    ok(a.step(ckpt(30)))
    with pytest.raises(CheckpointConflictError, match="forked"):
        a.step(ckpt(30, salt="rewritten"))
    assert len(a.anchors()) == 1


def test_read_anchor_of_other_transactions(chain: DevChain) -> None:
    tx_hash = send_plain(chain, chain.private_keys[1], b"not an anchor", to=chain.accounts[1])
    with pytest.raises(AnchorNotFoundError, match="not in a block"):
        read_anchor(chain.url, tx_hash)
    chain.mine(1)
    with pytest.raises(NotAnAnchorError, match="78"):
        read_anchor(chain.url, tx_hash)
    with pytest.raises(AnchorNotFoundError):
        read_anchor(chain.url, "0x" + "11" * 32)


def test_private_key_never_in_repr_logs_or_errors(
        chain: DevChain, make_anchorer: Callable[..., EvmAnchorer],
        caplog: pytest.LogCaptureFixture) -> None:
    key = chain.private_keys[0]
    with pytest.raises(EvmConfigError) as bad:
        make_anchorer(chain, key="0x1234" + "zz")
    assert "1234" not in str(bad.value)
    caplog.set_level(logging.DEBUG)
    a = make_anchorer(chain)
    ok(a.step(ckpt(1)))
    chain.stop()
    a.step(ckpt(2))
    bare = key.removeprefix("0x")
    assert bare not in repr(a)
    assert bare not in caplog.text
    assert a.sender in repr(a)


def test_config_is_checked() -> None:
    with pytest.raises(EvmConfigError, match="fee_bump_percent"):
        EvmConfig("http://127.0.0.1:1", 1, fee_bump_percent=5)
    with pytest.raises(EvmConfigError, match="not an EVM address"):
        EvmConfig("http://127.0.0.1:1", 1, to="0x1234")
