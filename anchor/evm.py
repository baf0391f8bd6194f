"""Anchor signed checkpoints on any EVM chain through web3.py, and read anchors back.

One transaction per checkpoint: value 0, calldata = the 78-byte anchor record
(:mod:`fieldproof.formats.anchor_record`, the same bytes the VeChainThor clause carries), sent to
a configurable address, by default the sender itself, so no contract is needed and any EVM
chain works.

:class:`EvmAnchorer` is a restartable state machine kept in SQLite. Every ``step()`` polls what is
in flight, then submits the newest checkpoint not yet anchored. An anchor goes
``pending`` -> ``included`` -> ``finalized``, or ``failed`` with a reason; a checkpoint counts as
anchored only when ``finalized``. The signed raw transaction is committed to SQLite *before* it is
broadcast, so a crash, a node that is down or a node that restarted with an empty mempool loses
nothing: the same bytes are broadcast again. A fee that no longer gets the tx into a block is
bumped (same nonce); a nonce taken by another transaction of the same account is replaced by a
fresh one; a block that leaves the canonical chain sends its anchor back to ``pending``.

Finality: the node's ``finalized`` block tag where it serves one (``finality="auto"``), else a
configurable number of confirmations.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import (
    ContractLogicError,
    TransactionNotFound,
    Web3RPCError,
)
from web3.types import Wei

from anchor.chain import AnchorerError
from anchor.chain_reader import NodeAnswerError, NodeTooSlow
from anchor.evm_reader import (
    EvmAnchorError,
    EvmConfigError,
    FinalityMode,
    NodeUnavailableError,
    ask_node,
    check_chain_id,
    connect,
    final_block_number,
    rpc_message,
)
from fieldproof.formats.anchor_record import AnchorRecord

log = logging.getLogger("fieldproof.anchor.evm")

State = Literal["pending", "included", "finalized", "failed"]
FeeMode = Literal["auto", "eip1559", "legacy"]

_T = TypeVar("_T")

class CheckpointConflictError(EvmAnchorError, AnchorerError):
    """A checkpoint of the same log and size with a *different* root was anchored before:
    the log forked or was rewritten. Never resolved automatically."""


@dataclass(frozen=True)
class CheckpointRef:
    """What of a signed checkpoint goes on chain: the log origin, tree size and root hash."""

    origin: str
    tree_size: int
    root_hash: bytes

    def record(self) -> AnchorRecord:
        return AnchorRecord.for_checkpoint(self.origin, self.tree_size, self.root_hash)


@dataclass(frozen=True)
class EvmConfig:
    """Where and how to anchor. ``chain_id`` is the chain you mean: a node on another chain is
    refused before anything is signed. ``max_fee_per_gas`` (wei) caps what one tx may bid."""

    url: str
    chain_id: int
    to: str | None = None
    finality: FinalityMode = "auto"
    confirmations: int = 12
    fee_mode: FeeMode = "auto"
    max_fee_per_gas: int | None = None
    bump_after_blocks: int = 20
    fee_bump_percent: int = 15
    gas_margin_percent: int = 20
    max_in_flight: int = 16
    request_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.chain_id <= 0:
            raise EvmConfigError(f"chain_id must be a positive integer, not {self.chain_id}")
        if self.confirmations < 1:
            raise EvmConfigError("confirmations must be at least 1")
        if self.fee_bump_percent < 10:
            raise EvmConfigError("fee_bump_percent must be >= 10: nodes refuse smaller bumps")
        if self.max_in_flight < 1:
            raise EvmConfigError("max_in_flight must be at least 1")
        if self.bump_after_blocks < 1:
            raise EvmConfigError("bump_after_blocks must be at least 1")
        if self.finality not in ("auto", "finalized", "confirmations"):
            raise EvmConfigError(
                f"finality must be auto, finalized or confirmations: {self.finality}")
        if self.fee_mode not in ("auto", "eip1559", "legacy"):
            raise EvmConfigError(f"fee_mode must be auto, eip1559 or legacy: {self.fee_mode}")
        if self.to is not None and not Web3.is_address(self.to):
            raise EvmConfigError(f"'to' is not an EVM address: {self.to!r}")


@dataclass(frozen=True)
class AnchorRow:
    """One checkpoint's anchor on one chain, as stored."""

    id: int
    chain_id: int
    origin: str
    tree_size: int
    root_hash: bytes
    record: bytes
    state: State
    sender: str
    to: str
    nonce: int
    tx_hash: HexStr
    attempts: int
    block_number: int | None
    block_hash: str | None
    block_timestamp: int | None
    reason: str | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class _Attempt:
    """One signed transaction for an anchor; fee bumps and new nonces add attempts."""

    tx_hash: bytes
    nonce: int
    raw: bytes
    gas_limit: int
    max_fee: int | None
    priority_fee: int | None
    gas_price: int | None
    sent_at_block: int | None = None


@dataclass
class StepReport:
    """What one ``step()`` did. ``error`` set: the node could not be asked, nothing was lost,
    call ``step()`` again later. ``notes``: problems an operator may have to act on."""

    submitted: AnchorRow | None = None
    changed: list[tuple[int, State, State]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS evm_anchors (
    id              INTEGER PRIMARY KEY,
    chain_id        INTEGER NOT NULL,
    origin          TEXT NOT NULL,
    tree_size       INTEGER NOT NULL,
    root_hash       BLOB NOT NULL,
    record          BLOB NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('pending', 'included', 'finalized', 'failed')),
    sender          TEXT NOT NULL,
    to_address      TEXT NOT NULL,
    tx_hash         BLOB NOT NULL,
    block_number    INTEGER,
    block_hash      BLOB,
    block_timestamp INTEGER,
    reason          TEXT,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evm_anchors_active ON evm_anchors (chain_id, sender, state);
CREATE TABLE IF NOT EXISTS evm_anchor_txs (
    tx_hash       BLOB PRIMARY KEY,
    anchor_id     INTEGER NOT NULL REFERENCES evm_anchors (id),
    nonce         INTEGER NOT NULL,
    raw           BLOB NOT NULL,
    gas_limit     INTEGER NOT NULL,
    max_fee       INTEGER,
    priority_fee  INTEGER,
    gas_price     INTEGER,
    sent_at_block INTEGER,
    created_at    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evm_anchor_txs_anchor ON evm_anchor_txs (anchor_id);
"""

_ROW_SQL = """
SELECT a.id, a.chain_id, a.origin, a.tree_size, a.root_hash, a.record, a.state, a.sender,
       a.to_address, t.nonce, a.tx_hash,
       (SELECT COUNT(*) FROM evm_anchor_txs x WHERE x.anchor_id = a.id),
       a.block_number, a.block_hash, a.block_timestamp, a.reason, a.created_at, a.updated_at
FROM evm_anchors a JOIN evm_anchor_txs t ON t.tx_hash = a.tx_hash
"""


def _hex(b: bytes | None) -> str | None:
    return None if b is None else "0x" + b.hex()


class EvmAnchorStore:
    """SQLite store of anchors and their signed transactions (WAL, synchronous=FULL: a
    committed transaction survives a power cut). Self-contained for now; to be unified with
    the Thor anchor store."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @staticmethod
    def _row(r: tuple[Any, ...]) -> AnchorRow:
        return AnchorRow(
            id=r[0], chain_id=r[1], origin=r[2], tree_size=r[3], root_hash=bytes(r[4]),
            record=bytes(r[5]), state=r[6], sender=r[7], to=r[8], nonce=r[9],
            tx_hash=HexStr("0x" + bytes(r[10]).hex()), attempts=r[11], block_number=r[12],
            block_hash=_hex(None if r[13] is None else bytes(r[13])), block_timestamp=r[14],
            reason=r[15], created_at=r[16], updated_at=r[17],
        )

    def get(self, anchor_id: int) -> AnchorRow:
        r = self.db.execute(_ROW_SQL + " WHERE a.id = ?", (anchor_id,)).fetchone()
        if r is None:
            raise KeyError(f"no EVM anchor with id {anchor_id}")
        return self._row(r)

    def rows(self, chain_id: int | None = None, states: tuple[State, ...] = ()) -> list[AnchorRow]:
        """Anchors, oldest first, optionally of one chain and some states."""
        where: list[str] = ["1=1"]
        args: list[object] = []
        if chain_id is not None:
            where.append("a.chain_id = ?")
            args.append(chain_id)
        if states:
            where.append(f"a.state IN ({','.join('?' * len(states))})")
            args.extend(states)
        sql = _ROW_SQL + " WHERE " + " AND ".join(where) + " ORDER BY a.id"
        return [self._row(r) for r in self.db.execute(sql, args)]

    def active(self, chain_id: int, sender: str) -> list[AnchorRow]:
        """In-flight anchors of one account, in nonce order (the order the chain takes them)."""
        sql = (_ROW_SQL + " WHERE a.chain_id = ? AND a.sender = ? AND a.state IN "
               "('pending', 'included') ORDER BY t.nonce, a.id")
        return [self._row(r) for r in self.db.execute(sql, (chain_id, sender))]

    def anchored(self, chain_id: int, origin: str, tree_size: int) -> list[AnchorRow]:
        """Non-failed anchors of this log at this size or larger."""
        sql = (_ROW_SQL + " WHERE a.chain_id = ? AND a.origin = ? AND a.tree_size >= ? "
               "AND a.state != 'failed' ORDER BY a.tree_size DESC")
        return [self._row(r) for r in self.db.execute(sql, (chain_id, origin, tree_size))]

    def max_active_nonce(self, chain_id: int, sender: str) -> int | None:
        r = self.db.execute(
            "SELECT MAX(t.nonce) FROM evm_anchors a JOIN evm_anchor_txs t ON t.tx_hash = a.tx_hash"
            " WHERE a.chain_id = ? AND a.sender = ? AND a.state IN ('pending', 'included')",
            (chain_id, sender),
        ).fetchone()
        return None if r[0] is None else int(r[0])

    def attempts(self, anchor_id: int) -> list[_Attempt]:
        """Signed transactions of an anchor, newest first."""
        rows = self.db.execute(
            "SELECT tx_hash, nonce, raw, gas_limit, max_fee, priority_fee, gas_price, "
            "sent_at_block FROM evm_anchor_txs WHERE anchor_id = ? ORDER BY rowid DESC",
            (anchor_id,),
        )
        return [_Attempt(bytes(r[0]), r[1], bytes(r[2]), *r[3:]) for r in rows]

    def current_attempt(self, anchor_id: int) -> _Attempt:
        cur = self.db.execute("SELECT tx_hash FROM evm_anchors WHERE id = ?", (anchor_id,))
        tx_hash = bytes(cur.fetchone()[0])
        return next(a for a in self.attempts(anchor_id) if a.tx_hash == tx_hash)

    def insert(self, chain_id: int, ref: CheckpointRef, record: bytes, sender: str, to: str,
               attempt: _Attempt) -> int:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO evm_anchors (chain_id, origin, tree_size, root_hash, record, state,"
                " sender, to_address, tx_hash, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?)",
                (chain_id, ref.origin, ref.tree_size, ref.root_hash, record, sender, to,
                 attempt.tx_hash, now, now),
            )
            anchor_id = int(cast(int, cur.lastrowid))
            self._insert_attempt(db, anchor_id, attempt, now)
        return anchor_id

    @staticmethod
    def _insert_attempt(db: sqlite3.Connection, anchor_id: int, a: _Attempt, now: float) -> None:
        db.execute(
            "INSERT INTO evm_anchor_txs (tx_hash, anchor_id, nonce, raw, gas_limit, max_fee,"
            " priority_fee, gas_price, sent_at_block, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (a.tx_hash, anchor_id, a.nonce, a.raw, a.gas_limit, a.max_fee, a.priority_fee,
             a.gas_price, now),
        )

    def add_attempt(self, anchor_id: int, attempt: _Attempt, reason: str) -> None:
        """Record a replacement transaction and make it the anchor's current one."""
        now = time.time()
        with self._tx() as db:
            self._insert_attempt(db, anchor_id, attempt, now)
            db.execute(
                "UPDATE evm_anchors SET tx_hash = ?, reason = ?, updated_at = ? WHERE id = ?",
                (attempt.tx_hash, reason, now, anchor_id))

    def mark_sent(self, tx_hash: bytes, head_block: int) -> None:
        with self._tx() as db:
            # The first send counts: a tx the node keeps dropping must still get its fee bump.
            db.execute("UPDATE evm_anchor_txs SET sent_at_block = COALESCE(sent_at_block, ?)"
                       " WHERE tx_hash = ?",
                       (head_block, tx_hash))

    def update(self, anchor_id: int, state: State, *, reason: str | None,
               block: tuple[int, bytes, int] | None = None, tx_hash: bytes | None = None) -> None:
        """Move an anchor to ``state``; ``block`` = (number, hash, timestamp) it is in."""
        number, bhash, ts = block if block is not None else (None, None, None)
        with self._tx() as db:
            db.execute(
                "UPDATE evm_anchors SET state = ?, reason = ?, block_number = ?, block_hash = ?,"
                " block_timestamp = ?, tx_hash = COALESCE(?, tx_hash), updated_at = ?"
                " WHERE id = ?",
                (state, reason, number, bhash, ts, tx_hash, time.time(), anchor_id),
            )

    def set_reason(self, anchor_id: int, reason: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE evm_anchors SET reason = ?, updated_at = ? WHERE id = ?",
                       (reason, time.time(), anchor_id))


@dataclass(frozen=True)
class _Fees:
    max_fee: int | None = None
    priority_fee: int | None = None
    gas_price: int | None = None

    @property
    def bid(self) -> int:
        return cast(int, self.max_fee if self.max_fee is not None else self.gas_price)


class _FeeAboveCap(Exception):
    pass


class EvmAnchorer:
    """Anchors the newest checkpoint of a log on one EVM chain, one ``step()`` at a time.

    Call ``step(newest_checkpoint)`` periodically (e.g. every block time or minute). The key
    is held in memory only; it is never logged nor put in an exception.
    """

    def __init__(self, config: EvmConfig, private_key: str | bytes,
                 store: EvmAnchorStore | Path | str, *, web3: Web3 | None = None) -> None:
        self.config = config
        try:
            self._account: LocalAccount = Account.from_key(private_key)
        except Exception:
            raise EvmConfigError(
                "the anchoring private key is not a valid secp256k1 key (32 bytes, hex or raw)"
            ) from None
        self.sender: ChecksumAddress = self._account.address
        self.to: str = Web3.to_checksum_address(config.to) if config.to else self.sender
        self.store = store if isinstance(store, EvmAnchorStore) else EvmAnchorStore(store)
        self.w3 = web3 or connect(config.url, config.request_timeout_s)

    def __repr__(self) -> str:
        return f"EvmAnchorer(chain_id={self.config.chain_id}, sender={self.sender})"

    def close(self) -> None:
        self.store.close()

    def anchors(self) -> list[AnchorRow]:
        """This chain's anchors, oldest first."""
        return self.store.rows(self.config.chain_id)

    # -- the state machine -----------------------------------------------------------------

    def step(self, newest: CheckpointRef | None = None) -> StepReport:
        """Advance every in-flight anchor, then submit ``newest`` if it is not anchored yet.

        An unreachable node, or one whose answer is past its bounds (too large, compressed,
        too slow: :func:`~anchor.evm_reader.connect`), ends the step early with
        ``report.error`` set and every anchor as it was. A node on the wrong chain raises
        :class:`ChainIdMismatchError`.
        """
        report = StepReport()
        try:
            check_chain_id(self.w3, self.config.url, self.config.chain_id)
            head = self._call(lambda: self.w3.eth.get_block("latest"))
            head_number = int(head["number"])
            final_height = self._call(lambda: final_block_number(
                self.w3, self.config.url, self.config.finality, self.config.confirmations,
                head_number))
            for row in self.store.active(self.config.chain_id, self.sender):
                self._poll(row, head_number, final_height, report)
            if newest is not None:
                self._maybe_submit(newest, head, report)
        except NodeUnavailableError as exc:
            report.error = f"{exc}; will retry on the next step, nothing is lost"
            log.warning("%s", report.error)
        except Web3RPCError as exc:  # the node answered, but with an error of its own
            report.error = (f"EVM node {self.config.url} answered an error: {rpc_message(exc)};"
                            " will retry on the next step, nothing is lost")
            log.warning("%s", report.error)
        except (NodeAnswerError, NodeTooSlow) as exc:  # an answer past its bounds (connect())
            report.error = f"{exc}; will retry on the next step, nothing is lost"
            log.warning("%s", report.error)
        return report

    def _call(self, fn: Callable[[], _T]) -> _T:
        return ask_node(self.config.url, fn)

    def _poll(self, row: AnchorRow, head: int, final_height: int, report: StepReport) -> None:
        found = self._find_receipt(row.id)
        if found is None:
            if row.state == "included":
                reason = (f"block {row.block_number} ({row.block_hash}) left the canonical chain; "
                          "the transaction is broadcast again")
                self.store.update(row.id, "pending", reason=reason)
                self._changed(report, row, "pending", reason)
                row = self.store.get(row.id)
            self._push(row, head, report)
            return
        tx_hash, receipt = found
        number, bhash = int(receipt["blockNumber"]), bytes(receipt["blockHash"])
        block = self._call(partial(self.w3.eth.get_block, number))
        where = (number, bhash, int(block["timestamp"]))
        if int(receipt["status"]) != 1:
            reason = (f"transaction {_hex(tx_hash)} reverted in block {number} (gas used "
                      f"{receipt['gasUsed']}); is 'to' ({row.to}) a contract that refuses it?")
            self.store.update(row.id, "failed", reason=reason, tx_hash=tx_hash, block=where)
            self._changed(report, row, "failed", reason)
            return
        state: State = row.state
        if row.state == "pending" or row.block_hash != _hex(bhash):
            self.store.update(row.id, "included", reason=None, tx_hash=tx_hash, block=where)
            state = "included"
        # The block at that height must still be the one holding the tx (no reorg since).
        if number <= final_height and bytes(block["hash"]) == bhash:
            self.store.update(row.id, "finalized", reason=None, tx_hash=tx_hash, block=where)
            state = "finalized"
        if state != row.state:
            self._changed(report, row, state, None)

    def _find_receipt(self, anchor_id: int) -> tuple[bytes, Any] | None:
        """The receipt of whichever of the anchor's transactions made it into a block."""
        for attempt in self.store.attempts(anchor_id):
            try:
                receipt = self._call(
                    partial(self.w3.eth.get_transaction_receipt, HexBytes(attempt.tx_hash)))
            except TransactionNotFound:
                continue
            return attempt.tx_hash, receipt
        return None

    def _push(self, row: AnchorRow, head: int, report: StepReport) -> None:
        """Keep a pending anchor moving: broadcast it again if the node lost it (restart,
        eviction, crash before the first broadcast), bump its fee if it waited too long."""
        attempt = self.store.current_attempt(row.id)
        try:
            self._call(partial(self.w3.eth.get_transaction, HexBytes(attempt.tx_hash)))
        except TransactionNotFound:
            if not self._broadcast(row, attempt, head, report, may_replace=True):
                return
            attempt = self.store.current_attempt(row.id)
        waited = None if attempt.sent_at_block is None else head - attempt.sent_at_block
        if waited is not None and waited >= self.config.bump_after_blocks:
            self._replace(self.store.get(row.id), attempt, head, report, fresh_nonce=False,
                          why=f"not in a block {waited} blocks after it was sent")

    def _broadcast(self, row: AnchorRow, attempt: _Attempt, head: int, report: StepReport,
                   *, may_replace: bool) -> bool:
        """Send ``attempt``; True when the node holds it now (so it may be bumped later)."""
        try:
            self._call(lambda: self.w3.eth.send_raw_transaction(attempt.raw))
        except Web3RPCError as exc:
            msg = rpc_message(exc)
            low = msg.lower()
            if "already known" in low or "already imported" in low or "known transaction" in low:
                pass
            elif "nonce too low" in low or "nonce is too low" in low:
                if self._find_receipt(row.id) is not None:
                    return False  # one of ours was mined meanwhile; the next poll sees it
                if may_replace:
                    self._replace(row, attempt, head, report, fresh_nonce=True,
                                  why=f"nonce {attempt.nonce} was used by another transaction "
                                      f"of {self.sender}")
                return False
            elif may_replace and ("underpriced" in low or "base fee" in low or "fee cap" in low
                                  or "feecap" in low):
                self._replace(row, attempt, head, report, fresh_nonce=False,
                              why=f"node refused the fee: {msg}")
                return False
            else:
                if "insufficient funds" in low:
                    note = (f"account {self.sender} cannot pay for gas on chain "
                            f"{self.config.chain_id}: send it funds; anchor {row.id} stays pending")
                else:
                    note = f"node refused transaction {_hex(attempt.tx_hash)}: {msg}"
                self.store.set_reason(row.id, note)
                report.notes.append(note)  # the service logs the step's notes
                return False
        self.store.mark_sent(attempt.tx_hash, head)
        if (row.reason or "").startswith(("account ", "node refused transaction")):
            self.store.set_reason(row.id, None)  # the refusal it described is over
        return True

    def _replace(self, row: AnchorRow, old: _Attempt, head: int, report: StepReport, *,
                 fresh_nonce: bool, why: str) -> None:
        """Sign a replacement: same nonce with higher fees, or a fresh nonce."""
        block = self._call(lambda: self.w3.eth.get_block("latest"))
        try:
            fees = self._fees(block)
            if not fresh_nonce:
                fees = self._bump(old, fees)
        except _FeeAboveCap as exc:
            note = f"anchor {row.id}: {why}, but {exc}"
            self.store.set_reason(row.id, note)
            report.notes.append(note)
            return
        nonce = self._next_nonce() if fresh_nonce else old.nonce
        attempt = self._sign(row.record, nonce, old.gas_limit, fees)
        reason = f"{why}; replaced by {_hex(attempt.tx_hash)} (nonce {nonce})"
        self.store.add_attempt(row.id, attempt, reason)
        log.info("anchor %d: %s", row.id, reason)
        report.notes.append(f"anchor {row.id}: {reason}")
        self._broadcast(self.store.get(row.id), attempt, head, report, may_replace=False)

    def _maybe_submit(self, newest: CheckpointRef, head: Any, report: StepReport) -> None:
        record = newest.record().encode()
        done = self.store.anchored(self.config.chain_id, newest.origin, newest.tree_size)
        for row in done:
            if row.tree_size == newest.tree_size and row.root_hash != newest.root_hash:
                raise CheckpointConflictError(
                    f"log {newest.origin!r} at size {newest.tree_size} has root "
                    f"{newest.root_hash.hex()}, but anchor {row.id} ({row.tx_hash}) holds root "
                    f"{row.root_hash.hex()} for the same size: the log forked; stop and "
                    "investigate before anchoring anything else"
                )
        if done:
            return
        waiting = [r for r in self.store.active(self.config.chain_id, self.sender)
                   if r.state == "pending"]
        if len(waiting) >= self.config.max_in_flight:
            report.notes.append(
                f"checkpoint {newest.tree_size} not submitted yet: {len(waiting)} anchors are "
                f"still pending (max_in_flight={self.config.max_in_flight}); is the chain moving?")
            return
        try:
            fees = self._fees(head)
        except _FeeAboveCap as exc:
            report.notes.append(f"checkpoint {newest.tree_size} not submitted: {exc}")
            return
        try:
            estimate = self._call(lambda: self.w3.eth.estimate_gas(
                {"from": self.sender, "to": self.to, "value": Wei(0), "data": record}))
        except (Web3RPCError, ContractLogicError) as exc:
            msg = rpc_message(exc) if isinstance(exc, Web3RPCError) else str(exc.message)
            note = (f"checkpoint {newest.tree_size} not submitted: gas estimate failed "
                    f"({msg}); does {self.sender} have funds and does {self.to} "
                    "accept plain transactions?")
            report.notes.append(note)
            return
        gas_limit = math.ceil(int(estimate) * (100 + self.config.gas_margin_percent) / 100)
        attempt = self._sign(record, self._next_nonce(), gas_limit, fees)
        anchor_id = self.store.insert(self.config.chain_id, newest, record, self.sender, self.to,
                                      attempt)
        row = self.store.get(anchor_id)
        report.submitted = row
        log.info("anchor %d: checkpoint %s@%d submitted as %s (nonce %d)", anchor_id,
                 newest.origin, newest.tree_size, row.tx_hash, attempt.nonce)
        self._broadcast(row, attempt, int(head["number"]), report, may_replace=True)

    def _next_nonce(self) -> int:
        """Past both the node's pending count and anything we signed that is still in flight
        (a restarted node may have forgotten our pending transactions)."""
        chain = int(self._call(lambda: self.w3.eth.get_transaction_count(self.sender, "pending")))
        local = self.store.max_active_nonce(self.config.chain_id, self.sender)
        return chain if local is None else max(chain, local + 1)

    def _fees(self, block: Any) -> _Fees:
        cfg = self.config
        base = block.get("baseFeePerGas")
        if cfg.fee_mode == "eip1559" and base is None:
            raise EvmConfigError(
                f"EVM node {cfg.url} reports no base fee (pre-London chain): set fee_mode to "
                "'legacy' or 'auto'")
        if cfg.fee_mode != "legacy" and base is not None:
            prio = int(self._call(lambda: self.w3.eth.max_priority_fee))
            max_fee = 2 * int(base) + prio
            if cfg.max_fee_per_gas is not None:
                if int(base) + prio > cfg.max_fee_per_gas:
                    raise _FeeAboveCap(
                        f"base fee {base} + tip {prio} wei exceeds the configured cap "
                        f"max_fee_per_gas={cfg.max_fee_per_gas}")
                max_fee = min(max_fee, cfg.max_fee_per_gas)
            return _Fees(max_fee=max_fee, priority_fee=prio)
        price = int(self._call(lambda: self.w3.eth.gas_price))
        if cfg.max_fee_per_gas is not None and price > cfg.max_fee_per_gas:
            raise _FeeAboveCap(f"gas price {price} wei exceeds the configured cap "
                               f"max_fee_per_gas={cfg.max_fee_per_gas}")
        return _Fees(gas_price=price)

    def _bump(self, old: _Attempt, now: _Fees) -> _Fees:
        """Fees for a same-nonce replacement: at least ``fee_bump_percent`` above the old
        ones (nodes require >= 10 %) and at least what the chain asks now."""
        p = 100 + self.config.fee_bump_percent

        def up(v: int | None) -> int:
            return math.ceil((v or 0) * p / 100)

        if old.max_fee is not None:
            fees = _Fees(max_fee=max(up(old.max_fee), now.max_fee or 0),
                         priority_fee=max(up(old.priority_fee), now.priority_fee or 0))
        else:
            fees = _Fees(gas_price=max(up(old.gas_price), now.gas_price or now.max_fee or 0))
        cap = self.config.max_fee_per_gas
        if cap is not None and fees.bid > cap:
            raise _FeeAboveCap(f"a bumped fee of {fees.bid} wei would exceed the configured cap "
                               f"max_fee_per_gas={cap}")
        return fees

    def _sign(self, record: bytes, nonce: int, gas_limit: int, fees: _Fees) -> _Attempt:
        tx: dict[str, Any] = {"chainId": self.config.chain_id, "nonce": nonce, "to": self.to,
                              "value": 0, "data": record, "gas": gas_limit}
        if fees.max_fee is not None:
            tx.update(type=2, maxFeePerGas=fees.max_fee, maxPriorityFeePerGas=fees.priority_fee)
        else:
            tx["gasPrice"] = fees.gas_price
        signed = self._account.sign_transaction(tx)
        return _Attempt(tx_hash=bytes(signed.hash), nonce=nonce, raw=bytes(signed.raw_transaction),
                        gas_limit=gas_limit, max_fee=fees.max_fee, priority_fee=fees.priority_fee,
                        gas_price=fees.gas_price)

    @staticmethod
    def _changed(report: StepReport, row: AnchorRow, new: State, reason: str | None) -> None:
        report.changed.append((row.id, row.state, new))
        log.info("anchor %d (%s@%d): %s -> %s%s", row.id, row.origin, row.tree_size, row.state,
                 new, f" ({reason})" if reason else "")
