"""The gateway's durable outbox: a signed message is in here before it is sent, and leaves only
after the broker's PUBACK.

SQLite in WAL mode with ``synchronous=FULL``: a committed message survives a power cut. The
sequence number is assigned inside the same transaction that stores the message, so a number is
never given to two different messages, across crashes and reboots alike. The boot counter is
bumped once per agent start. When the spool is full (offline for days), the oldest messages are
dropped and counted, never the newest."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    readings INTEGER NOT NULL,
    message BLOB NOT NULL
);
"""


class SpoolError(RuntimeError):
    """The spool cannot store a message (disk full, database damaged); the reading is kept
    in memory by the caller and retried."""


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    seq: int
    readings: int
    message: bytes


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth: int
    oldest_age_s: float
    next_seq: int
    boot: int
    acked_messages: int
    acked_readings: int
    dropped_messages: int


class Spool:
    """Thread-safe: the sampler adds, the publisher reads and removes."""

    def __init__(self, path: Path, max_messages: int = 2_000_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        for key in ("next_seq", "boot", "acked_messages", "acked_readings", "dropped_messages"):
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, 1 if key == "next_seq" else 0)
            )
        self._depth = self._count()

    def _count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0])

    def new_boot(self) -> int:
        """Count one more start of the agent; the number goes into every message's payload."""
        with self._lock, self._tx():
            self._db.execute("UPDATE meta SET value = value + 1 WHERE key='boot'")
            return self._meta("boot")

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def add(self, build: Callable[[int], tuple[bytes, int]]) -> int:
        """Store one message. ``build(seq)`` returns (signed message, number of readings); it
        runs inside the transaction so the sequence number and the message commit together."""
        try:
            with self._lock, self._tx():
                seq = self._meta("next_seq")
                message, readings = build(seq)
                self._db.execute(
                    "INSERT INTO outbox VALUES (?, ?, ?, ?)", (seq, time.time(), readings, message)
                )
                self._db.execute("UPDATE meta SET value=? WHERE key='next_seq'", (seq + 1,))
                self._depth += 1
                if self._depth > self.max_messages:
                    self._drop_oldest(self._depth - self.max_messages)
                return seq
        except sqlite3.OperationalError as exc:
            self._depth = self._count()
            raise SpoolError(
                f"cannot write the spool at {self.path}: {exc}. Free disk space on the gateway; "
                "readings are held in memory and retried."
            ) from exc

    def _drop_oldest(self, n: int) -> None:
        self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (n,)
        )
        self._db.execute(
            "UPDATE meta SET value = value + ? WHERE key='dropped_messages'", (n,)
        )
        self._depth -= n

    def pending(self, after_seq: int, limit: int) -> list[SpooledMessage]:
        """Oldest-first messages with seq > ``after_seq``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, readings, message FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [SpooledMessage(int(s), int(r), bytes(m)) for s, r, m in rows]

    def remove(self, seqs: Iterable[int]) -> int:
        """Delete acknowledged messages (one transaction for the batch); returns how many."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock, self._tx():
            marks = ",".join("?" * len(seqs))
            readings = self._db.execute(
                f"SELECT count(*), coalesce(sum(readings), 0) FROM outbox WHERE seq IN ({marks})",  # noqa: S608
                seqs,
            ).fetchone()
            self._db.execute(f"DELETE FROM outbox WHERE seq IN ({marks})", seqs)  # noqa: S608
            n, r = int(readings[0]), int(readings[1])
            self._db.execute("UPDATE meta SET value = value + ? WHERE key='acked_messages'", (n,))
            self._db.execute("UPDATE meta SET value = value + ? WHERE key='acked_readings'", (r,))
            self._depth -= n
            return n

    @property
    def depth(self) -> int:
        return self._depth

    def stats(self) -> SpoolStats:
        with self._lock:
            oldest = self._db.execute("SELECT min(created) FROM outbox").fetchone()[0]
            return SpoolStats(
                depth=self._depth,
                oldest_age_s=0.0 if oldest is None else max(0.0, time.time() - float(oldest)),
                next_seq=self._meta("next_seq"),
                boot=self._meta("boot"),
                acked_messages=self._meta("acked_messages"),
                acked_readings=self._meta("acked_readings"),
                dropped_messages=self._meta("dropped_messages"),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error (autocommit connection)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        if et is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
