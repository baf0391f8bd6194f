"""The gateway's durable outbox: a signed message is in here before it is sent, and leaves only
when a collector confirms it has it durably (a receipt), not merely on the broker's PUBACK.

Why not delete on PUBACK (as DESIGN first said): a PUBACK means the broker has the message, and
brokers lose messages a collector has not yet taken — Mosquitto 2.0 drops shared-subscription
traffic for offline sessions after a restart, and a crashed broker loses what it had not saved.
So each message goes unsent → published (PUBACK seen) → confirmed (receipt) and is resent if no
receipt comes; the collector's dedupe on (gateway, seq) makes resending safe.

SQLite in WAL mode with ``synchronous=FULL``: a committed message survives a power cut. The
sequence number is assigned inside the same transaction that stores the message, so a number is
never given to two different messages, across crashes and reboots alike. The boot counter is
bumped once per agent start. When the spool is full (offline for days), the oldest messages are
dropped and counted, never the newest."""

from __future__ import annotations

import json
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
    message BLOB NOT NULL,
    published_at REAL,
    publishes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (seq) WHERE published_at IS NULL;
"""


_COUNTERS = (
    "next_seq",
    "boot",
    "published_readings",
    "confirmed_messages",
    "confirmed_readings",
    "dropped_messages",
)


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
    unconfirmed: int
    oldest_age_s: float
    next_seq: int
    boot: int
    published_readings: int
    confirmed_messages: int
    confirmed_readings: int
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
        for key in _COUNTERS:
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, 1 if key == "next_seq" else 0)
            )
        self._depth = self._count()
        self._unconfirmed = int(
            self._db.execute(
                "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL"
            ).fetchone()[0]
        )

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
                    "INSERT INTO outbox VALUES (?, ?, ?, ?, NULL, 0)",
                    (seq, time.time(), readings, message),
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
        published = self._db.execute(
            "SELECT count(*) FROM (SELECT published_at FROM outbox ORDER BY seq LIMIT ?)"
            " WHERE published_at IS NOT NULL",
            (n,),
        ).fetchone()[0]
        self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (n,)
        )
        self._unconfirmed -= int(published)
        self._db.execute("UPDATE meta SET value = value + ? WHERE key='dropped_messages'", (n,))
        self._depth -= n

    def pending(self, after_seq: int, limit: int) -> list[SpooledMessage]:
        """Oldest-first messages not yet published (no PUBACK seen) with seq > ``after_seq``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, readings, message FROM outbox"
                " WHERE published_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [SpooledMessage(int(s), int(r), bytes(m)) for s, r, m in rows]

    def mark_published(self, seqs: Iterable[int]) -> int:
        """The broker PUBACKed these; they now wait for a collector's receipt."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock, self._tx():
            ids = json.dumps(seqs)
            first_time = self._db.execute(
                "SELECT coalesce(sum(readings), 0) FROM outbox WHERE seq IN"
                " (SELECT value FROM json_each(?)) AND published_at IS NULL AND publishes = 0",
                (ids,),
            ).fetchone()[0]
            cur = self._db.execute(
                "UPDATE outbox SET published_at = ?, publishes = publishes + 1 WHERE seq IN"
                " (SELECT value FROM json_each(?)) AND published_at IS NULL",
                (time.time(), ids),
            )
            self._db.execute(
                "UPDATE meta SET value = value + ? WHERE key='published_readings'",
                (int(first_time),),
            )
            self._unconfirmed += cur.rowcount
            return cur.rowcount

    def confirm(self, seqs: Iterable[int]) -> int:
        """A collector has these durably: delete them (one transaction). Returns how many."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock, self._tx():
            ids = json.dumps(seqs)
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(readings), 0),"
                " coalesce(sum(published_at IS NOT NULL), 0),"
                " coalesce(sum(CASE WHEN publishes = 0 THEN readings ELSE 0 END), 0)"
                " FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
                (ids,),
            ).fetchone()
            self._db.execute(
                "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))", (ids,)
            )
            n, r, published, unpublished_readings = (int(x) for x in row)
            self._db.execute(
                "UPDATE meta SET value = value + ? WHERE key='confirmed_messages'", (n,)
            )
            self._db.execute(
                "UPDATE meta SET value = value + ? WHERE key='confirmed_readings'", (r,)
            )
            # a receipt can overtake its PUBACK: count those readings as published too
            self._db.execute(
                "UPDATE meta SET value = value + ? WHERE key='published_readings'",
                (unpublished_readings,),
            )
            self._depth -= n
            self._unconfirmed -= published
            return n

    def oldest_unconfirmed_age(self) -> float:
        """Seconds since the oldest still-unconfirmed message was PUBACKed (0 if none)."""
        with self._lock:
            t = self._db.execute(
                "SELECT min(published_at) FROM outbox WHERE published_at IS NOT NULL"
            ).fetchone()[0]
        return 0.0 if t is None else max(0.0, time.time() - float(t))

    def requeue_unconfirmed(self) -> int:
        """No receipt came: mark every published-but-unconfirmed message for sending again."""
        with self._lock, self._tx():
            cur = self._db.execute(
                "UPDATE outbox SET published_at = NULL WHERE published_at IS NOT NULL"
            )
            self._unconfirmed = 0
            return cur.rowcount

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def unconfirmed(self) -> int:
        return self._unconfirmed

    def stats(self) -> SpoolStats:
        with self._lock:
            oldest = self._db.execute("SELECT min(created) FROM outbox").fetchone()[0]
            return SpoolStats(
                depth=self._depth,
                unconfirmed=self._unconfirmed,
                oldest_age_s=0.0 if oldest is None else max(0.0, time.time() - float(oldest)),
                next_seq=self._meta("next_seq"),
                boot=self._meta("boot"),
                published_readings=self._meta("published_readings"),
                confirmed_messages=self._meta("confirmed_messages"),
                confirmed_readings=self._meta("confirmed_readings"),
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
