"""Anchoring signed checkpoints on VeChainThor, durably.

One transaction per checkpoint, one clause, value 0, ``to`` = a configured address (default: the
anchoring account itself), data = the 78-byte ``AnchorRecord`` (docs/anchor-record.md). An
anchor moves ``pending`` → ``included`` (receipt seen) → ``finalized`` (the receipt is there when
read from the finalized block, ``?head=<GET /blocks/finalized id>``), or to ``failed`` when its
tx reverted. Only ``finalized`` counts as anchored (docs/architecture.md, durability). There is
no deadline on finality: Thor finalizes whole 180-block epochs, about 360 to 540 blocks (1 to
1.5 h) after inclusion on a healthy network, and an included anchor simply stays included,
each step saying how far it is from final and why (``StepReport.not_final``,
``anchor_detail``).

Before anything else a step checks the node: on another network (``x-genesis-id``) it raises
:class:`ChainMismatch`; not synced (its best block ``max_block_age_s`` old, 6 block intervals by
default) it pauses, and says so in the step report and the stored node status.

Every fact is written to SQLite before the node is asked to act on it: a tx is stored before it
is posted, so a crash, a node outage or a lost response never loses a checkpoint or forgets a tx
that may have reached the chain. Txs whose fate is unknown are posted again (same bytes, same
id: harmless); txs the node forgot are posted again; expired txs are rebuilt with a fresh
blockRef; rejected ones are rebuilt after an exponential backoff. ``Anchorer.step()`` does one
pass and is what a service loop (``run_forever``) or a test calls.

One Anchorer per store: it holds an exclusive lock (``<store>.lock``) until ``close()``, because
two anchorers on one store would both submit.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any

from anchor import thor
from anchor.chain import (
    AnchorerError,
    ChainMismatchError,
    CheckpointSource,
)
from anchor.chain import (
    AnchorState as AnchorState,  # re-exported: callers import it from here
)
from anchor.chain import (
    CheckpointLike as CheckpointLike,  # re-exported: callers import it from here
)
from anchor.thor_client import (
    BadTransaction,
    Block,
    FeeTooLow,
    InsufficientEnergy,
    NodeResponseError,
    NodeUnreachable,
    ThorClient,
    TxRejected,
    WrongNetwork,
)
from anchor.thor_reader import FinalityGap
from fieldproof.formats.anchor_record import AnchorRecord

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "FIELDPROOF_ANCHOR_KEY"
DEFAULT_SPONSOR_ENV = "FIELDPROOF_ANCHOR_SPONSOR_KEY"


# ----------------------------------------------------------------------------- errors


class AnchorError(AnchorerError):
    """Base for Thor anchoring errors that need an operator."""


class KeyLoadError(AnchorError):
    """A chain key could not be loaded. The message never contains key material."""


class ChainMismatch(AnchorError, ChainMismatchError):
    """The node is on a different chain (genesis) than the one this store anchors to."""


class ClauseRejected(AnchorError):
    """The configured ``to`` is a contract that reverts the anchor clause when simulated."""


# ----------------------------------------------------------------------------- keys


def _parse_key_material(data: bytes, where: str) -> thor.SecretKey:
    try:
        if len(data) == 32 and not all(0x20 <= c < 0x7F for c in data):
            secret = data  # raw binary key (a random key is never all printable ASCII)
        else:
            s = data.strip().decode("ascii")
            s = s[2:] if s[:2].lower() == "0x" else s
            if len(s) != 64:
                raise ValueError
            secret = bytes.fromhex(s)
        return thor.SecretKey(secret)
    except (ValueError, UnicodeDecodeError, thor.ThorTxError):
        raise KeyLoadError(
            f"{where} does not hold a secp256k1 private key: expected 64 hex characters "
            "(optionally 0x-prefixed) or 32 raw bytes"
        ) from None


def load_key_file(path: str | Path) -> thor.SecretKey:
    """Read a chain key from a file that only its owner can read (mode 0600 or stricter)."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise KeyLoadError(f"key file {p} does not exist") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyLoadError(f"key file {p} is not a regular file")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyLoadError(
            f"key file {p} has mode {mode:04o}, readable by others: run `chmod 600 {p}` "
            "(and consider the key exposed if others could read it)"
        )
    return _parse_key_material(p.read_bytes(), f"key file {p}")


def key_from_env(name: str = DEFAULT_KEY_ENV) -> thor.SecretKey:
    """Read a chain key (hex) from an environment variable."""
    value = os.environ.get(name)
    if not value:
        raise KeyLoadError(f"environment variable {name} is not set or empty")
    return _parse_key_material(value.encode(), f"environment variable {name}")


def load_key(path: str | Path | None = None, env_var: str | None = None) -> thor.SecretKey:
    """A key from ``path`` if given, else from ``env_var`` (default FIELDPROOF_ANCHOR_KEY)."""
    if path is not None:
        return load_key_file(path)
    return key_from_env(env_var or DEFAULT_KEY_ENV)


def generate_key_file(path: str | Path) -> thor.SecretKey:
    """Create a new random key in a new file with mode 0600; refuses to overwrite."""
    p = Path(path)
    while True:
        secret = secrets.token_bytes(32)
        if 0 < int.from_bytes(secret, "big") < thor.SECP256K1_N:
            break
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyLoadError(f"key file {p} already exists; not overwriting it") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
        f.flush()
        os.fsync(f.fileno())
    return thor.SecretKey(secret)


# ----------------------------------------------------------------------------- store


class TxStatus(StrEnum):
    BUILT = "built"  # stored, not yet (known to be) posted
    SENT = "sent"  # the node accepted it
    UNKNOWN = "unknown"  # posting failed in transit: it may or may not have arrived
    REJECTED = "rejected"  # the node refused it (400/403)
    EXPIRED = "expired"  # best block passed blockRef + expiration without it
    INCLUDED = "included"  # in a block (the anchor's tx)


_LIVE = (TxStatus.BUILT, TxStatus.SENT, TxStatus.UNKNOWN)


@dataclass(frozen=True)
class AnchorRow:
    """One checkpoint's anchor, as ``anchor_status`` returns it."""

    id: int
    origin: str
    tree_size: int
    root_hash: bytes
    record: bytes
    signed_note: bytes
    genesis_id: str | None
    state: AnchorState
    tx_id: str | None
    block_number: int | None
    block_id: str | None
    block_timestamp: int | None
    gas_payer: str | None
    failure_reason: str | None
    last_error: str | None
    attempts: int
    failures: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    finalized_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (hex for bytes) for the CLI."""
        d = asdict(self)
        for k in ("root_hash", "record"):
            d[k] = d[k].hex()
        d["signed_note"] = self.signed_note.decode("utf-8", "replace")
        d["state"] = str(self.state)
        return d


@dataclass(frozen=True)
class AnchorTxRow:
    """One built transaction for an anchor (an anchor may need several: expiry, rejection)."""

    tx_id: str
    anchor_id: int
    raw: bytes
    block_ref: str
    expiration: int
    delegated: bool
    status: TxStatus
    error: str | None
    created_at: float
    updated_at: float

    @property
    def block_ref_number(self) -> int:
        return int(self.block_ref[2:10], 16)

    def dead_after(self, best_number: int) -> bool:
        """True once no future block can include it: the next block (best + 1) is past
        blockRef + expiration, which is also when the node's pool refuses it as "expired"."""
        return best_number + 1 > self.block_ref_number + self.expiration


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS anchors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    tree_size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    record BLOB NOT NULL,
    signed_note BLOB NOT NULL,
    genesis_id TEXT,
    state TEXT NOT NULL CHECK (state IN ('pending', 'included', 'finalized', 'failed')),
    tx_id TEXT,
    block_number INTEGER,
    block_id TEXT,
    block_timestamp INTEGER,
    gas_payer TEXT,
    failure_reason TEXT,
    last_error TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finalized_at REAL,
    UNIQUE (origin, tree_size, root_hash)
);
CREATE INDEX IF NOT EXISTS anchors_state ON anchors (state);
CREATE TABLE IF NOT EXISTS anchor_txs (
    tx_id TEXT PRIMARY KEY,
    anchor_id INTEGER NOT NULL REFERENCES anchors (id),
    raw BLOB NOT NULL,
    block_ref TEXT NOT NULL,
    expiration INTEGER NOT NULL,
    delegated INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS anchor_txs_anchor ON anchor_txs (anchor_id);
"""

_SELECT_ANCHORS = (
    "SELECT id, origin, tree_size, root_hash, record, signed_note, genesis_id, state, tx_id, "
    "block_number, block_id, block_timestamp, gas_payer, failure_reason, last_error, attempts, "
    "failures, next_attempt_at, created_at, updated_at, finalized_at FROM anchors"
)
_UPDATABLE = frozenset(
    {
        "genesis_id",
        "state",
        "tx_id",
        "block_number",
        "block_id",
        "block_timestamp",
        "gas_payer",
        "failure_reason",
        "last_error",
        "attempts",
        "failures",
        "next_attempt_at",
        "updated_at",
        "finalized_at",
    }
)


def _anchor_row(r: tuple[Any, ...]) -> AnchorRow:
    values = list(r)
    values[7] = AnchorState(values[7])
    return AnchorRow(*values)


def _tx_row(r: tuple[Any, ...]) -> AnchorTxRow:
    tx_id, anchor_id, raw, ref, exp, delegated, status, error, created, updated = r
    return AnchorTxRow(
        tx_id, anchor_id, raw, ref, exp, bool(delegated), TxStatus(status), error, created, updated
    )


class AnchorStore:
    """SQLite store of anchors and their transactions (WAL, synchronous=FULL).

    The methods are the storage seam: another backend implements the same ones.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._db:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> AnchorStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._db:
            yield self._db

    # ---- meta

    def get_meta(self, key: str) -> str | None:
        with self._tx() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # ---- anchors

    def create(
        self,
        origin: str,
        tree_size: int,
        root_hash: bytes,
        record: bytes,
        signed_note: bytes,
        genesis_id: str | None,
        now: float,
    ) -> AnchorRow:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO anchors (origin, tree_size, root_hash, record, signed_note, "
                "genesis_id, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    origin,
                    tree_size,
                    root_hash,
                    record,
                    signed_note,
                    genesis_id,
                    str(AnchorState.PENDING),
                    now,
                    now,
                ),
            )
            anchor_id = cur.lastrowid
        assert anchor_id is not None
        return self.get(anchor_id)

    def get(self, anchor_id: int) -> AnchorRow:
        with self._tx() as db:
            row = db.execute(_SELECT_ANCHORS + " WHERE id = ?", (anchor_id,)).fetchone()
        if row is None:
            raise AnchorError(f"no anchor with id {anchor_id} in {self.path}")
        return _anchor_row(row)

    def find(self, origin: str, tree_size: int, root_hash: bytes) -> AnchorRow | None:
        with self._tx() as db:
            row = db.execute(
                _SELECT_ANCHORS + " WHERE origin = ? AND tree_size = ? AND root_hash = ?",
                (origin, tree_size, root_hash),
            ).fetchone()
        return None if row is None else _anchor_row(row)

    def anchors(self, *states: AnchorState, limit: int | None = None) -> list[AnchorRow]:
        """Anchors newest first, optionally only in the given states."""
        sql = _SELECT_ANCHORS
        args: list[Any] = []
        if states:
            sql += f" WHERE state IN ({', '.join('?' for _ in states)})"
            args += [str(s) for s in states]
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._tx() as db:
            return [_anchor_row(r) for r in db.execute(sql, args).fetchall()]

    def highest(self, origin: str) -> AnchorRow | None:
        """The not-failed anchor with the largest tree size for a log origin."""
        with self._tx() as db:
            row = db.execute(
                _SELECT_ANCHORS + " WHERE origin = ? AND state != ? "
                "ORDER BY tree_size DESC, id DESC LIMIT 1",
                (origin, str(AnchorState.FAILED)),
            ).fetchone()
        return None if row is None else _anchor_row(row)

    def update(self, anchor_id: int, **fields: Any) -> AnchorRow:
        bad = set(fields) - _UPDATABLE
        if bad:
            raise ValueError(f"not updatable: {sorted(bad)}")
        fields = {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE anchors SET {sets} WHERE id = ?", [*fields.values(), anchor_id])  # noqa: S608
        return self.get(anchor_id)

    # ---- transactions

    def add_tx(self, anchor_id: int, tx: thor.Transaction, now: float) -> AnchorTxRow:
        """Record a built tx before it is posted, and make it the anchor's current tx."""
        tx_id = tx.id_hex()
        with self._tx() as db:
            db.execute(
                "INSERT INTO anchor_txs (tx_id, anchor_id, raw, block_ref, expiration, delegated, "
                "status, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    tx_id,
                    anchor_id,
                    tx.encode(),
                    "0x" + tx.block_ref.hex(),
                    tx.expiration,
                    int(tx.delegated),
                    str(TxStatus.BUILT),
                    now,
                    now,
                ),
            )
            db.execute(
                "UPDATE anchors SET tx_id = ?, attempts = attempts + 1, updated_at = ? "
                "WHERE id = ?",
                (tx_id, now, anchor_id),
            )
        return self.get_tx(tx_id)

    def get_tx(self, tx_id: str) -> AnchorTxRow:
        with self._tx() as db:
            row = db.execute("SELECT * FROM anchor_txs WHERE tx_id = ?", (tx_id,)).fetchone()
        if row is None:
            raise AnchorError(f"no anchor tx {tx_id} in {self.path}")
        return _tx_row(row)

    def txs(self, anchor_id: int, *statuses: TxStatus) -> list[AnchorTxRow]:
        """An anchor's txs, oldest first, optionally only in the given statuses."""
        sql = "SELECT * FROM anchor_txs WHERE anchor_id = ?"
        args: list[Any] = [anchor_id]
        if statuses:
            sql += f" AND status IN ({', '.join('?' for _ in statuses)})"
            args += [str(s) for s in statuses]
        with self._tx() as db:
            return [_tx_row(r) for r in db.execute(sql + " ORDER BY created_at, rowid", args)]

    def set_tx_status(
        self, tx_id: str, status: TxStatus, now: float, error: str | None = None
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE anchor_txs SET status = ?, error = ?, updated_at = ? WHERE tx_id = ?",
                (str(status), error, now, tx_id),
            )


# ----------------------------------------------------------------------------- anchorer

#: thor's tx pool calls a node synced while its best block is less than 6 block intervals old
#: (txpool.isChainSynced); VeChainThor's block interval is 10 s
DEFAULT_MAX_BLOCK_AGE_S = 60.0
#: a legacy tx's price is fixed when it is built: it must still cover the base fee after one
#: full block (the base fee rises at most 1/8 per block, thor.BaseFeeChangeDenominator)
LEGACY_FEE_HEADROOM = (9, 8)
#: what the VeChain SDKs add to a simulated clause's gas (execution can differ slightly from
#: the simulation); unused gas is refunded, so it only raises the prepaid amount
ESTIMATE_BUFFER_GAS = 15_000


@dataclass(frozen=True)
class AnchorConfig:
    """How anchor txs are built and retried.

    ``to``: clause recipient (default: the anchoring account itself, so no contract is needed;
    a contract ``to`` is simulated through ``POST /accounts/*`` and its gas added, or refused
    when the simulation reverts). ``expiration``: blocks after blockRef the tx stays valid (720
    ≈ 2 h at 10 s blocks). ``dynamic_fee``: type 0x51 txs (else legacy). ``max_fee_per_gas``
    None = 2 x the next block's base fee (``/fees/history?newestBlock=next``) + priority;
    ``max_priority_fee_per_gas`` None = ask ``GET /fees/priority``. ``gas_price_coef``: the
    least coefficient of a legacy tx; it is raised so the tx pays the next base fee plus one
    block's rise. ``gas_margin`` is added to the gas. ``min_interval_s``: least time between
    two new anchors. ``retry_base_s``/``retry_max_s``: backoff after the node refuses a tx.
    ``max_block_age_s``: a node whose best block is this old (by our clock and by its own) is
    not synced, and anchoring pauses.
    """

    to: str | None = None
    expiration: int = 720
    dynamic_fee: bool = True
    gas_price_coef: int = 0
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    gas_margin: int = 0
    min_interval_s: float = 0.0
    retry_base_s: float = 5.0
    retry_max_s: float = 600.0
    max_block_age_s: float = DEFAULT_MAX_BLOCK_AGE_S

    def __post_init__(self) -> None:
        if not 0 < self.expiration < 2**32:
            raise ValueError("expiration must be 1..2^32-1 blocks")
        if not 0 <= self.gas_price_coef <= 255:
            raise ValueError("gas_price_coef must be 0..255")
        if self.gas_margin < 0:
            raise ValueError("gas_margin must be >= 0")
        if self.to is not None and len(thor.parse_hex(self.to, "to")) != 20:
            raise ValueError("to must be a 20-byte address")
        if not self.max_block_age_s > 0:
            raise ValueError("max_block_age_s must be > 0")


def legacy_coef_for(price: int, base_gas_price: int) -> int | None:
    """Least gasPriceCoef whose legacy price ``base + base·coef // 255`` is at least ``price``;
    None if even 255 (twice the base price) is not enough."""
    if base_gas_price <= 0:
        return None
    if price <= base_gas_price:
        return 0
    coef = -(-(price - base_gas_price) * 255 // base_gas_price)
    while coef <= 255 and base_gas_price + base_gas_price * coef // 255 < price:
        coef += 1
    return coef if coef <= 255 else None


@dataclass(frozen=True)
class NodeStatus:
    """What the node said at the start of a step: its head, its finality and whether it is
    synced. ``block_age_s``: how old the best block is by the earlier of our clock and the
    node's (its HTTP ``Date``), negative when the block is ahead of both (thor solo
    ``--on-demand`` dates blocks ahead). Kept in the store's meta for ``anchor status``."""

    checked_at: float
    best_number: int
    best_id: str
    best_timestamp: int
    finalized_number: int
    finalized_id: str
    node_time: float | None
    block_age_s: float
    synced: bool
    reason: str | None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeStatus | None:
        try:
            d = json.loads(text)
            return cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError):
            return None

    def explain(self) -> str:
        age = self.block_age_s
        when = f"{age:.0f} s old" if age >= 0 else f"dated {-age:.0f} s ahead of the clock"
        head = f"best #{self.best_number} ({when}), finalized #{self.finalized_number}"
        return head if self.synced else f"{head}; {self.reason}"


@dataclass
class StepReport:
    """What one ``Anchorer.step()`` did; ``node_ok`` is False if the node could not be used.

    ``paused``: why anchoring did nothing this step (the node is not synced). ``node`` (the
    node's head and finality) and ``not_final`` (per included anchor, how far it is from
    final and why) are what was observed, not what was done: they are left out of ``==``."""

    created: list[int] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    included: list[int] = field(default_factory=list)
    finalized: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    reorged: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    node_ok: bool = True
    paused: str | None = None
    node: NodeStatus | None = field(default=None, compare=False)
    not_final: dict[int, FinalityGap] = field(default_factory=dict, compare=False)


class Anchorer:
    """Anchors the newest checkpoint of ``source`` with ``key``, tracking everything in ``store``.

    ``sponsor``: optional VIP-191 gas payer key (the anchoring account then needs no VTHO).
    ``clock``: seconds, injectable so tests control backoff without sleeping.
    """

    def __init__(
        self,
        store: AnchorStore,
        client: ThorClient,
        source: CheckpointSource,
        key: thor.SecretKey,
        *,
        sponsor: thor.SecretKey | None = None,
        config: AnchorConfig | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.client = client
        self.source = source
        self.key = key
        self.sponsor = sponsor
        self.config = config or AnchorConfig()
        self.clock = clock
        self._genesis_id: str | None = None
        self._chain_tag: int | None = None
        self._lock_fd: int | None = self._lock(store.path)

    @staticmethod
    def _lock(path: Path) -> int:
        lock_path = Path(str(path) + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AnchorError(
                f"another anchorer is running on {path} (it holds {lock_path}): stop it first; "
                "two anchorers on one store would anchor every checkpoint twice"
            ) from None
        return fd

    def close(self) -> None:
        """Release the store lock (the store and client are the caller's to close)."""
        fd = getattr(self, "_lock_fd", None)
        if fd is not None:
            self._lock_fd = None
            os.close(fd)

    def __enter__(self) -> Anchorer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    @property
    def to_address(self) -> bytes:
        return thor.parse_hex(self.config.to, "to") if self.config.to else self.key.address

    # ---- the pass

    def step(self) -> StepReport:
        """One pass: check the chain and that the node is synced, poll txs, advance states,
        submit what is due. A node on another network raises :class:`ChainMismatch`."""
        report = StepReport()
        try:
            self._check_chain()
            best, node_time = self.client.best_block_and_node_time()
            finalized = self.client.finalized_block()
            status = self._node_status(best, finalized, node_time)
            report.node = status
            self.store.set_meta("node_status", status.to_json())
            if not status.synced:
                assert status.reason is not None
                report.node_ok = False
                report.paused = status.reason
                report.errors.append(status.reason)
                log.warning("anchoring paused: %s", status.reason)
                return report
            for a in self.store.anchors(AnchorState.PENDING, AnchorState.INCLUDED):
                if a.state is AnchorState.PENDING:
                    self._poll_pending(a, best, finalized, report)
                else:
                    self._poll_included(a, best, finalized, report)
            self._maybe_create(report)
            for a in self.store.anchors(AnchorState.PENDING):
                self._submit(a, best, report)
        except WrongNetwork as e:
            raise self._mismatch(e.got) from None
        except (NodeUnreachable, NodeResponseError) as e:
            report.node_ok = False
            report.errors.append(str(e))
            log.warning("anchoring paused: %s", e)
        return report

    def _mismatch(self, got: str | None) -> ChainMismatch:
        stored = self.store.get_meta("genesis_id")
        return ChainMismatch(
            f"anchor store {self.store.path} belongs to the chain with genesis {stored}, but "
            f"the node at {self.client.base_url} is on "
            + (f"genesis {got}" if got else "another network")
            + ": point the anchorer at a node of the right network, or use a new store for "
            "that network"
        )

    def _check_chain(self) -> None:
        if self._genesis_id is not None:
            return
        stored = self.store.get_meta("genesis_id")
        if stored is not None:
            try:
                self.client.expect_genesis(stored)  # every request now carries x-genesis-id
            except WrongNetwork as e:
                raise self._mismatch(e.got) from None
        genesis = self.client.genesis()
        if stored is None:
            self.store.set_meta("genesis_id", genesis.id)
        elif stored != genesis.id:
            raise self._mismatch(genesis.id)
        self._genesis_id = genesis.id
        self._chain_tag = genesis.chain_tag

    def _node_status(self, best: Block, finalized: Block, node_time: float | None) -> NodeStatus:
        now = self.clock()
        reference = now if node_time is None else min(now, node_time)
        age = reference - best.timestamp
        limit = self.config.max_block_age_s
        synced = age < limit
        reason = None
        if not synced:
            reason = (
                f"node not synced: its best block #{best.number} is {age:.0f} s old by "
                + ("our clock" if node_time is None else "both our clock and the node's")
                + f" (limit {limit:.0f} s: 6 block intervals, as thor's own tx pool judges "
                "sync); anchoring is paused until it catches up. Check the node's peers, "
                "disk and logs, or use another node."
            )
        return NodeStatus(
            now,
            best.number,
            best.id,
            best.timestamp,
            finalized.number,
            finalized.id,
            node_time,
            age,
            synced,
            reason,
        )

    # ---- polling

    def _poll_pending(
        self, a: AnchorRow, best: Block, finalized: Block, report: StepReport
    ) -> None:
        now = self.clock()
        live = self.store.txs(a.id, *_LIVE)
        for t in live:  # receipts are read after best, so "no receipt" + expired is final
            receipt = self.client.receipt(t.tx_id)
            if receipt is None:
                continue
            self.store.set_tx_status(t.tx_id, TxStatus.INCLUDED, now)
            common = {
                "tx_id": t.tx_id,
                "block_number": receipt.block_number,
                "block_id": receipt.block_id,
                "block_timestamp": receipt.block_timestamp,
                "gas_payer": receipt.gas_payer,
                "updated_at": now,
            }
            if receipt.reverted:
                reason = f"tx {t.tx_id} reverted in block {receipt.block_number}"
                self.store.update(a.id, state=AnchorState.FAILED, failure_reason=reason, **common)
                report.failed.append(a.id)
                log.error("anchor %d for tree size %d failed: %s", a.id, a.tree_size, reason)
            else:
                self.store.update(a.id, state=AnchorState.INCLUDED, last_error=None, **common)
                report.included.append(a.id)
                log.info("anchor %d included in block %d", a.id, receipt.block_number)
                self._poll_included(self.store.get(a.id), best, finalized, report)
            return
        for t in live:
            if t.dead_after(best.number):
                self.store.set_tx_status(t.tx_id, TxStatus.EXPIRED, now)
                log.info("anchor tx %s expired unseen at block %d", t.tx_id, best.number)

    def _poll_included(
        self, a: AnchorRow, best: Block, finalized: Block, report: StepReport
    ) -> None:
        """Final = the receipt seen from the finalized block (``?head=``): one answer, so the
        block cannot move between "where is it" and "is that final"."""
        assert a.tx_id is not None
        now = self.clock()
        final = self.client.receipt(a.tx_id, head=finalized.id)
        receipt = final if final is not None else self.client.receipt(a.tx_id)
        if receipt is None:  # its block left the trunk: back to pending, the tx may return
            self.store.set_tx_status(a.tx_id, TxStatus.SENT, now)
            self.store.update(
                a.id,
                state=AnchorState.PENDING,
                block_number=None,
                block_id=None,
                block_timestamp=None,
                updated_at=now,
            )
            report.reorged.append(a.id)
            log.warning("anchor %d: tx %s no longer on the trunk", a.id, a.tx_id)
            return
        if receipt.reverted:
            reason = f"tx {a.tx_id} reverted in block {receipt.block_number}"
            self.store.update(a.id, state=AnchorState.FAILED, failure_reason=reason, updated_at=now)
            report.failed.append(a.id)
            return
        if receipt.block_id != a.block_id:
            a = self.store.update(
                a.id,
                block_number=receipt.block_number,
                block_id=receipt.block_id,
                block_timestamp=receipt.block_timestamp,
                updated_at=now,
            )
        if final is not None:
            self.store.update(a.id, state=AnchorState.FINALIZED, finalized_at=now, updated_at=now)
            report.finalized.append(a.id)
            log.info("anchor %d finalized (block %d)", a.id, receipt.block_number)
            return
        gap = FinalityGap(receipt.block_number, finalized.number, best.number)
        report.not_final[a.id] = gap
        log.debug("anchor %d: %s", a.id, gap.explain())

    # ---- new anchors

    def _maybe_create(self, report: StepReport) -> None:
        got = self.source.latest_checkpoint()
        if got is None:
            return
        cp, note = got
        if self.store.find(cp.origin, cp.size, cp.root_hash) is not None:
            return
        if self.store.anchors(AnchorState.PENDING, limit=1):
            return  # one tx in flight at a time; the newest checkpoint goes next
        now = self.clock()
        if self.config.min_interval_s:
            last = self.store.anchors(limit=1)
            if last and now - last[0].created_at < self.config.min_interval_s:
                return
        if not 0 <= cp.size < 2**63:
            msg = f"log {cp.origin!r}: tree size {cp.size} does not fit the anchor store (< 2^63)"
            report.errors.append(msg)
            log.error(msg)
            return
        top = self.store.highest(cp.origin)
        if top is not None and (
            top.tree_size > cp.size or (top.tree_size == cp.size and top.root_hash != cp.root_hash)
        ):
            msg = (
                f"log {cp.origin!r}: checkpoint of size {cp.size} root {cp.root_hash.hex()} "
                f"conflicts with anchored size {top.tree_size} root {top.root_hash.hex()}; "
                "not anchoring it: the log went backwards or forked; investigate first"
            )
            report.errors.append(msg)
            log.error(msg)
            return
        record = AnchorRecord.for_checkpoint(cp.origin, cp.size, cp.root_hash).encode()
        row = self.store.create(
            cp.origin, cp.size, cp.root_hash, record, note, self._genesis_id, now
        )
        report.created.append(row.id)
        log.info("anchor %d created for %s size %d", row.id, cp.origin, cp.size)

    # ---- submission

    def _fee_fields(self, best: Block) -> dict[str, Any]:
        """Fee fields for a tx built now, from the next block's base fee."""
        cfg = self.config
        base_fee = self.client.next_base_fee()
        if base_fee is None:
            base_fee = best.base_fee_per_gas
        if base_fee is None:  # before GALACTICA: no base fee, no 0x51
            if cfg.dynamic_fee:
                log.warning("node has no base fee (pre-GALACTICA chain): sending a legacy tx")
            return {"gas_price_coef": cfg.gas_price_coef}
        if not cfg.dynamic_fee:
            legacy_base = self.client.legacy_base_gas_price()
            num, den = LEGACY_FEE_HEADROOM
            coef = legacy_coef_for(-(-base_fee * num // den), legacy_base)
            if coef is not None:
                return {"gas_price_coef": max(cfg.gas_price_coef, coef)}
            log.warning(
                "a legacy tx cannot pay the base fee %d (at most 2 x %d): sending a dynamic-fee "
                "tx instead",
                base_fee,
                legacy_base,
            )
        prio = cfg.max_priority_fee_per_gas
        if prio is None:
            try:
                prio = self.client.priority_fee()
            except NodeResponseError as e:
                if e.status not in (404, 405):
                    raise
                log.warning("node has no GET /fees/priority; using priority fee 0")
                prio = 0
        max_fee = cfg.max_fee_per_gas
        if max_fee is None:
            max_fee = 2 * base_fee + prio
        return {
            "tx_type": thor.TYPE_DYNAMIC_FEE,
            "max_fee_per_gas": max(max_fee, prio),
            "max_priority_fee_per_gas": prio,
        }

    def _gas(self, clause: thor.Clause) -> int:
        """Intrinsic gas, plus the simulated execution when ``to`` is a contract."""
        gas = thor.intrinsic_gas([clause]) + self.config.gas_margin
        if self.config.to is None:  # the anchoring account itself: no code runs
            return gas
        assert clause.to is not None
        if not self.client.account(clause.to).has_code:
            return gas
        payer = None if self.sponsor is None else self.sponsor.address
        sim = self.client.inspect_clauses([clause], caller=self.key.address, gas_payer=payer)
        (result,) = sim.results  # one clause: its result even when it reverted
        if result.reverted:
            raise ClauseRejected(
                f"the anchor clause to contract 0x{clause.to.hex()} reverts when the node "
                f"simulates it ({result.vm_error or 'reverted'}): anchor to an account without "
                "code (leave [anchor] to unset: the anchoring account itself) or to a contract "
                "that accepts the 78-byte record"
            )
        return gas + result.gas_used + (ESTIMATE_BUFFER_GAS if result.gas_used else 0)

    def _build(self, a: AnchorRow, best: Block) -> thor.Transaction:
        assert self._chain_tag is not None
        clause = thor.Clause(self.to_address, 0, a.record)
        tx = thor.Transaction(
            chain_tag=self._chain_tag,
            block_ref=best.block_ref,
            expiration=self.config.expiration,
            clauses=(clause,),
            gas=self._gas(clause),
            nonce=secrets.randbits(64),
            **self._fee_fields(best),
        )
        payer = None if self.sponsor is None else self.sponsor.secret_bytes()
        return thor.sign_transaction(tx, self.key.secret_bytes(), payer)

    def _backoff(self, failures: int) -> float:
        return float(
            min(self.config.retry_base_s * 2 ** max(0, failures - 1), self.config.retry_max_s)
        )

    def _submit(self, a: AnchorRow, best: Block, report: StepReport) -> None:
        now = self.clock()
        live = [t for t in self.store.txs(a.id, *_LIVE) if not t.dead_after(best.number)]
        waiting = False
        for t in live:
            if t.status is TxStatus.SENT and self.client.transaction(t.tx_id, pending=True):
                waiting = True  # the node holds it: nothing to do but wait for a block
                continue
            self._post(a, t, report)  # never posted, fate unknown, or forgotten by the node
            waiting = True
        if waiting or now < a.next_attempt_at:
            return
        rebuilt = bool(self.store.txs(a.id, TxStatus.EXPIRED))
        try:
            tx = self._build(a, best)
        except ClauseRejected as e:
            self._failed_attempt(a, str(e), now, now + self._backoff(a.failures + 1), report)
            log.error("anchor %d: %s", a.id, e)
            return
        row = self.store.add_tx(a.id, tx, now)
        if rebuilt:
            report.rebuilt.append(row.tx_id)
        self._post(self.store.get(a.id), row, report)

    def _failed_attempt(
        self, a: AnchorRow, error: str, now: float, next_at: float, report: StepReport
    ) -> None:
        self.store.update(
            a.id,
            last_error=error,
            failures=a.failures + 1,
            next_attempt_at=next_at,
            updated_at=now,
        )
        report.errors.append(error)

    def _post(self, a: AnchorRow, t: AnchorTxRow, report: StepReport) -> None:
        now = self.clock()
        try:
            self.client.send_raw(t.raw)
        except (NodeUnreachable, NodeResponseError):
            self.store.set_tx_status(t.tx_id, TxStatus.UNKNOWN, now)
            raise
        except TxRejected as e:
            if e.known:  # already in a block: the receipt shows up on the next poll
                self.store.set_tx_status(t.tx_id, TxStatus.SENT, now)
                return
            status = TxStatus.EXPIRED if e.expired else TxStatus.REJECTED
            self.store.set_tx_status(t.tx_id, status, now, error=e.node_message)
            # expired: a fresh blockRef cures it; fee too low: the next build reads the new fee
            at_once = e.expired or isinstance(e, FeeTooLow)
            self._failed_attempt(
                a, str(e), now, now if at_once else now + self._backoff(a.failures + 1), report
            )
            level = (
                logging.ERROR
                if isinstance(e, InsufficientEnergy | BadTransaction)
                else logging.WARNING
            )
            log.log(level, "anchor %d: %s", a.id, e)
            return
        self.store.set_tx_status(t.tx_id, TxStatus.SENT, now)
        self.store.update(a.id, last_error=None, failures=0, next_attempt_at=0, updated_at=now)
        report.submitted.append(t.tx_id)
        log.info("anchor %d: tx %s sent", a.id, t.tx_id)


def run_forever(
    anchorer: Anchorer,
    stop: threading.Event,
    *,
    interval_s: float = 30.0,
    max_backoff_s: float = 600.0,
) -> None:
    """Service loop: ``step()`` every ``interval_s``; while the node is down, back off doubling."""
    delay = interval_s
    while not stop.is_set():
        report = anchorer.step()
        delay = interval_s if report.node_ok else min(max(delay, interval_s) * 2, max_backoff_s)
        stop.wait(delay)


# ----------------------------------------------------------------------------- CLI helpers


def anchor_status(
    store: AnchorStore, *, state: AnchorState | None = None, limit: int | None = None
) -> list[AnchorRow]:
    """Anchors newest first (optionally in one state), for ``fieldproof anchor status``."""
    return store.anchors(*(() if state is None else (state,)), limit=limit)


def anchor_txs(store: AnchorStore, anchor_id: int) -> list[AnchorTxRow]:
    """Every tx built for one anchor, oldest first."""
    store.get(anchor_id)
    return store.txs(anchor_id)


def find_anchor(
    store: AnchorStore, origin: str, tree_size: int, root_hash: bytes
) -> AnchorRow | None:
    """The anchor of one checkpoint, if any (for bundle export)."""
    return store.find(origin, tree_size, root_hash)


def retry_failed(store: AnchorStore, anchor_id: int, *, now: float | None = None) -> AnchorRow:
    """Put a failed anchor back to pending so the next step builds a fresh tx for it."""
    a = store.get(anchor_id)
    if a.state is not AnchorState.FAILED:
        raise AnchorError(f"anchor {anchor_id} is {a.state}, only failed anchors can be retried")
    t = time.time() if now is None else now
    return store.update(
        anchor_id,
        state=AnchorState.PENDING,
        failure_reason=None,
        failures=0,
        next_attempt_at=0,
        tx_id=None,
        block_number=None,
        block_id=None,
        block_timestamp=None,
        gas_payer=None,
        updated_at=t,
    )


def node_status(store: AnchorStore) -> NodeStatus | None:
    """What the node said at the anchorer's last step (head, finality, synced), if any."""
    text = store.get_meta("node_status")
    return None if text is None else NodeStatus.from_json(text)


def anchor_detail(row: AnchorRow, status: NodeStatus | None) -> str | None:
    """Why an anchor is where it is, for ``fieldproof anchor status``: how far an included one
    is from final (as of the last step), why a pending one waits, why a failed one failed."""
    if row.state is AnchorState.FAILED:
        return row.failure_reason
    if row.state is AnchorState.FINALIZED:
        return None
    paused = None if status is None or status.synced else status.reason
    if row.state is AnchorState.PENDING:
        if paused:
            return paused
        if row.last_error:
            return row.last_error
        return "waiting for inclusion" + (f" of tx {row.tx_id}" if row.tx_id else "")
    if row.block_number is None or status is None:
        return None
    gap = finality_gap_of(row, status)
    text = gap.explain() if gap is not None else None
    return f"{text} (as of the last step); {paused}" if paused else text


def finality_gap_of(row: AnchorRow, status: NodeStatus) -> FinalityGap | None:
    """The finality gap of an included anchor as of the node status' step."""
    if row.state is not AnchorState.INCLUDED or row.block_number is None:
        return None
    return FinalityGap(row.block_number, status.finalized_number, status.best_number)
