"""The evidence log's storage seam: where entries and perfect-subtree hashes live.

Tree logic lives in `fieldproof.formats.merkle` and `MerkleLog`; a store only keeps rows.
`NodeStore` turns three storage primitives into an append, so a PostgreSQL store is a new subclass
(about a hundred lines of SQL), not a rewrite.

The collector appends in the SAME transaction as its dedupe/quarantine rows: `append` never
commits, so an entry is durable exactly when the collector's own rows are, and a rollback
removes both. `open_log(path)` is the standalone mode that commits each append itself.
"""

from __future__ import annotations

import functools
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, runtime_checkable

from fieldproof.errors import StorageError
from fieldproof.formats import merkle
from fieldproof.formats.merkle import NodeID
from fieldproof.formats.tiles import MAX_ENTRY_BYTES

__all__ = [
    "LogCorruptError",
    "LogError",
    "LogStore",
    "MerkleLog",
    "NodeStore",
    "SqliteLogStore",
    "open_log",
]

MAX_ENTRY_SIZE = MAX_ENTRY_BYTES
"""Largest entry accepted (65,535 bytes): the log is published as C2SP tlog-tiles, whose entry
bundles give each entry a 16-bit length. A longer entry, once appended, could never be tiled:
every later checkpoint would stay unpublished. Signed readings are a few hundred bytes; the
collector refuses longer messages before they get here (``max_message_bytes``)."""


class LogError(StorageError, ValueError):
    """A request the log cannot answer (index or size beyond what it holds, bad entry)."""


class LogCorruptError(StorageError):
    """Stored rows disagree with each other: the database was edited or damaged."""


@runtime_checkable
class LogStore(Protocol):
    """What `MerkleLog` needs from storage."""

    def size(self) -> int:
        """Number of entries committed or pending in the current transaction."""
        ...

    def append(self, entries: Sequence[bytes]) -> int:
        """Add entries (and the subtrees they complete) without committing; returns first index."""
        ...

    def entries(self, start: int, end: int) -> list[bytes]:
        """Entries [start, end) exactly as appended."""
        ...

    def get_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """Hashes of stored perfect subtrees (level, index), in the order asked."""
        ...


class NodeStore(ABC):
    """Append logic shared by every backend; subclasses supply rows and transactions."""

    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def entries(self, start: int, end: int) -> list[bytes]: ...

    @abstractmethod
    def get_nodes(self, ids: Sequence[NodeID]) -> list[bytes]: ...

    @abstractmethod
    def _write(
        self, first: int, entries: Sequence[bytes], nodes: Sequence[tuple[int, int, bytes]]
    ) -> None:
        """Insert entry rows first.. and node rows; must fail (not overwrite) on existing keys."""

    @abstractmethod
    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """All-or-nothing scope for one append, nested in the caller's transaction if any."""
        yield

    def append(self, entries: Sequence[bytes]) -> int:
        """Append entries in one atomic step; the caller's commit makes them durable."""
        checked = [_check_entry(e, i) for i, e in enumerate(entries)]
        if not checked:
            return self.size()
        with self._atomic():
            first = self.size()
            frontier_hashes = self.get_nodes(merkle.frontier(first)) if first else []
            nodes = merkle.append_leaves(
                first, frontier_hashes, [merkle.leaf_hash(e) for e in checked]
            )
            self._write(first, checked, nodes)
        return first


def _check_entry(entry: object, i: int) -> bytes:
    if not isinstance(entry, bytes | bytearray | memoryview):
        raise LogError(
            f"log entry #{i} must be bytes (the exact message received), got {type(entry).__name__}"
        )
    data = bytes(entry)
    if len(data) > MAX_ENTRY_SIZE:
        raise LogError(
            f"log entry #{i} of this append is {len(data)} bytes; the log accepts at most "
            f"{MAX_ENTRY_SIZE} (a C2SP tlog-tiles entry bundle gives each entry a 16-bit length, "
            "so a longer entry could never be published); nothing of this append was written"
        )
    return data


_SCHEMA = (
    # idx is dense from 0: entry i is leaf i of the Merkle tree.
    "CREATE TABLE IF NOT EXISTS fp_log_entries (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL)",
    # Every complete perfect subtree: level 0 = leaf hashes; (level, idx) covers leaves
    # [idx << level, (idx + 1) << level).
    "CREATE TABLE IF NOT EXISTS fp_log_nodes ("
    " level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL,"
    " PRIMARY KEY (level, idx)) WITHOUT ROWID",
)

_SAVEPOINT = "fp_log_append"
_NODES_PER_QUERY = 200


@functools.lru_cache(maxsize=_NODES_PER_QUERY)
def _nodes_query(count: int) -> str:
    """SELECT for `count` nodes; only fixed text and placeholders, values are bound."""
    one = "SELECT level, idx, hash FROM fp_log_nodes WHERE level = ? AND idx = ?"
    return " UNION ALL ".join([one] * count)


_SYNCHRONOUS_FULL = 2


class SqliteLogStore(NodeStore):
    """Log rows in a caller's SQLite connection; never commits unless `commit_appends`.

    With the default, call `append` inside your transaction and commit it yourself: the entry
    rows and your own rows land together or not at all. The tables are created (and committed,
    if no transaction is open) on construction.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        commit_appends: bool = False,
        owns_connection: bool = False,
        require_full_sync: bool = True,
    ) -> None:
        self.conn = conn
        self._commit_appends = commit_appends
        self._owns = owns_connection
        if require_full_sync:
            level = conn.execute("PRAGMA synchronous").fetchone()[0]
            if int(level) < _SYNCHRONOUS_FULL:
                raise LogError(
                    f"SQLite connection has PRAGMA synchronous={level}; the evidence log needs "
                    "synchronous=FULL (2) or EXTRA (3) so a committed entry survives power loss"
                )
        was_in_tx = conn.in_transaction
        for stmt in _SCHEMA:
            conn.execute(stmt)
        if not was_in_tx and conn.in_transaction:
            conn.commit()

    def size(self) -> int:
        row = self.conn.execute("SELECT max(idx) FROM fp_log_entries").fetchone()
        return 0 if row is None or row[0] is None else int(row[0]) + 1

    def entries(self, start: int, end: int) -> list[bytes]:
        if start >= end:
            return []
        rows = self.conn.execute(
            "SELECT idx, entry FROM fp_log_entries WHERE idx >= ? AND idx < ? ORDER BY idx",
            (start, end),
        ).fetchall()
        if len(rows) != end - start or (rows and (rows[0][0] != start or rows[-1][0] != end - 1)):
            raise LogCorruptError(
                f"log entries {start}..{end - 1} are not all stored: the database is damaged"
            )
        return [bytes(r[1]) for r in rows]

    def get_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        if not ids:
            return []
        found: dict[NodeID, bytes] = {}
        unique = list(dict.fromkeys(ids))
        # One indexed lookup per node, as one statement: (level, idx) IN (VALUES ...) would
        # scan the table. SQLite allows 500 compound terms; proofs need well under 200 nodes.
        for i in range(0, len(unique), _NODES_PER_QUERY):
            chunk = unique[i : i + _NODES_PER_QUERY]
            params = [x for node in chunk for x in node]
            for level, idx, h in self.conn.execute(_nodes_query(len(chunk)), params):
                found[(level, idx)] = bytes(h)
        missing = [n for n in unique if n not in found]
        if missing:
            raise LogCorruptError(
                f"stored subtree hashes missing for (level, index) {missing[:5]}: "
                "the log database is damaged or was written by something else"
            )
        return [found[n] for n in ids]

    def _write(
        self, first: int, entries: Sequence[bytes], nodes: Sequence[tuple[int, int, bytes]]
    ) -> None:
        self.conn.executemany(
            "INSERT INTO fp_log_entries (idx, entry) VALUES (?, ?)",
            zip(range(first, first + len(entries)), entries, strict=True),
        )
        self.conn.executemany("INSERT INTO fp_log_nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)

    @contextmanager
    def _atomic(self) -> Iterator[None]:
        """A savepoint inside the caller's transaction (or a new IMMEDIATE one).

        IMMEDIATE takes the write lock before reading the size, so two writers cannot both
        pick the same next index. A failed append rolls back to the savepoint only, leaving
        the caller's other rows untouched.
        """
        conn = self.conn
        began = not conn.in_transaction
        if began:
            conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield
        except BaseException:
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
            if began:
                conn.rollback()
            raise
        conn.execute(f"RELEASE {_SAVEPOINT}")
        if began and self._commit_appends:
            conn.commit()

    def close(self) -> None:
        """Close the connection if this store opened it (see `open_log`)."""
        if self._owns:
            self.conn.close()


class MerkleLog:
    """An RFC 9162 log over any `LogStore`: roots and proofs for any size up to the current one.

    Every answer reads O(log n) stored nodes; nothing is rebuilt.
    """

    def __init__(self, store: LogStore) -> None:
        self.store = store

    def size(self) -> int:
        return self.store.size()

    def append(self, entries: Sequence[bytes]) -> int:
        """Append through the store (which decides whether that commits); returns first index."""
        return self.store.append(entries)

    def entry(self, index: int) -> bytes:
        self._check_index(index, self.size())
        return self.store.entries(index, index + 1)[0]

    def entries(self, start: int, end: int) -> list[bytes]:
        size = self.size()
        if not 0 <= start <= end <= size:
            raise LogError(f"entry range {start}..{end} is outside the log (size {size})")
        return self.store.entries(start, end)

    def leaf_hash(self, index: int) -> bytes:
        self._check_index(index, self.size())
        return self.store.get_nodes([(0, index)])[0]

    def root(self, size: int | None = None) -> bytes:
        current = self.size()
        size = current if size is None else self._check_size(size, current)
        return merkle.stored_root(size, self.store.get_nodes)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        current = self.size()
        size = current if size is None else self._check_size(size, current)
        self._check_index(index, size)
        return merkle.stored_inclusion_proof(index, size, self.store.get_nodes)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        current = self.size()
        size2 = current if size2 is None else self._check_size(size2, current)
        self._check_size(size1, size2)
        return merkle.stored_consistency_proof(size1, size2, self.store.get_nodes)

    def close(self) -> None:
        close = getattr(self.store, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> MerkleLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _check_size(size: int, limit: int) -> int:
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= limit:
            raise LogError(f"tree size {size!r} is not between 0 and {limit} (the log's size)")
        return size

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
            raise LogError(f"leaf index {index!r} is not in a tree of {size} entries")


def open_log(path: str | Path) -> MerkleLog:
    """A standalone log in its own SQLite file (WAL, synchronous=FULL); each append commits."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=True)
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=10000")
        store = SqliteLogStore(conn, commit_appends=True, owns_connection=True)
    except Exception:
        conn.close()
        raise
    return MerkleLog(store)
