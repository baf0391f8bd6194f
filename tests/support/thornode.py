"""A test double of a VeChainThor node's REST API, only for what a real node cannot be made to do.

Every ordinary path runs on the real node: ``fieldproof.services.ThorSolo`` (thor v2.4.4 ``solo
--on-demand``, built by scripts/peers), started by tests/support/thor_solo.py, in
tests/integration/test_thor_real.py, test_thor_client_real.py, test_anchoring_real.py (also the
``fieldproof anchor`` service), test_verify_findings.py, test_verify_known_checkpoint.py,
test_inspector_page.py, test_verify_realrun.py, test_verify_multi_realrun.py and the "our
exporter" bundles of test_interop_go.py and test_interop_js.py.

The tests that still use this double, and why (each also says so in its docstring):

* tests/anchor/test_anchoring.py: an unreachable node (``test_node_down_for_a_while_loses_nothing``,
  ``test_down_before_first_contact``, ``test_run_forever_backs_off_while_the_node_is_down``); a
  pool that loses txs (``test_node_forgetting_a_tx_gets_it_again``,
  ``test_expired_tx_is_rebuilt``); a tx held but not in a block
  (``test_verify_anchor_of_a_tx_not_yet_in_a_block``: on demand thor packs it before it answers);
  a clause that passes simulation and reverts in its block
  (``test_reverted_tx_fails_with_reason_and_can_be_retried``); a reorg
  (``test_reorg_sends_an_anchor_back_to_pending``); another network
  (``test_store_refuses_another_chain``, ``test_node_replaced_by_another_network_mid_run``: every
  solo runs the same genesis); finality that stalls (``test_no_finality_deadline``); a node that
  lags by exact seconds or whose clock disagrees with ours
  (``test_anchoring_pauses_while_the_node_is_not_synced``,
  ``test_a_stale_head_by_only_one_clock_is_not_a_pause``,
  ``test_pending_anchor_detail_names_the_pause``); base fees set at will
  (``test_legacy_price_covers_a_risen_base_fee``,
  ``test_legacy_falls_back_to_dynamic_fee_past_twice_the_legacy_price``,
  ``test_fee_too_low_is_rebuilt_on_the_new_fee_at_once``);
* tests/anchor/test_anchor_service.py::test_status_says_how_far_from_final_and_why: exact head
  numbers and a node that lags by an hour, then catches up;
* tests/anchor/test_thor_client.py: a production pool's ``400 bad tx: …`` wording and low-S check
  (``test_malformed_raw_is_400``, ``test_bad_signatures_are_400``, ``test_too_little_gas_is_400``;
  thor solo answers ``403 tx rejected: resolve transaction: …``); outages and 5xx
  (``test_node_down_is_a_clear_error``, ``test_node_down_while_sending``,
  ``test_transient_5xx_is_retried``, ``test_persistent_5xx_is_a_response_error``,
  ``test_backoff_is_capped``); the request headers it records
  (``test_every_request_names_the_network_once_known``); a relay that strips headers
  (``test_genesis_block_of_another_network_is_wrong_network``); a node clock ahead of its head
  (``test_node_time_comes_from_its_date_header``); and the double's own contract
  (``test_double_speaks_the_rest_contract``, ``test_double_expanded_block_embeds_receipts``);
* tests/anchor/test_thor_scan_hostile.py: a node that lies while ``verify --all-anchors`` reads
  its blocks (``block_answer``, ``pad_expanded``, ``trickle_s``), which no real node does on
  demand: a block that is not an object, transactions that are not a list or not objects,
  clause data that is not hex, the wrong block for a number (backwards, repeated, not the child
  of the block before), a best block far beyond what it has, a head below the range, 20,000
  transactions in one block, an answer padded past the size bound, an answer trickled slower
  than the timeout, and a node that hangs up mid-scan;
* tests/anchor/test_thor_client_hostile.py: a node that misanswers the anchorer's own requests
  (``misanswer``): a receipt or transaction padded past its size bound, an answer trickled
  slower than the per-answer deadline, a gzip answer to a client that asked for none, which no
  real node sends; then the same node answering honestly again.

What it can do for them:

* faults no real node produces on demand: ``go_down()``/``come_up()`` (connections refused),
  ``drop_incoming`` (accept txs and lose them), ``drop_pending()`` (a restarted node's empty
  pool), ``fail_next()`` (HTTP 503s), ``rollback()`` (a reorg of unfinalized blocks),
  ``revert_to`` (clauses to these addresses revert), ``lag_s`` (a node whose own clock is ahead
  of its best block: not synced), ``base_fee`` set at will, ``deploy()`` (contracts that cost
  gas or revert), ``set_energy()``; finality ``finality_depth`` blocks behind the best (a real
  node's moves in 180-block epochs), which also lets finality stall; hostile block answers:
  ``block_answer(revision, expanded, json)`` returns what ``GET /blocks/{revision}`` answers
  instead (any JSON value, a :class:`RawAnswer` body, or :data:`HANG_UP` to close the
  connection unanswered), ``pad_expanded`` appends that many spaces to expanded blocks,
  ``trickle_s`` sends expanded blocks 64 bytes per ``trickle_s`` seconds, and ``no_length``
  answers without ``Content-Length`` (the body ends when the connection closes);
  ``misanswer`` (a :class:`Misanswer`) does the like to any request it matches (pads, trickles
  or gzips the answer), for the anchorer's receipts, transactions, sends and blocks;
* a production node's tx pool (``pool="txpool"``, the default: github.com/vechain/thor
  ``txpool/``), which holds txs until a block is produced (``mine()``/``auto_mine``) and words
  its refusals ``400 bad tx: …`` (signature, low-S, chain tag, intrinsic gas, fee fields) and
  ``403 tx rejected: …`` (expired, block ref out of schedule, known tx, base fee, energy…).
  ``pool="solo"`` answers as ``thor solo --on-demand`` does instead (measured on v2.4.4): the
  same checks but ``403 tx rejected: resolve transaction: …`` for the "bad tx" ones, no low-S
  check, and no pending-cost check.

It serves, on a free loopback port, the subset of shared/reference/thor-rest-api.yaml fieldproof
uses, with the same paths, JSON shapes, status codes and text error bodies:

* ``GET /blocks/{revision}`` (number, id, ``best``, ``justified``, ``finalized``; ``expanded``),
  ``null`` for an unknown block;
* ``POST /transactions`` with ``{"raw": "0x…"}``, decoded with ``anchor.thor`` and checked as
  above (the payer is the VIP-191 delegator when there is one);
* ``GET /transactions/{id}`` (``pending``, ``raw``, ``head``), ``GET
  /transactions/{id}/receipt`` (``head``: the chain as ending at that block);
* ``GET /accounts/{address}``, ``POST /accounts/*`` (clause simulation: accounts, ``deploy()``ed
  contracts, ``Params.get("base-gas-price")``), ``GET /fees/priority``, ``GET /fees/history``
  (``newestBlock=next`` included);
* ``x-genesis-id`` on every answer, and ``403 genesis id mismatch`` for a request naming another
  genesis (header or query), as thor's ``api/middleware``; ``Date`` is the node's clock: its best
  block's time plus ``lag_s``.

As on the real node, a well-formed signature made by the wrong key cannot be told apart from a
right one: it recovers to a different origin, which then normally fails the energy check. The
chain tag is random per instance unless given, so no test can depend on one value. Not served:
raw block headers, logs, subscriptions, debug, base fee dynamics (``base_fee`` is a knob).
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from eth_hash.auto import keccak

from anchor import thor

BLOCK_INTERVAL = 10
MAX_TX_SIZE = 64 * 1024
INITIAL_BASE_FEE = 10_000_000_000_000  # 10^13 wei, thor.InitialBaseFee
ZERO_ADDRESS = b"\x00" * 20
GENESIS_HEADER = "x-genesis-id"
#: thor's Params built-in contract and the call ``get("base-gas-price")`` (thor/params.go)
PARAMS_ADDRESS = b"Params".rjust(20, b"\x00")
PARAMS_GET_BASE_GAS_PRICE = bytes(keccak(b"get(bytes32)"))[:4] + b"base-gas-price".rjust(
    32, b"\x00"
)
PoolStyle = Literal["txpool", "solo"]


@dataclass(frozen=True)
class RawAnswer:
    """A body ``block_answer`` sends as is (200, not JSON-encoded)."""

    text: str


#: what ``block_answer`` returns to close the connection without an answer
HANG_UP = object()


@dataclass
class Misanswer:
    """How the double spoils its answers to requests whose ``METHOD target`` (path and query, as
    sent) ``pattern`` finds, for the first ``count`` of them (None: every one). Each is what no
    real node does, so a test can only get it here:

    * ``pad``: that many spaces after the answer, which stays valid JSON: a receipt or a
      transaction larger than any the node can hold (thor's pool takes at most 64 KiB a tx);
    * ``trickle_s``: the answer sent 64 bytes per ``trickle_s`` seconds, each piece within the
      client's read timeout: a node (or a path) that is slow on purpose;
    * ``slow_headers``: with ``trickle_s``, that many 64-byte header lines before the real
      ones, one per ``trickle_s`` seconds: the same, before the client sees a byte of body;
    * ``gzip``: the answer gzip-compressed (``Content-Encoding: gzip``) though the client asked
      for ``identity``, which HTTP forbids a server to ignore;
    * ``gzip_bomb``: with ``gzip``, this many spaces compressed after the answer: a few KiB on
      the wire that inflate past any bound.

    ``hits`` counts the answers spoiled so far; ``cut_off``: the client hung up before a
    trickled answer was all sent; ``ended`` is set once a trickled answer is over either way."""

    pattern: str
    pad: int = 0
    trickle_s: float = 0.0
    gzip: bool = False
    gzip_bomb: int = 0
    slow_headers: int = 0
    count: int | None = None
    hits: int = 0
    cut_off: bool = False
    ended: threading.Event = field(default_factory=threading.Event)

    def applies(self, method: str, target: str) -> bool:
        if self.count is not None and self.hits >= self.count:
            return False
        if re.search(self.pattern, f"{method} {target}") is None:
            return False
        self.hits += 1
        return True


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _qty(n: int) -> str:
    return hex(n)


def addr_bytes(addr: str | bytes) -> bytes:
    b = addr if isinstance(addr, bytes) else bytes.fromhex(addr.removeprefix("0x"))
    if len(b) != 20:
        raise ValueError("address must be 20 bytes")
    return b


@dataclass(frozen=True)
class Contract:
    """A deployed contract as the double models it: each call costs ``gas`` or reverts."""

    gas: int = 20_005
    revert: bool = False


@dataclass
class _Receipt:
    gas_used: int
    payer: bytes
    paid: int
    reward: int
    reverted: bool
    outputs: list[dict[str, Any]]


@dataclass
class _TxEntry:
    tx: thor.Transaction
    raw: bytes
    id: bytes
    origin: bytes
    delegator: bytes | None
    receipt: _Receipt | None = None


@dataclass
class _Block:
    number: int
    id: bytes
    parent_id: bytes
    timestamp: int
    gas_limit: int
    base_fee: int
    txs: list[_TxEntry] = field(default_factory=list)

    @property
    def gas_used(self) -> int:
        return sum(t.receipt.gas_used for t in self.txs if t.receipt)


class _Reject(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class ThorNode:
    """In-process Thor node double. Use as a context manager or call ``start()``/``stop()``."""

    def __init__(
        self,
        *,
        chain_tag: int | None = None,
        finality_depth: int = 3,
        base_fee: int = INITIAL_BASE_FEE,
        legacy_base_gas_price: int = INITIAL_BASE_FEE,
        gas_limit: int = 40_000_000,
        energy: Mapping[str, int] | None = None,
        balance: Mapping[str, int] | None = None,
        genesis_timestamp: int = 1_700_000_000,
        host: str = "127.0.0.1",
        pool: PoolStyle = "txpool",
        port: int = 0,
    ) -> None:
        if chain_tag is None:
            chain_tag = secrets.randbelow(256)
        if pool not in ("txpool", "solo"):
            raise ValueError('pool must be "txpool" or "solo"')
        self.chain_tag = chain_tag
        self.pool = pool
        self.lag_s = 0.0
        self.contracts: dict[bytes, Contract] = {}
        self.finality_depth = finality_depth
        self.base_fee = base_fee
        self.legacy_base_gas_price = legacy_base_gas_price
        self.priority_fee = base_fee * 5 // 100
        self.gas_limit = gas_limit
        self.host = host
        self.drop_incoming = False
        self.block_answer: Callable[[str, bool, Any], Any] | None = None
        self.pad_expanded = 0
        self.trickle_s = 0.0
        self.no_length = False
        self.misanswer: Misanswer | None = None
        self.revert_to: set[bytes] = set()
        self.requests: list[tuple[str, str]] = []
        self.genesis_headers: list[str | None] = []  # the x-genesis-id of each request
        self.submissions: list[tuple[int, str]] = []  # (status, text or tx id) per POST
        self._lock = threading.RLock()
        self._energy: dict[bytes, int] = {addr_bytes(a): v for a, v in (energy or {}).items()}
        self._balance: dict[bytes, int] = {addr_bytes(a): v for a, v in (balance or {}).items()}
        self._pool: dict[bytes, _TxEntry] = {}
        self._tx_block: dict[bytes, int] = {}
        self._side_blocks: dict[bytes, _Block] = {}
        self._fail_next: list[int] = []
        gid = thor.blake2b256(b"fieldproof thornode genesis", bytes([chain_tag]))
        genesis_id = b"\x00" * 4 + gid[4:31] + bytes([chain_tag])
        self._blocks: list[_Block] = [
            _Block(
                0, genesis_id, b"\xff" * 4 + b"\x00" * 28, genesis_timestamp, gas_limit, base_fee
            )
        ]
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = port  # 0: a free one; given: take over another double's URL
        self._auto: threading.Thread | None = None
        self._auto_stop = threading.Event()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        if not self._port:
            raise RuntimeError("thornode not started")
        return f"http://{self.host}:{self._port}"

    @property
    def up(self) -> bool:
        return self._server is not None

    def start(self) -> ThorNode:
        self.come_up()
        return self

    def stop(self) -> None:
        self.auto_mine(None)
        self.go_down()

    def __enter__(self) -> ThorNode:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def come_up(self) -> None:
        """Listen again (on the same port after a ``go_down``)."""
        if self._server is not None:
            return
        server = _Server((self.host, self._port), _make_handler(self))
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.02,), name="thornode", daemon=True
        )
        self._thread.start()

    def go_down(self) -> None:
        """Close the listening socket: clients now get "connection refused". State is kept."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join()

    def auto_mine(self, interval_s: float | None) -> None:
        """Produce a block every ``interval_s`` seconds (None stops it)."""
        if self._auto is not None:
            self._auto_stop.set()
            self._auto.join()
            self._auto = None
        if interval_s is None:
            return
        self._auto_stop = threading.Event()
        stop = self._auto_stop

        def run() -> None:
            while not stop.wait(interval_s):
                self.mine()

        self._auto = threading.Thread(target=run, name="thornode-miner", daemon=True)
        self._auto.start()

    # ------------------------------------------------------------------ knobs

    def deploy(self, address: str | bytes, gas: int = 20_005, *, revert: bool = False) -> None:
        """Put a contract at ``address``: every call to it costs ``gas`` or reverts."""
        with self._lock:
            self.contracts[addr_bytes(address)] = Contract(gas, revert)

    @property
    def node_time(self) -> float:
        """The node's clock (its HTTP ``Date``): its best block's time plus ``lag_s``."""
        with self._lock:
            return self._blocks[-1].timestamp + self.lag_s

    def set_energy(self, address: str | bytes, wei: int) -> None:
        with self._lock:
            self._energy[addr_bytes(address)] = wei

    def energy(self, address: str | bytes) -> int:
        with self._lock:
            return self._energy.get(addr_bytes(address), 0)

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (a transient node fault)."""
        with self._lock:
            self._fail_next.extend([status] * count)

    def drop_pending(self) -> int:
        """Forget every tx in the pool (as a restarted node would); returns how many."""
        with self._lock:
            n = len(self._pool)
            self._pool.clear()
            return n

    @property
    def pending_ids(self) -> list[str]:
        with self._lock:
            return [_hex(i) for i in self._pool]

    @property
    def genesis_id(self) -> str:
        return _hex(self._blocks[0].id)

    @property
    def best_number(self) -> int:
        with self._lock:
            return self._blocks[-1].number

    @property
    def finalized_number(self) -> int:
        with self._lock:
            return max(0, self._blocks[-1].number - self.finality_depth)

    def block_id(self, number: int) -> str:
        with self._lock:
            return _hex(self._blocks[number].id)

    def included_in(self, tx_id: str) -> int | None:
        """Block number holding the tx on the trunk, or None."""
        with self._lock:
            return self._tx_block.get(bytes.fromhex(tx_id.removeprefix("0x")))

    # ------------------------------------------------------------------ chain

    def _price(self, tx: thor.Transaction) -> int:
        if tx.tx_type == thor.TYPE_LEGACY:
            b = self.legacy_base_gas_price
            return b + b * tx.gas_price_coef // 255
        return min(tx.max_fee_per_gas, tx.max_priority_fee_per_gas + self.base_fee)

    def _payer(self, e: _TxEntry) -> bytes:
        return e.delegator if e.delegator is not None else e.origin

    def mine(self, count: int = 1) -> list[str]:
        """Produce ``count`` blocks; executable pool txs go into the first one. Returns ids."""
        ids = []
        with self._lock:
            for _ in range(count):
                ids.append(_hex(self._mine_one().id))
        return ids

    def mine_until(self, number: int) -> None:
        with self._lock:
            while self._blocks[-1].number < number:
                self._mine_one()

    def _executable(self, e: _TxEntry, number: int) -> bool | None:
        """True: include now; False: keep waiting; None: drop from the pool."""
        tx = e.tx
        if tx.is_expired(number):
            return None
        if tx.block_ref_number > number:
            return False
        if tx.depends_on is not None:
            blk = self._tx_block.get(tx.depends_on)
            if blk is None:
                return False
            dep = next(t for t in self._blocks[blk].txs if t.id == tx.depends_on)
            if dep.receipt is not None and dep.receipt.reverted:
                return None
        return True

    def _mine_one(self) -> _Block:
        parent = self._blocks[-1]
        number = parent.number + 1
        ts = parent.timestamp + BLOCK_INTERVAL
        body = thor.blake2b256(parent.id, ts.to_bytes(8, "big"), *self._pool.keys())
        blk = _Block(
            number,
            number.to_bytes(4, "big") + body[4:],
            parent.id,
            ts,
            self.gas_limit,
            self.base_fee,
        )
        gas_left = self.gas_limit
        for tx_id, e in list(self._pool.items()):
            state = self._executable(e, number)
            if state is None:
                del self._pool[tx_id]
                continue
            if not state or e.tx.gas > gas_left:
                continue
            price = self._price(e.tx)
            payer = self._payer(e)
            if self._energy.get(payer, 0) < e.tx.gas * price:
                del self._pool[tx_id]  # the pool washes out txs whose payer went broke
                continue
            del self._pool[tx_id]
            gas_used = e.tx.intrinsic_gas()
            code = [self.contracts[c.to] for c in e.tx.clauses if c.to in self.contracts]
            execution = sum(c.gas for c in code)
            out_of_gas = gas_used + execution > e.tx.gas
            gas_used = e.tx.gas if out_of_gas else gas_used + execution
            paid = gas_used * price
            self._energy[payer] = self._energy.get(payer, 0) - paid
            value = sum(c.value for c in e.tx.clauses)
            reverted = (
                out_of_gas
                or any(c.revert for c in code)
                or any(c.to in self.revert_to for c in e.tx.clauses)
                or value > self._balance.get(e.origin, 0)
            )
            outputs: list[dict[str, Any]] = []
            if not reverted:
                for c in e.tx.clauses:
                    transfers = []
                    if c.value:
                        self._balance[e.origin] = self._balance.get(e.origin, 0) - c.value
                        to = c.to or ZERO_ADDRESS
                        self._balance[to] = self._balance.get(to, 0) + c.value
                        transfers.append(
                            {
                                "sender": _hex(e.origin),
                                "recipient": _hex(to),
                                "amount": _qty(c.value),
                            }
                        )
                    outputs.append({"contractAddress": None, "events": [], "transfers": transfers})
            e.receipt = _Receipt(
                gas_used, payer, paid, gas_used * max(0, price - self.base_fee), reverted, outputs
            )
            gas_left -= gas_used
            blk.txs.append(e)
            self._tx_block[e.id] = number
        self._blocks.append(blk)
        return blk

    def rollback(self, count: int) -> list[str]:
        """Reorg: drop the last ``count`` (unfinalized) blocks; their txs go back to the pool."""
        with self._lock:
            if self._blocks[-1].number - count < self.finalized_number:
                raise ValueError("cannot roll back finalized blocks")
            returned = []
            for _ in range(count):
                blk = self._blocks.pop()
                self._side_blocks[blk.id] = blk
                for e in blk.txs:
                    payer = self._payer(e)
                    self._energy[payer] = self._energy.get(payer, 0) + (
                        e.receipt.paid if e.receipt else 0
                    )
                    self._tx_block.pop(e.id, None)
                    self._pool[e.id] = _TxEntry(e.tx, e.raw, e.id, e.origin, e.delegator)
                    returned.append(_hex(e.id))
            return returned

    # ------------------------------------------------------------------ tx pool

    def _reject_if_invalid(self, tx: thor.Transaction) -> tuple[bytes, bytes | None]:
        """The node's checks, in its order; returns (origin, delegator). A production pool
        (``txpool.validateTxBasics`` then ``resolveTx``) says ``400 bad tx: …``; solo
        on-demand (``OnDemandTxPool.AddLocal``) checks no low-S and says ``403 tx rejected:
        resolve transaction: …`` for what ``runtime.ResolveTransaction`` refuses."""
        solo = self.pool == "solo"
        if not solo:
            try:
                low_s = tx.has_low_s()
            except thor.SignatureError as e:
                raise _Reject(400, f"bad tx: {e}") from None
            if not low_s:
                raise _Reject(400, "bad tx: invalid signature: S value is out of range")
        if tx.chain_tag != self.chain_tag:
            raise _Reject(400, "bad tx: chain tag mismatch")
        if tx.size > MAX_TX_SIZE:
            raise _Reject(403, "tx rejected: size too large")

        def bad(message: str) -> _Reject:
            if solo:
                return _Reject(403, f"tx rejected: resolve transaction: {message}")
            return _Reject(400, f"bad tx: {message}")

        try:
            origin = tx.origin()
            if tx.gas < tx.intrinsic_gas():
                raise bad("intrinsic gas exceeds provided gas")
            delegator = tx.delegator()
        except thor.SignatureError as e:
            raise bad(str(e)) from None
        if tx.tx_type == thor.TYPE_DYNAMIC_FEE and tx.max_fee_per_gas < tx.max_priority_fee_per_gas:
            raise bad("maxFeePerGas is less than maxPriorityFeePerGas")
        return origin, delegator

    def _evaluate(self, e: _TxEntry) -> int | None:
        """Pool evaluation on the next block; returns the prepaid cost, None if not executable."""
        tx = e.tx
        nxt = self._blocks[-1].number + 1
        if tx.gas > self.gas_limit:
            raise _Reject(403, "tx rejected: tx gas exceeds block gas limit")
        if tx.is_expired(nxt):
            raise _Reject(403, "tx rejected: expired")
        if tx.block_ref_number > nxt + 5 * 60 // BLOCK_INTERVAL:
            raise _Reject(403, "tx rejected: block ref out of schedule")
        if tx.features & ~thor.DELEGATION_FEATURE:
            raise _Reject(403, "tx rejected: unsupported features")
        if tx.unused_reserved:
            raise _Reject(403, "tx rejected: unused reserved slot")
        if e.id in self._tx_block:
            raise _Reject(403, "tx rejected: known tx")
        if tx.depends_on is not None:
            blk = self._tx_block.get(tx.depends_on)
            if blk is None:
                return None
            dep = next(t for t in self._blocks[blk].txs if t.id == tx.depends_on)
            if dep.receipt is not None and dep.receipt.reverted:
                raise _Reject(403, "tx rejected: dep reverted")
        if tx.block_ref_number > nxt:
            return None
        price = self._price(tx)
        if price < self.base_fee:
            raise _Reject(403, "tx rejected: gas price is less than block base fee")
        prepaid = tx.gas * price
        if self._energy.get(self._payer(e), 0) < prepaid:
            raise _Reject(403, "tx rejected: insufficient energy")
        return prepaid

    def submit(self, raw: bytes) -> str:
        """What ``POST /transactions`` does after the JSON/hex layer; raises _Reject."""
        try:
            tx = thor.decode(raw)
        except thor.ThorTxError as err:
            raise _Reject(400, f"raw: {err}") from None
        with self._lock:
            for pooled in self._pool.values():
                if pooled.raw == raw:
                    return _hex(pooled.id)
            origin, delegator = self._reject_if_invalid(tx)
            new = _TxEntry(tx, raw, thor.blake2b256(tx.signing_hash(), origin), origin, delegator)
            prepaid = self._evaluate(new)
            if prepaid is not None and self.pool == "txpool":
                payer = self._payer(new)
                pending = sum(
                    p.tx.gas * self._price(p.tx)
                    for p in self._pool.values()
                    if self._payer(p) == payer
                )
                if self._energy.get(payer, 0) < pending + prepaid:
                    raise _Reject(403, "tx rejected: insufficient energy for overall pending cost")
            if not self.drop_incoming:
                self._pool[new.id] = new
            return _hex(new.id)

    # ------------------------------------------------------------------ JSON views

    def _block_for(self, revision: str) -> _Block | None:
        blocks = self._blocks
        if revision in ("", "best"):
            return blocks[-1]
        if revision == "finalized":
            return blocks[self.finalized_number]
        if revision == "justified":
            return blocks[max(self.finalized_number, blocks[-1].number - self.finality_depth // 2)]
        if revision == "next":
            raise _Reject(400, "revision: invalid revision: next is not allowed")
        if len(revision) in (64, 66):
            bid = _parse_bytes32(revision, "revision")
            n = int.from_bytes(bid[:4], "big")
            if n < len(blocks) and blocks[n].id == bid:
                return blocks[n]
            return self._side_blocks.get(bid)
        try:
            n = int(revision, 0)
        except ValueError:
            raise _Reject(
                400, f'revision: strconv.ParseUint: parsing "{revision}": invalid syntax'
            ) from None
        if n < 0:
            raise _Reject(400, f'revision: strconv.ParseUint: parsing "{revision}": invalid syntax')
        if n > 0xFFFFFFFF:
            raise _Reject(400, "revision: block number out of max uint32")
        return blocks[n] if n < len(blocks) else None

    def _tx_json(self, e: _TxEntry) -> dict[str, Any]:
        tx = e.tx
        d: dict[str, Any] = {
            "id": _hex(e.id),
            "type": tx.tx_type,
            "chainTag": tx.chain_tag,
            "blockRef": _hex(tx.block_ref),
            "expiration": tx.expiration,
            "clauses": [
                {
                    "to": None if c.to is None else _hex(c.to),
                    "value": _qty(c.value),
                    "data": _hex(c.data),
                }
                for c in tx.clauses
            ],
        }
        if tx.tx_type == thor.TYPE_LEGACY:
            d["gasPriceCoef"] = tx.gas_price_coef
        d["gas"] = tx.gas
        if tx.tx_type != thor.TYPE_LEGACY:
            d["maxFeePerGas"] = _qty(tx.max_fee_per_gas)
            d["maxPriorityFeePerGas"] = _qty(tx.max_priority_fee_per_gas)
        d.update(
            {
                "origin": _hex(e.origin),
                "delegator": None if e.delegator is None else _hex(e.delegator),
                "nonce": _qty(tx.nonce),
                "dependsOn": None if tx.depends_on is None else _hex(tx.depends_on),
                "size": len(e.raw),
            }
        )
        return d

    def _receipt_json(self, e: _TxEntry, blk: _Block) -> dict[str, Any]:
        r = e.receipt
        assert r is not None
        d: dict[str, Any] = {}
        if e.tx.tx_type != thor.TYPE_LEGACY:
            d["type"] = e.tx.tx_type
        d.update(
            {
                "gasUsed": r.gas_used,
                "gasPayer": _hex(r.payer),
                "paid": _qty(r.paid),
                "reward": _qty(r.reward),
                "reverted": r.reverted,
                "meta": {
                    "blockID": _hex(blk.id),
                    "blockNumber": blk.number,
                    "blockTimestamp": blk.timestamp,
                    "txID": _hex(e.id),
                    "txOrigin": _hex(e.origin),
                },
                "outputs": r.outputs,
            }
        )
        return d

    def _block_json(self, blk: _Block, expanded: bool) -> dict[str, Any]:
        trunk = blk.number < len(self._blocks) and self._blocks[blk.number].id == blk.id
        d: dict[str, Any] = {
            "number": blk.number,
            "id": _hex(blk.id),
            "size": 200 + sum(len(t.raw) for t in blk.txs),
            "parentID": _hex(blk.parent_id),
            "timestamp": blk.timestamp,
            "gasLimit": blk.gas_limit,
            "beneficiary": _hex(ZERO_ADDRESS),
            "gasUsed": blk.gas_used,
            "totalScore": blk.number,
            "txsRoot": _hex(thor.blake2b256(*(t.id for t in blk.txs))),
            "txsFeatures": thor.DELEGATION_FEATURE,
            "stateRoot": _hex(thor.blake2b256(b"state", blk.id)),
            "receiptsRoot": _hex(thor.blake2b256(b"receipts", blk.id)),
            "com": True,
            "signer": _hex(ZERO_ADDRESS),
            "isTrunk": trunk,
            "isFinalized": trunk and blk.number <= self.finalized_number,
            "baseFeePerGas": _qty(blk.base_fee),
        }
        if expanded:
            txs = []
            for e in blk.txs:
                t = self._tx_json(e)
                r = self._receipt_json(e, blk)
                r.pop("meta")
                r.pop("type", None)
                t.update(r)
                txs.append(t)
            d["transactions"] = txs
        else:
            d["transactions"] = [_hex(e.id) for e in blk.txs]
        return d

    def _on_trunk(self, blk: _Block) -> bool:
        return blk.number < len(self._blocks) and self._blocks[blk.number].id == blk.id

    def _find_tx(self, tx_id: bytes, head: _Block | None = None) -> tuple[_TxEntry, _Block] | None:
        """The tx and its block on the chain ending at ``head`` (default: the best block)."""
        while head is not None and not self._on_trunk(head):  # a side branch: walk it back
            for e in head.txs:
                if e.id == tx_id:
                    return e, head
            parent = self._side_blocks.get(head.parent_id)
            if parent is None:
                p = int.from_bytes(head.parent_id[:4], "big")
                parent = self._blocks[p] if p < len(self._blocks) else None
            head = parent
        n = self._tx_block.get(tx_id)
        if n is None or (head is not None and n > head.number):
            return None
        blk = self._blocks[n]
        return next(e for e in blk.txs if e.id == tx_id), blk

    def _head(self, q: dict[str, str]) -> _Block | None:
        """The ``head`` query parameter: a block id (absent: the best block)."""
        text = q.get("head", "")
        if text == "":
            return None
        bid = _parse_bytes32(text, "head")
        n = int.from_bytes(bid[:4], "big")
        if n < len(self._blocks) and self._blocks[n].id == bid:
            return self._blocks[n]
        if bid in self._side_blocks:
            return self._side_blocks[bid]
        raise _Reject(400, "head: leveldb: not found")

    # ------------------------------------------------------------------ HTTP dispatch

    def handle(
        self, method: str, target: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> tuple[int, str, str]:
        """Returns (status, content type, body) for one request."""
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        q = {k: v[-1] for k, v in query.items()}
        with self._lock:
            self.requests.append((method, path))
            self.genesis_headers.append((headers or {}).get(GENESIS_HEADER) or None)
            if self._fail_next:
                status = self._fail_next.pop(0)
                return status, "text/plain; charset=utf-8", "service unavailable\n"
        named = (headers or {}).get(GENESIS_HEADER) or q.get(GENESIS_HEADER, "")
        if named and named != self.genesis_id:
            return 403, "text/plain; charset=utf-8", "genesis id mismatch\n"
        try:
            return self._route(method, path, q, body)
        except _Reject as r:
            return r.status, "text/plain; charset=utf-8", r.text + "\n"

    def _route(
        self, method: str, path: str, q: dict[str, str], body: bytes
    ) -> tuple[int, str, str]:
        routes: list[tuple[str, str, Any]] = [
            ("POST", r"/transactions", self._post_tx),
            ("GET", r"/transactions/([^/]+)/receipt", self._get_receipt),
            ("GET", r"/transactions/([^/]+)", self._get_tx),
            ("GET", r"/blocks/([^/]+)", self._get_block),
            ("GET", r"/accounts/([^/*]+)", self._get_account),
            ("POST", r"/accounts/\*", self._inspect_clauses),
            ("GET", r"/fees/priority", self._get_priority),
            ("GET", r"/fees/history", self._get_fee_history),
        ]
        path_matched = False
        for m, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if match is None:
                continue
            path_matched = True
            if m != method:
                continue
            with self._lock:
                result = fn(q, body, *match.groups())
            if result is HANG_UP:
                return 0, "", ""
            if isinstance(result, RawAnswer):
                return 200, "application/json; charset=utf-8", result.text
            text = json.dumps(result) + "\n"
            if fn == self._get_block and q.get("expanded") == "true":
                text += " " * self.pad_expanded
            return 200, "application/json; charset=utf-8", text
        if path_matched:
            return 405, "text/plain; charset=utf-8", ""
        return 404, "text/plain; charset=utf-8", "404 page not found\n"

    def _post_tx(self, q: dict[str, str], body: bytes) -> Any:
        try:
            data = json.loads(body)
        except ValueError as e:
            raise _Reject(400, f"body: {e}") from None
        if data is None:
            raise _Reject(400, "body")
        if not isinstance(data, dict):
            raise _Reject(400, "body: json: cannot unmarshal into Go value of type api.RawTx")
        for k in data:
            if k != "raw":
                raise _Reject(400, f'body: json: unknown field "{k}"')
        raw_hex = data.get("raw", "")
        if not isinstance(raw_hex, str):
            raise _Reject(400, "body: json: cannot unmarshal into Go struct field RawTx.raw")
        raw = _hexutil_decode(raw_hex, "raw")
        try:
            tx_id = self.submit(raw)
        except _Reject as r:
            self.submissions.append((r.status, r.text))
            raise
        self.submissions.append((200, tx_id))
        return {"id": tx_id}

    def _get_receipt(self, q: dict[str, str], body: bytes, id_text: str) -> Any:
        tx_id = _parse_bytes32(id_text, "id")
        found = self._find_tx(tx_id, self._head(q))
        if found is None:
            return None
        return self._receipt_json(*found)

    def _get_tx(self, q: dict[str, str], body: bytes, id_text: str) -> Any:
        tx_id = _parse_bytes32(id_text, "id")
        raw = _bool(q.get("raw", ""), "raw")
        pending = _bool(q.get("pending", ""), "pending")
        found = self._find_tx(tx_id, self._head(q))
        if found is not None:
            e, blk = found
            meta = {
                "blockID": _hex(blk.id),
                "blockNumber": blk.number,
                "blockTimestamp": blk.timestamp,
            }
        elif pending and tx_id in self._pool:
            e, meta = self._pool[tx_id], None
        else:
            return None
        if raw:
            return {"raw": _hex(e.raw), "meta": meta}
        d = self._tx_json(e)
        d["meta"] = meta
        return d

    def _get_block(self, q: dict[str, str], body: bytes, revision: str) -> Any:
        raw = _bool(q.get("raw", ""), "raw")
        expanded = _bool(q.get("expanded", ""), "expanded")
        if raw and expanded:
            raise _Reject(400, "raw&expanded: Raw and Expanded are mutually exclusive")
        if raw:
            raise _Reject(501, "raw block headers are not served by the test double")
        blk = self._block_for(revision)
        answer = None if blk is None else self._block_json(blk, expanded)
        return answer if self.block_answer is None else self.block_answer(
            revision, expanded, answer)

    def _get_account(self, q: dict[str, str], body: bytes, address: str) -> Any:
        a = _parse_address(address, "address")
        return {
            "balance": _qty(self._balance.get(a, 0)),
            "energy": _qty(self._energy.get(a, 0)),
            "hasCode": a in self.contracts or a == PARAMS_ADDRESS,
        }

    def _inspect_clauses(self, q: dict[str, str], body: bytes) -> Any:
        """``POST /accounts/*``: simulate clauses; ``gasUsed`` excludes intrinsic gas. Like thor
        v2.4.4 (``api/accounts/accounts.go`` ``batchCall``), one result per clause run, ending
        at the first reverted clause: those after it get no result."""
        revision = q.get("revision", "")
        if revision not in ("", "best", "next"):
            self._block_for(revision)  # 400 for a malformed one, as the node
        try:
            data = json.loads(body)
        except ValueError as e:
            raise _Reject(400, f"body: {e}") from None
        if not isinstance(data, dict) or not isinstance(data.get("clauses"), list):
            raise _Reject(
                400, "body: json: cannot unmarshal into Go value of type api.BatchCallData"
            )
        known = {
            "clauses",
            "gas",
            "gasPrice",
            "provedWork",
            "caller",
            "gasPayer",
            "expiration",
            "blockRef",
        }
        for k in data:
            if k not in known:
                raise _Reject(400, f'body: json: unknown field "{k}"')
        results = []
        for c in data["clauses"]:
            if not isinstance(c, dict):
                raise _Reject(400, "body: json: cannot unmarshal into Go struct field")
            to, data_text = c.get("to"), c.get("data") or "0x"
            if not isinstance(data_text, str) or (to is not None and not isinstance(to, str)):
                raise _Reject(400, "body: json: cannot unmarshal into Go struct field")
            call = _hexutil_decode(data_text, "data")
            result: dict[str, Any] = {
                "data": "0x",
                "events": [],
                "transfers": [],
                "gasUsed": 0,
                "reverted": False,
                "vmError": "",
            }
            if isinstance(to, str):
                target = _parse_address(to, "to")
                contract = self.contracts.get(target)
                if target == PARAMS_ADDRESS and call == PARAMS_GET_BASE_GAS_PRICE:
                    word = self.legacy_base_gas_price.to_bytes(32, "big")
                    result.update(data=_hex(word), gasUsed=591)
                elif target == PARAMS_ADDRESS or (contract is not None and contract.revert):
                    result.update(gasUsed=6, reverted=True, vmError="execution reverted")
                elif contract is not None:
                    result.update(gasUsed=contract.gas)
            results.append(result)
            if result["reverted"]:  # thor's batchCall returns at the first VM error
                break
        return results

    def _get_priority(self, q: dict[str, str], body: bytes) -> Any:
        return {"maxPriorityFeePerGas": _qty(self.priority_fee)}

    def _get_fee_history(self, q: dict[str, str], body: bytes) -> Any:
        """``GET /fees/history``: ``newestBlock=next`` is the block to come (its base fee is the
        ``base_fee`` knob now), as in thor's api/fees."""
        count_text = q.get("blockCount", "")
        try:
            count = int(count_text, 10)
        except ValueError:
            raise _Reject(400, "invalid blockCount, it should represent an integer") from None
        if count == 0:
            raise _Reject(400, "invalid blockCount, it should not be 0")
        newest = q.get("newestBlock", "") or "best"
        fees: list[str] = []
        ratios: list[float] = []
        if newest == "next":
            number = self._blocks[-1].number + 1
            oldest = number.to_bytes(4, "big") + b"\x00" * 28
            fees.append(_qty(self.base_fee))
            ratios.append(0.0)
            count -= 1
            blk: _Block | None = self._blocks[-1]
        else:
            blk = self._block_for(newest)
            if blk is None:
                raise _Reject(400, "newestBlock: leveldb: not found")
        while count > 0 and blk is not None:
            oldest = blk.id
            fees.insert(0, _qty(blk.base_fee))
            ratios.insert(0, blk.gas_used / blk.gas_limit if blk.gas_limit else 0.0)
            count -= 1
            blk = self._blocks[blk.number - 1] if blk.number > 0 else None
        return {"oldestBlock": _hex(oldest), "baseFeePerGas": fees, "gasUsedRatio": ratios}


def _parse_address(address: str, name: str) -> bytes:
    if len(address) == 40:
        text = address
    elif len(address) == 42:
        if address[:2].lower() != "0x":
            raise _Reject(400, f"{name}: invalid prefix")
        text = address[2:]
    else:
        raise _Reject(400, f"{name}: invalid length")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise _Reject(400, f"{name}: encoding/hex: invalid byte") from None


def _bool(value: str, name: str) -> bool:
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    raise _Reject(400, f"{name}: should be boolean")


def _parse_bytes32(s: str, name: str) -> bytes:
    if len(s) == 66:
        if s[:2].lower() != "0x":
            raise _Reject(400, f"{name}: invalid prefix")
        s = s[2:]
    elif len(s) != 64:
        raise _Reject(400, f"{name}: invalid length")
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise _Reject(400, f"{name}: encoding/hex: invalid byte") from None


def _hexutil_decode(s: str, name: str) -> bytes:
    if s == "":
        raise _Reject(400, f"{name}: empty hex string")
    if s[:2].lower() != "0x":
        raise _Reject(400, f"{name}: hex string without 0x prefix")
    if len(s) % 2:
        raise _Reject(400, f"{name}: hex string of odd length")
    try:
        return bytes.fromhex(s[2:])
    except ValueError:
        raise _Reject(400, f"{name}: invalid hex string") from None


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gives up on an answer (the hostile knobs' whole point) is not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler(node: ThorNode) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "thornode-double"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {GENESIS_HEADER: self.headers.get(GENESIS_HEADER) or ""}
            status, ctype, text = node.handle(self.command, self.path, body, headers)
            if status == 0:  # HANG_UP: close the connection without an answer
                self.close_connection = True
                return
            data = text.encode()
            spoil = node.misanswer
            if spoil is not None and not spoil.applies(self.command, self.path):
                spoil = None
            if spoil is not None:
                data += b" " * spoil.pad
                if spoil.gzip:
                    data = gzip.compress(data + b" " * spoil.gzip_bomb, compresslevel=9)
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = ""
            self.log_request(status)
            if spoil is not None and spoil.slow_headers and spoil.trickle_s:
                try:
                    self.wfile.write(f"{self.protocol_version} {status} {phrase}\r\n".encode())
                    for i in range(spoil.slow_headers):
                        self.wfile.write(f"X-Slow-{i}: {'a' * 50}\r\n".encode())
                        self.wfile.flush()
                        time.sleep(spoil.trickle_s)
                except (BrokenPipeError, ConnectionResetError):
                    spoil.cut_off = True
                    self.close_connection = True
                    spoil.ended.set()
                    return
            else:
                self.send_response_only(status, phrase)
            self.send_header("Server", self.version_string())
            self.send_header("Date", formatdate(node.node_time, usegmt=True))
            self.send_header(GENESIS_HEADER, node.genesis_id)
            self.send_header("Content-Type", ctype)
            if spoil is not None and spoil.gzip:
                self.send_header("Content-Encoding", "gzip")
            if node.no_length:  # HTTP/1.0: the body ends when the connection closes
                self.close_connection = True
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            trickle_s = spoil.trickle_s if spoil is not None and spoil.trickle_s else (
                node.trickle_s if "expanded=true" in self.path else 0.0)
            if spoil is not None and spoil.slow_headers:
                trickle_s = 0.0  # its headers were slow; the body comes at once
            if trickle_s:
                try:
                    for i in range(0, len(data), 64):
                        self.wfile.write(data[i : i + 64])
                        self.wfile.flush()
                        time.sleep(trickle_s)
                except (BrokenPipeError, ConnectionResetError):
                    if spoil is not None:  # the client gave up on it: what the knob is for
                        spoil.cut_off = True
                if spoil is not None:
                    spoil.ended.set()
                return
            try:
                self.wfile.write(data)
            finally:
                if spoil is not None:
                    spoil.ended.set()

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def funded(*addresses: str | bytes, vtho: int = 10**21) -> dict[str, int]:
    """Energy map giving each address ``vtho`` wei (default 1000 VTHO)."""
    return {_hex(addr_bytes(a)): vtho for a in addresses}
