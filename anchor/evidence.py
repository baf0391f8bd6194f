"""The collector's evidence log: every accepted message and every registry change, appended in
the collector's own database transaction, with signed checkpoints over it.

Entries are the exact bytes received (a tagged COSE_Sign1, first byte 0xd2) or a registry event
(a deterministic-CBOR map whose ``"t"`` is ``"fieldproof/registry/v1"``). Checkpoints are C2SP
signed notes by the collector's log key, kept in the same database so an anchorer or exporter can
read them without the key. docs/evidence-log.md describes the formats."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anchor.logkey import load_or_create_log_key
from anchor.logstore import MerkleLog, SqliteLogStore
from fieldproof.errors import ConfigError
from fieldproof.formats.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from fieldproof.formats.note import Ed25519Signer, Ed25519Verifier

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS log_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


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
        """Append within the caller's open transaction; the caller commits."""
        return self.store.append(entries)

    # ------------------------------------------------------------------ checkpoints

    def verifier(self) -> Ed25519Verifier:
        if self.signer is None:
            raise EvidenceError("no log key loaded")
        return self.signer.verifier()

    def checkpoint(self) -> StoredCheckpoint | None:
        """Sign and store a checkpoint of the current size if the log grew since the last one."""
        if self.signer is None:
            raise EvidenceError("checkpoints need the log key (collector only)")
        with self.db:
            size = self.log.size()
            latest = self.latest()
            if size == 0 or (latest is not None and latest.checkpoint.size >= size):
                return None
            cp = Checkpoint(self.origin, size, self.log.root(size))
            note = sign_checkpoint(cp, self.signer)
            now = time.time()
            self.db.execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?)", (size, cp.root_hash, note, now)
            )
        return StoredCheckpoint(cp, note, now)

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
