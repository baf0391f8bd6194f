"""The collector's evidence log: every accepted message and every registry change, appended in
the collector's own database transaction, with signed checkpoints over it.

Entries are the exact bytes received (a tagged COSE_Sign1, first byte 0xd2), a registry event
(a deterministic-CBOR map whose ``"t"`` is ``"fieldproof/registry/v1"``) or a completeness seal
(``"t"`` ``"fieldproof/seal/v1"``, :mod:`fieldproof.formats.seal`): before each checkpoint is
signed a seal is appended, in the same write transaction, so every checkpoint's last leaf fixes
what the log held per farm and gateway. An entry is at most 65,535 bytes
(:data:`anchor.logstore.MAX_ENTRY_SIZE`, what a tlog-tiles entry bundle can hold): the store
refuses a longer one, and the collector's ``max_message_bytes`` is bounded by it. Checkpoints
are C2SP signed notes by the collector's log key, kept in the same database so an anchorer or
exporter can read them without the key.
docs/evidence-log.md describes the formats."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from anchor.logkey import load_or_create_log_key
from anchor.logstore import MerkleLog, SqliteLogStore
from fieldproof.errors import ConfigError
from fieldproof.formats.cbor import encode_deterministic
from fieldproof.formats.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from fieldproof.formats.note import Ed25519Signer, Ed25519Verifier
from fieldproof.formats.seal import SealAccumulator

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# the seal writer's state (the accumulator over every entry so far, one row) and a row per
# seal: the farm records (empty for all but the newest), which the exporter proves from
_SEAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS seal_state (id INTEGER PRIMARY KEY CHECK (id = 0),
    size INTEGER NOT NULL, root BLOB NOT NULL, state BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seal_records (idx INTEGER PRIMARY KEY, records BLOB NOT NULL);
"""
#: seals whose farm records are kept (an export reads the newest; a few more cover an export
#: that started just before the next checkpoint)
KEEP_SEAL_RECORDS = 16
#: log entries read at once while the seal state catches up with an older log
_SEAL_BATCH = 5000


class EvidenceError(ConfigError):
    """The evidence log cannot be used as configured; the message says what to fix."""


@dataclass(frozen=True)
class StoredCheckpoint:
    checkpoint: Checkpoint
    note: bytes
    created_at: float


class EvidenceLog:
    """Appends (inside the caller's transaction) and checkpoints the collector's log."""

    def __init__(self, db: sqlite3.Connection, origin: str, signer: Ed25519Signer | None) -> None:
        self.db = db
        self.origin = origin
        self.signer = signer
        self.store = SqliteLogStore(db)
        self.log = MerkleLog(self.store)
        db.executescript(_SCHEMA)
        if signer is not None:  # only the checkpoint signer writes seals; readers may be ro
            db.executescript(_SEAL_SCHEMA)
        row = db.execute("SELECT value FROM log_meta WHERE key='origin'").fetchone()
        if row is None:
            with db:
                db.execute("INSERT INTO log_meta VALUES ('origin', ?)", (origin,))
        elif row[0] != origin:
            raise EvidenceError(
                f"this database holds the log {row[0]!r} but the config says {origin!r}; "
                "a log's origin never changes — fix [log] origin_base or collector_id"
            )

    @classmethod
    def open(cls, db: sqlite3.Connection, origin: str, key_file: Path | None) -> EvidenceLog:
        """With ``key_file`` the log can sign checkpoints (the collector); without, read only."""
        signer = load_or_create_log_key(key_file, origin) if key_file is not None else None
        return cls(db, origin, signer)

    # ------------------------------------------------------------------ EvidenceSink

    def append(self, entries: Sequence[bytes]) -> int | None:
        """Append within the caller's open transaction; the caller commits. An entry longer
        than :data:`~anchor.logstore.MAX_ENTRY_SIZE` raises :class:`~anchor.logstore.LogError`
        before anything is written (it could never be published as tiles)."""
        return self.store.append(entries)

    # ------------------------------------------------------------------ checkpoints

    def verifier(self) -> Ed25519Verifier:
        if self.signer is None:
            raise EvidenceError("no log key loaded")
        return self.signer.verifier()

    def checkpoint(self) -> StoredCheckpoint | None:
        """If the log grew since the last checkpoint: append a seal of everything before it and
        sign a checkpoint whose last leaf is that seal, in one write transaction (the write lock
        is taken first, so no other writer's entry can land between seal and checkpoint). An
        unchanged log gets neither: a seal never follows a seal.

        The entries since the last seal are folded into the seal state before the lock is
        taken (reads only), so ingestion waits only for the few appended meanwhile."""
        if self.signer is None:
            raise EvidenceError("checkpoints need the log key (collector only)")
        ahead: tuple[SealAccumulator, tuple[int, bytes] | None] | None = None
        if not self.db.in_transaction:
            ahead = self._seal_state()
            self._fold(ahead[0], self.log.size())
            self.db.execute("BEGIN IMMEDIATE")
        with self.db:
            size = self.log.size()
            latest = self.latest()
            if size == 0 or (latest is not None and latest.checkpoint.size >= size):
                return None
            size = self._append_seal(size, ahead)
            cp = Checkpoint(self.origin, size, self.log.root(size))
            note = sign_checkpoint(cp, self.signer)
            now = time.time()
            self.db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?)", (size, cp.root_hash, note, now)
            )
        return StoredCheckpoint(cp, note, now)

    def _seal_head(self) -> tuple[int, bytes] | None:
        """(size, root) the committed seal state was folded up to, if the log still has that
        root there; None for no state, or one of another history (a log rewritten or restored
        behind it), which is then rebuilt from the entries."""
        row = self.db.execute("SELECT size, root FROM seal_state WHERE id = 0").fetchone()
        if row is None:
            return None
        size, root = int(row[0]), bytes(row[1])
        if size > self.log.size() or self.log.root(size) != root:
            log.warning("the seal state (up to log size %d) is not of this log's history: the "
                        "log was rewritten or restored behind it; rebuilding it from the log's "
                        "entries", size)
            return None
        return size, root

    def _seal_state(self) -> tuple[SealAccumulator, tuple[int, bytes] | None]:
        """The committed seal state (empty when there is none of this history) and its head."""
        head = self._seal_head()
        if head is None:
            return SealAccumulator(), None
        (raw,) = self.db.execute("SELECT state FROM seal_state WHERE id = 0").fetchone()
        # our own row, written with the log key's write lock: no item bound for a big fleet
        return SealAccumulator.from_obj(cbor2.loads(bytes(raw))), head

    def _fold(self, acc: SealAccumulator, size: int) -> None:
        """Fold entries ``acc.size … size − 1`` in (an older log is read once, in batches)."""
        while acc.size < size:
            acc.add(self.store.entries(acc.size, min(size, acc.size + _SEAL_BATCH)))

    def _append_seal(self, size: int,
                     ahead: tuple[SealAccumulator, tuple[int, bytes] | None] | None) -> int:
        """Bring the seal state up to ``size`` entries, append the seal at index ``size`` and
        keep its farm records; the new log size. ``ahead``: the state folded before the lock
        and the committed head it started from, used unless that changed meanwhile."""
        if ahead is not None and ahead[0].size <= size and self._seal_head() == ahead[1]:
            acc = ahead[0]
        else:
            acc = self._seal_state()[0]
        self._fold(acc, size)
        seal, records = acc.seal()
        entry = seal.encode()
        if self.store.append([entry]) != seal.size:
            raise EvidenceError("the log grew while its seal was written; the write lock should "
                                "prevent that: check that nothing else writes this database")
        acc.add([entry])
        state = encode_deterministic(acc.to_obj())
        self.db.execute("INSERT OR REPLACE INTO seal_state VALUES (0, ?, ?, ?)",
                        (acc.size, self.log.root(acc.size), state))
        # (replace: a row at this index can only be of a history rewritten behind it)
        self.db.execute("INSERT OR REPLACE INTO seal_records VALUES (?, ?)",
                        (seal.size, encode_deterministic(records)))
        # one row per seal stays (where the seals are); only the newest keep their records
        self.db.execute("UPDATE seal_records SET records = X'' WHERE idx <= ? AND records <> X''",
                        (seal.size - KEEP_SEAL_RECORDS,))
        return acc.size

    def seal_records(self, index: int) -> list[bytes] | None:
        """The encoded farm records of the seal at log index ``index`` (sorted by farm), or
        None: no seal there, an older log, or records no longer kept."""
        try:
            row = self.db.execute("SELECT records FROM seal_records WHERE idx = ?",
                                  (index,)).fetchone()
        except sqlite3.OperationalError:  # a database from before seals (no table)
            return None
        if row is None or not row[0]:
            return None
        return [bytes(r) for r in cbor2.loads(bytes(row[0]))]

    def latest(self) -> StoredCheckpoint | None:
        row = self.db.execute(
            "SELECT size, root, note, created_at FROM checkpoints ORDER BY size DESC LIMIT 1"
        ).fetchone()
        return None if row is None else self._row(row)

    def checkpoints(self) -> list[StoredCheckpoint]:
        rows = self.db.execute(
            "SELECT size, root, note, created_at FROM checkpoints ORDER BY size"
        ).fetchall()
        return [self._row(r) for r in rows]

    def _row(self, row: tuple[Any, ...]) -> StoredCheckpoint:
        size, root, note, created = row
        return StoredCheckpoint(
            Checkpoint(self.origin, int(size), bytes(root)), bytes(note), float(created)
        )

    def latest_checkpoint(self) -> tuple[Checkpoint, bytes] | None:
        """The anchorers' CheckpointSource."""
        latest = self.latest()
        return None if latest is None else (latest.checkpoint, latest.note)

    def check_note(self, note: bytes) -> Checkpoint:
        return open_checkpoint(note, self.verifier(), origin=self.origin)
