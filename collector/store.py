"""The collector's durable state: which (gateway, seq) are accepted, the quarantine, counters.

One SQLite database (WAL, synchronous=FULL) holds this, the device registry and the evidence
log, so that accepting a batch — dedupe rows, log entries, quarantine rows, counters — is a
single transaction: after a crash either all of a batch is there or none of it is.

The collector that runs on a data directory holds ``<data_dir>/collector.lock`` (an exclusive
``flock``; ``open_db(…, lock=True)``). Two collectors on one directory would each append to
the evidence log from their own view of it and sign checkpoints of two different trees under
one key and origin: a forked log, which every verifier must reject. The kernel drops the lock
when the process dies, even by ``kill -9``, so there is never a stale lock to clean up.
Commands that only read (status, export, the inspector) or make single registry changes do
not take it."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS received (
    gateway TEXT NOT NULL,
    seq INTEGER NOT NULL,
    boot INTEGER NOT NULL,
    readings INTEGER NOT NULL,
    digest BLOB NOT NULL,
    log_index INTEGER,
    received_at REAL NOT NULL,
    PRIMARY KEY (gateway, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    topic TEXT NOT NULL,
    gateway TEXT,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    message BLOB
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


log = logging.getLogger("fieldproof.collector")

@dataclass(frozen=True, slots=True)
class AcceptedRow:
    gateway: str
    seq: int
    boot: int
    readings: int
    message: bytes


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    topic: str
    gateway: str | None
    reason: str
    detail: str
    message: bytes


@dataclass(frozen=True, slots=True)
class Gap:
    gateway: str
    first_missing: int
    last_missing: int

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1


class EvidenceSink(Protocol):
    """Where accepted message bytes go inside the commit: the evidence log
    (:class:`anchor.evidence.EvidenceLog`). Appends in the caller's open transaction and
    returns the first index."""

    def append(self, entries: Sequence[bytes]) -> int | None: ...


class NoEvidence:
    """No log (unit tests of dedupe and quarantine only)."""

    def append(self, entries: Sequence[bytes]) -> int | None:
        return None


#: a quarantine row kept without its message keeps at most this much of its topic and detail
QUARANTINE_TEXT_KEPT = 200


def _quarantine_size(topic: str, detail: str, message: bytes | None) -> int:
    return len(topic.encode()) + len(detail.encode()) + (len(message) if message else 0)


class CollectorStore:
    """``quarantine_max_rows`` bounds the quarantine's rows and ``quarantine_max_bytes`` what
    they hold (message, topic, detail): past the bytes bound a row is kept without the
    message's bytes and with its topic and detail cut short, past the rows bound no row is
    kept. The counters count every message either way."""

    def __init__(
        self,
        db: sqlite3.Connection,
        sink: EvidenceSink | None = None,
        quarantine_max_rows: int = 100_000,
        quarantine_max_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self.db = db
        self.db.executescript(_SCHEMA)
        self.sink: EvidenceSink = sink or NoEvidence()
        self.quarantine_max_rows = quarantine_max_rows
        self.quarantine_max_bytes = quarantine_max_bytes
        rows, size = self.db.execute(
            "SELECT count(*), coalesce(sum(length(CAST(topic AS BLOB))"
            " + length(CAST(detail AS BLOB)) + coalesce(length(message), 0)), 0) FROM quarantine"
        ).fetchone()
        self._quarantine_rows = int(rows)
        self._quarantine_bytes = int(size)

    def digests(self, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        """Digests of already-accepted messages among ``keys``: one query for the whole batch
        (a primary-key probe per key inside SQLite, not a statement per key from Python)."""
        wanted = json.dumps([[gateway, seq] for gateway, seq in keys])
        rows = self.db.execute(
            "SELECT r.gateway, r.seq, r.digest FROM json_each(?) AS k"
            " JOIN received AS r ON r.gateway = json_extract(k.value, '$[0]')"
            " AND r.seq = json_extract(k.value, '$[1]')",
            (wanted,),
        )
        return {(str(g), int(q)): bytes(d) for g, q, d in rows}

    def commit(
        self,
        accepted: Sequence[AcceptedRow],
        quarantined: Sequence[QuarantineRow],
        counters: dict[str, int],
    ) -> None:
        """Make a batch durable in one transaction: log entries, dedupe rows, quarantine,
        counters. Raises sqlite3 errors (disk full…) with nothing half-written."""
        now = time.time()
        with self.db:
            first = self.sink.append([a.message for a in accepted]) if accepted else None
            self.db.executemany(
                "INSERT INTO received VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        a.gateway,
                        a.seq,
                        a.boot,
                        a.readings,
                        message_digest(a.message),
                        None if first is None else first + i,
                        now,
                    )
                    for i, a in enumerate(accepted)
                ],
            )
            keep = max(0, self.quarantine_max_rows - self._quarantine_rows)
            rows, added, unkept = self._quarantine_rows_to_keep(quarantined[:keep])
            self.db.executemany(
                "INSERT INTO quarantine (received_at, topic, gateway, reason, detail, message)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(now, *row) for row in rows],
            )
            # quarantined messages whose bytes the quarantine does not hold (bytes or rows bound)
            unkept += max(0, len(quarantined) - keep)
            if unkept:
                counters = {**counters, "quarantine_unkept": counters.get("quarantine_unkept", 0)}
                counters["quarantine_unkept"] += unkept
            for name, value in counters.items():
                if value:
                    self.db.execute(
                        "INSERT INTO counters VALUES (?, ?) ON CONFLICT(name)"
                        " DO UPDATE SET value = value + excluded.value",
                        (name, value),
                    )
        self._quarantine_rows += len(rows)
        self._quarantine_bytes += added

    def _quarantine_rows_to_keep(
        self, quarantined: Sequence[QuarantineRow]
    ) -> tuple[list[tuple[str, str | None, str, str, bytes | None]], int, int]:
        """(rows to insert, their bytes, how many lost their message to the bytes bound)."""
        rows: list[tuple[str, str | None, str, str, bytes | None]] = []
        added = unkept = 0
        for q in quarantined:
            size = _quarantine_size(q.topic, q.detail, q.message)
            if self._quarantine_bytes + added + size <= self.quarantine_max_bytes:
                rows.append((q.topic, q.gateway, q.reason, q.detail, q.message))
            else:
                topic, detail = q.topic[:QUARANTINE_TEXT_KEPT], q.detail[:QUARANTINE_TEXT_KEPT]
                size = _quarantine_size(topic, detail, None)
                rows.append((topic, q.gateway, q.reason, detail, None))
                unkept += 1
            added += size
        return rows, added, unkept

    def counters(self) -> dict[str, int]:
        return {str(n): int(v) for n, v in self.db.execute("SELECT name, value FROM counters")}

    def accepted_count(self) -> tuple[int, int]:
        """(messages, readings) accepted so far."""
        row = self.db.execute(
            "SELECT count(*), coalesce(sum(readings), 0) FROM received"
        ).fetchone()
        return int(row[0]), int(row[1])

    def quarantine_by_reason(self) -> dict[str, int]:
        c = self.counters()
        return {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("quarantined:")}

    def gaps(self, gateway: str | None = None) -> list[Gap]:
        """Missing sequence ranges per gateway (sequences start at 1)."""
        rows = self.db.execute(
            "SELECT gateway, prev + 1, seq - 1 FROM ("
            " SELECT gateway, seq, LAG(seq, 1, 0) OVER (PARTITION BY gateway ORDER BY seq) AS prev"
            " FROM received WHERE ?1 IS NULL OR gateway = ?1"
            ") WHERE seq - prev > 1 ORDER BY gateway, seq",
            (gateway,),
        )
        return [Gap(str(g), int(a), int(b)) for g, a, b in rows]

    def quarantine_rows(self, limit: int = 50) -> list[tuple[float, str, str | None, str, str]]:
        return [
            (float(t), str(topic), gw, str(reason), str(detail))
            for t, topic, gw, reason, detail in self.db.execute(
                "SELECT received_at, topic, gateway, reason, detail FROM quarantine"
                " ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        ]


def message_digest(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()
