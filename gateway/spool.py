"""The gateway's durable outbox: a signed message is in here before it is sent, and leaves only
when a collector confirms it has it durably (a receipt), not merely on the broker's PUBACK.

Why not delete on PUBACK (as the first design said): a PUBACK means the broker has the message, and
brokers lose messages a collector has not yet taken — Mosquitto 2.0 drops shared-subscription
traffic for offline sessions after a restart, and a crashed broker loses what it had not saved.
So each message goes unsent → published (PUBACK seen) → confirmed (receipt) and is resent if no
receipt comes; the collector's dedupe on (gateway, seq) makes resending safe.

SQLite in WAL mode with ``synchronous=FULL``: a committed message survives a power cut. The
sequence number is assigned inside the same transaction that stores the message, so a number is
never given to two different messages, across crashes and reboots alike. The boot counter is
bumped once per agent start. When the spool is full (offline for days), the oldest messages are
dropped and counted, never the newest.

What is written, and what is deliberately not (SD cards wear, and every fsync'd transaction
rewrites whole 4 KiB pages):

- durable, one transaction per message: the message row and the ``next_seq`` meta row;
- in memory only: which messages the broker has PUBACKed. After a restart every message still
  spooled is resent anyway and the collector drops identical resends, so a durable "published"
  flag cost a second fsync'd transaction per message and bought nothing;
- deferred: a receipt marks its messages confirmed in memory at once (they are never resent)
  and their rows are deleted in the next transaction that has to happen anyway — the next
  message's — or by :meth:`Spool.flush` when many wait or the agent stops. A crash before that
  only resends messages the collector already has. Counters (confirmed, published) ride along
  the same way; ``stats`` always shows the in-memory truth.

No secondary index: the outbox is read in ``seq`` (rowid) order only.

Every write raises :class:`SpoolError` (never a bare ``sqlite3`` error) and leaves the in-memory
state as if it had not been tried, so the caller can keep the reading and retry."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from fieldproof.errors import StorageError

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
"""
# published_at / publishes are no longer written (published state is in memory); they stay in
# the table because older spools have them and readers (gateway doctor) still select them.

_COUNTERS = (
    "next_seq",
    "boot",
    "published_readings",
    "confirmed_messages",
    "confirmed_readings",
    "dropped_messages",
)
#: highest seq already counted in published_readings, so a restart does not count it twice
_PUBLISHED_UPTO = "published_upto"
#: readings the agent could not spool (disk full, memory buffer full) and had to drop
UNSPOOLED_DROPPED = "unspooled_dropped_readings"

#: database page size for spools created from now on (an existing spool keeps its own). Every
#: commit writes whole pages (the row's leaf and the meta page) as WAL frames; measured with
#: spool rows of 400 B / 2.2 KB (1 / 6 rounds a message): 4096 → 12 / 24 KiB written per
#: message, 1024 → 6 / 11 KiB, 512 → 6.6 / 9.9 KiB (more pages per row, deeper trees).
PAGE_SIZE = 1024
#: WAL pages before SQLite copies them into the database (SQLite's default, ~1 MiB of WAL at
#: 1 KiB pages). Measured per message (400 B / 2.2 KB rows): 100 → 6.2 / 11.7 KiB, 1000 → 6.0 /
#: 11.3 KiB, 4000 or more → 6.0 / 11.2 KiB: checkpoints cost little, a longer WAL buys nothing.
WAL_AUTOCHECKPOINT_PAGES = 1000
#: after a checkpoint the WAL is cut back to this, so one long backlog (or a reader holding a
#: snapshot) does not leave a big file on a small card; a WAL within it is reused in place
JOURNAL_SIZE_LIMIT_BYTES = 2 * 1024 * 1024


class SpoolError(StorageError):
    """The spool cannot be written or read (disk full, I/O error, database damaged). Nothing
    that was already durable is lost; the caller keeps what it tried to store and retries."""

    def __init__(self, path: Path, doing: str, reason: str) -> None:
        self.path = path
        self.doing = doing
        self.reason = reason
        super().__init__(
            f"cannot write the spool {path} ({doing}): {reason}"
            if doing != "reading"
            else f"cannot read the spool {path}: {reason}"
        )


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
    unspooled_dropped_readings: int = 0


class Spool:
    """Thread-safe: the sampler adds, the publisher reads and confirms."""

    def __init__(self, path: Path, max_messages: int = 2_000_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only a new file takes it
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT_BYTES}")
            self._db.executescript(_SCHEMA)  # writes only when the file is new
            durable = {str(k): int(v) for k, v in self._db.execute("SELECT key, value FROM meta")}
            self._rows = int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            if _PUBLISHED_UPTO not in durable:  # a spool from before published was in memory
                row = self._db.execute("SELECT max(seq) FROM outbox WHERE publishes > 0")
                durable_upto = row.fetchone()[0]
            else:
                durable_upto = durable[_PUBLISHED_UPTO]
        except sqlite3.Error as exc:
            raise SpoolError(self.path, "opening", str(exc)) from exc
        self._migrate()
        #: meta values as committed; ``_values`` is the truth, written with the next transaction
        self._durable = durable
        self._values = {key: durable.get(key, 1 if key == "next_seq" else 0) for key in _COUNTERS}
        self._values[_PUBLISHED_UPTO] = int(durable_upto or 0)
        #: messages up to here were counted as published before this start
        self._count_floor = self._values[_PUBLISHED_UPTO]
        self._values[UNSPOOLED_DROPPED] = durable.get(UNSPOOLED_DROPPED, 0)
        # PUBACKed, waiting for a receipt (memory only): seq -> monotonic time of the PUBACK
        self._published: dict[int, float] = {}
        # resends of a message no receipt has covered yet: seq -> times resent (its wait doubles)
        self._resent: dict[int, int] = {}
        self._confirmed: dict[int, int] = {}  # receipted, row not yet deleted: seq -> readings
        self._confirmed_since = 0.0  # monotonic time the oldest of those was receipted
        self._counted: set[int] = set()  # counted as published in this run, still spooled

    def _migrate(self) -> None:
        """Drop the index older versions kept (one more page written per message). Best effort:
        on a full disk it is retried at the next start."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("DROP INDEX IF EXISTS outbox_unsent")

    # ---------------------------------------------------------------- writing

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)

    def _write_meta(self, values: dict[str, int]) -> None:
        """Upsert the meta rows whose value differs from what is committed (inside a tx)."""
        for key, value in values.items():
            if self._durable.get(key) != value:
                self._db.execute(
                    "INSERT INTO meta VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def _delete_confirmed(self) -> int:
        """Delete the receipted rows (inside a tx); returns how many rows went."""
        if not self._confirmed:
            return 0
        cur = self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
            (json.dumps(list(self._confirmed)),),
        )
        return int(cur.rowcount)

    def _committed(self, values: dict[str, int], deleted: int) -> None:
        """After COMMIT: the in-memory state follows what is now durable."""
        self._values = values
        self._durable = dict(values)
        if deleted:
            self._rows -= deleted
            self._counted.difference_update(self._confirmed)
            self._confirmed.clear()

    def new_boot(self) -> int:
        """Count one more start of the agent; the number goes into every message's payload.
        If it cannot be written the number is still used and written with the next message
        (so every boot number found in a durable message is durable too)."""
        with self._lock:
            self._values["boot"] += 1
            self._write_now("counting this start")
            return self._values["boot"]

    def _write_now(self, doing: str) -> int:
        """Commit pending deletes and counters (holds the lock). Returns rows deleted."""
        values = dict(self._values)
        try:
            with self._tx():
                deleted = self._delete_confirmed()
                self._write_meta(values)
        except sqlite3.Error as exc:
            raise SpoolError(self.path, doing, str(exc)) from exc
        self._committed(values, deleted)
        return deleted

    def add(self, build: Callable[[int], tuple[bytes, int]]) -> int:
        """Store one message. ``build(seq)`` returns (signed message, number of readings); it
        runs inside the transaction so the sequence number and the message commit together.
        Deletes for receipts that came since the last write go in the same transaction."""
        with self._lock:
            values = dict(self._values)
            try:
                with self._tx():
                    row = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
                    # the table, not only memory: a second process on this spool cannot
                    # make a number repeat
                    seq = max(int(row[0]) if row else 1, values["next_seq"])
                    message, readings = build(seq)
                    self._db.execute(
                        "INSERT INTO outbox (seq, created, readings, message) VALUES (?, ?, ?, ?)",
                        (seq, time.time(), readings, message),
                    )
                    values["next_seq"] = seq + 1
                    deleted = self._delete_confirmed()
                    dropped = self._drop_oldest(self._rows + 1 - deleted - self.max_messages)
                    values["dropped_messages"] += len(dropped)
                    self._write_meta(values)
            except sqlite3.Error as exc:
                raise SpoolError(self.path, "storing a new message", str(exc)) from exc
            self._committed(values, deleted)
            self._rows += 1 - len(dropped)
            for seq in dropped:
                self._published.pop(seq, None)
                self._resent.pop(seq, None)
            self._counted.difference_update(dropped)
            return seq

    def _drop_oldest(self, n: int) -> list[int]:
        """Delete the ``n`` oldest rows (inside a tx): the spool is full, the newest win."""
        if n <= 0:
            return []
        seqs = [
            int(s) for (s,) in self._db.execute("SELECT seq FROM outbox ORDER BY seq LIMIT ?", (n,))
        ]
        self._db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))", (json.dumps(seqs),)
        )
        return seqs

    def drop(self, seqs: Iterable[int]) -> int:
        """Delete these unconfirmed messages unsent, counted in ``dropped_messages`` like those
        a full spool drops: for a message no collector can ever accept (the agent decides), so
        it is not resent forever. Returns how many rows went."""
        with self._lock:
            seqs = [s for s in seqs if s not in self._confirmed]
            if not seqs:
                return 0
            values = dict(self._values)
            try:
                with self._tx():
                    cur = self._db.execute(
                        "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
                        (json.dumps(seqs),),
                    )
                    dropped = int(cur.rowcount)
                    values["dropped_messages"] += dropped
                    deleted = self._delete_confirmed()
                    self._write_meta(values)
            except sqlite3.Error as exc:
                raise SpoolError(self.path, "dropping undeliverable messages", str(exc)) from exc
            self._committed(values, deleted)
            self._rows -= dropped
            for seq in seqs:
                self._published.pop(seq, None)
                self._resent.pop(seq, None)
            self._counted.difference_update(seqs)
            return dropped

    def flush(self) -> int:
        """Delete confirmed rows and write counters now (normally they wait for the next
        message's transaction). Returns how many rows were deleted."""
        with self._lock:
            if not self._confirmed and self._values == self._durable:
                return 0
            return self._write_now("removing confirmed messages")

    def note_unspooled_dropped(self, readings: int) -> None:
        """The agent had to drop readings it could not spool; counted durably with the next
        write, so the loss stays on record (``gateway doctor`` shows meta counters)."""
        with self._lock:
            self._values[UNSPOOLED_DROPPED] += readings

    # ---------------------------------------------------------------- in-memory state

    def _rows_of(self, seqs: Iterable[int]) -> list[tuple[int, int]]:
        """(seq, readings) of those ``seqs`` still in the table (holds the lock)."""
        try:
            rows = self._db.execute(
                "SELECT seq, readings FROM outbox WHERE seq IN (SELECT value FROM json_each(?))",
                (json.dumps(list(seqs)),),
            ).fetchall()
        except sqlite3.Error as exc:
            raise SpoolError(self.path, "reading", str(exc)) from exc
        return [(int(s), int(r)) for s, r in rows]

    def _count_published(self, seq: int, readings: int) -> None:
        """First PUBACK (or receipt) of ``seq``: its readings count as published once."""
        if seq > self._count_floor and seq not in self._counted:
            self._counted.add(seq)
            self._values["published_readings"] += readings
            self._values[_PUBLISHED_UPTO] = max(self._values[_PUBLISHED_UPTO], seq)

    def pending(self, after_seq: int, limit: int) -> list[SpooledMessage]:
        """Oldest-first messages not yet published (no PUBACK seen) with seq > ``after_seq``."""
        if limit <= 0:
            return []
        with self._lock:
            try:
                cur = self._db.execute(
                    "SELECT seq FROM outbox WHERE seq > ? ORDER BY seq", (after_seq,)
                )
                seqs: list[int] = []
                for (s,) in cur:
                    if s not in self._published and s not in self._confirmed:
                        seqs.append(int(s))
                        if len(seqs) >= limit:
                            break
                cur.close()
                rows = self._db.execute(
                    "SELECT seq, readings, message FROM outbox"
                    " WHERE seq IN (SELECT value FROM json_each(?)) ORDER BY seq",
                    (json.dumps(seqs),),
                ).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(self.path, "reading", str(exc)) from exc
        return [SpooledMessage(int(s), int(r), bytes(m)) for s, r, m in rows]

    def mark_published(self, seqs: Iterable[int]) -> int:
        """The broker PUBACKed these; they now wait for a collector's receipt (in memory:
        nothing is written). Returns how many were newly marked."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            n = 0
            now = time.monotonic()
            for seq, readings in self._rows_of(seqs):
                if seq in self._published or seq in self._confirmed:
                    continue
                self._published[seq] = now
                self._count_published(seq, readings)
                n += 1
            return n

    def confirm_later(self, seqs: Iterable[int]) -> int:
        """A collector has these durably: never send them again; their rows are deleted with
        the next write (``add`` or ``flush``). Returns how many were newly confirmed."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            n = 0
            for seq, readings in self._rows_of(seqs):
                if seq in self._confirmed:
                    continue
                if not self._confirmed:
                    self._confirmed_since = time.monotonic()
                self._confirmed[seq] = readings
                self._published.pop(seq, None)
                self._resent.pop(seq, None)
                # a receipt can overtake its PUBACK: its readings count as published, once
                self._count_published(seq, readings)
                self._values["confirmed_messages"] += 1
                self._values["confirmed_readings"] += readings
                n += 1
            return n

    def confirm(self, seqs: Iterable[int]) -> int:
        """A collector has these durably: delete them now (one transaction). Returns how many."""
        n = self.confirm_later(seqs)
        self.flush()
        return n

    @property
    def confirmed_waiting(self) -> int:
        """Receipted messages whose rows are not deleted yet."""
        return len(self._confirmed)

    def confirmed_waiting_s(self) -> float:
        """Seconds the oldest receipted-but-not-deleted message has waited (0 if none)."""
        with self._lock:
            return time.monotonic() - self._confirmed_since if self._confirmed else 0.0

    def overdue(self, timeout_s: float, max_timeout_s: float) -> list[int]:
        """Published messages whose receipt is overdue: PUBACKed at least ``timeout_s`` ago,
        doubled for each time the message was already resent (up to ``max_timeout_s``). Each
        message has its own clock, so receipts for newer messages never postpone the resend of
        one the broker lost (they did while one "waiting since" served them all)."""
        now = time.monotonic()
        with self._lock:
            return sorted(
                seq
                for seq, acked_at in self._published.items()
                if now - acked_at
                >= min(timeout_s * 2 ** min(self._resent.get(seq, 0), 16), max_timeout_s)
            )

    def requeue(self, seqs: Iterable[int]) -> int:
        """Mark these published-but-unconfirmed messages for sending again. Returns how many."""
        n = 0
        with self._lock:
            for seq in seqs:
                if self._published.pop(seq, None) is not None:
                    self._resent[seq] = self._resent.get(seq, 0) + 1
                    n += 1
        return n

    # ---------------------------------------------------------------- reading

    @property
    def depth(self) -> int:
        """Messages still to be delivered (receipted ones waiting for deletion excluded)."""
        return self._rows - len(self._confirmed)

    @property
    def unconfirmed(self) -> int:
        return len(self._published)

    @property
    def boot(self) -> int:
        return self._values["boot"]

    def stats(self) -> SpoolStats:
        with self._lock:
            try:
                oldest = self._db.execute(
                    "SELECT created FROM outbox ORDER BY seq LIMIT 1"
                ).fetchone()
            except sqlite3.Error as exc:
                raise SpoolError(self.path, "reading", str(exc)) from exc
            v = self._values
            return SpoolStats(
                depth=self._rows - len(self._confirmed),
                unconfirmed=len(self._published),
                oldest_age_s=0.0 if oldest is None else max(0.0, time.time() - float(oldest[0])),
                next_seq=v["next_seq"],
                boot=v["boot"],
                published_readings=v["published_readings"],
                confirmed_messages=v["confirmed_messages"],
                confirmed_readings=v["confirmed_readings"],
                dropped_messages=v["dropped_messages"],
                unspooled_dropped_readings=v[UNSPOOLED_DROPPED],
            )

    def close(self) -> None:
        """Write what waits (best effort: the agent calls :meth:`flush` first to hear about a
        failure) and close. Whatever is not written is resent at the next start."""
        with contextlib.suppress(SpoolError):
            self.flush()
        with self._lock:
            self._db.close()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, ROLLBACK on error (autocommit connection). A failed COMMIT
    (disk full) rolls back too, so the connection is usable for the retry."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, et: object, ev: object, tb: object) -> None:
        if et is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.db.in_transaction:
            # SQLite may have rolled back already (it does on some I/O errors)
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
