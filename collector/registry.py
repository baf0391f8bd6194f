"""The device registry: which gateways exist, their keys, farm/field, and whether revoked.

Lives in the collector's SQLite database. A gateway id is derived from its first public key,
so registering a key under a different id is refused. Key history is kept (a key retired by
rotation stays valid for what it signed before) so a verifier can pick the key valid at a time.

Every change to a device (added, enrolled, revoked, key rotated, any other update of its rows)
gives it a new, higher number in ``device_changes``, so the collector's cache re-reads only
what changed (:meth:`Registry.changes_since`) instead of every device every few seconds.
Triggers set the number, so no write can forget it — not a future method, not an older
collector on the same database, not an operator's hand-made SQL. It is a side table, not a
column of ``devices``, so the positional ``INSERT INTO devices VALUES (…)`` that tools use keep
working; an existing database is migrated when a Registry first opens it."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Protocol

from fieldproof.errors import FieldproofError
from fieldproof.formats.registry_event import registry_event
from fieldproof.wire import gateway_id_for

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    gateway TEXT PRIMARY KEY,
    farm TEXT NOT NULL,
    field TEXT NOT NULL,
    location TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    added_at REAL NOT NULL,
    revoked_at REAL,
    sensor_meta TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS device_keys (
    gateway TEXT NOT NULL REFERENCES devices(gateway),
    public_key BLOB NOT NULL,
    valid_from REAL NOT NULL,
    valid_to REAL,
    PRIMARY KEY (gateway, public_key)
);
"""

#: one row per device: the number of its latest change (higher = later, in commit order).
#: Writers are serialised by SQLite's write lock, so max + 1 is unique and numbers commit
#: in order. Every change to a device's rows, whoever makes it, bumps it.
_CHANGES_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS device_changes (gateway TEXT PRIMARY KEY,"
    " change_seq INTEGER NOT NULL, changed_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS device_changes_seq ON device_changes (change_seq)",
    "CREATE TRIGGER IF NOT EXISTS device_changed_insert AFTER INSERT ON devices BEGIN"
    " INSERT OR REPLACE INTO device_changes VALUES (NEW.gateway,"
    " (SELECT coalesce(max(change_seq), 0) + 1 FROM device_changes),"
    " (julianday('now') - 2440587.5) * 86400.0); END",
    "CREATE TRIGGER IF NOT EXISTS device_changed_update AFTER UPDATE ON devices BEGIN"
    " INSERT OR REPLACE INTO device_changes VALUES (NEW.gateway,"
    " (SELECT coalesce(max(change_seq), 0) + 1 FROM device_changes),"
    " (julianday('now') - 2440587.5) * 86400.0); END",
    "CREATE TRIGGER IF NOT EXISTS device_changed_delete AFTER DELETE ON devices BEGIN"
    " INSERT OR REPLACE INTO device_changes VALUES (OLD.gateway,"
    " (SELECT coalesce(max(change_seq), 0) + 1 FROM device_changes),"
    " (julianday('now') - 2440587.5) * 86400.0); END",
    "CREATE TRIGGER IF NOT EXISTS device_key_changed_insert AFTER INSERT ON device_keys BEGIN"
    " INSERT OR REPLACE INTO device_changes VALUES (NEW.gateway,"
    " (SELECT coalesce(max(change_seq), 0) + 1 FROM device_changes),"
    " (julianday('now') - 2440587.5) * 86400.0); END",
    "CREATE TRIGGER IF NOT EXISTS device_key_changed_update AFTER UPDATE ON device_keys BEGIN"
    " INSERT OR REPLACE INTO device_changes VALUES (NEW.gateway,"
    " (SELECT coalesce(max(change_seq), 0) + 1 FROM device_changes),"
    " (julianday('now') - 2440587.5) * 86400.0); END",
    "CREATE TRIGGER IF NOT EXISTS device_key_changed_delete AFTER DELETE ON device_keys BEGIN"
    " INSERT OR REPLACE INTO device_changes VALUES (OLD.gateway,"
    " (SELECT coalesce(max(change_seq), 0) + 1 FROM device_changes),"
    " (julianday('now') - 2440587.5) * 86400.0); END",
)
_TRIGGER_NAMES = (
    "device_changed_insert",
    "device_changed_update",
    "device_changed_delete",
    "device_key_changed_insert",
    "device_key_changed_update",
    "device_key_changed_delete",
)


class RegistryError(FieldproofError, ValueError):
    """A registry change was refused; the message says why and what to do."""


@dataclass(frozen=True)
class Device:
    gateway: str
    farm: str
    field: str
    location: str
    status: str
    added_at: float
    revoked_at: float | None
    public_key: bytes
    #: per-sensor extra InfluxDB tags, e.g. {"soil1": {"depth_cm": "20"}}
    sensor_meta: dict[str, dict[str, str]] = dataclass_field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status == "active"


def parse_public_key(text: str) -> bytes:
    """Accept the 64-hex-digit public key that ``fieldproof gateway init`` prints."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise RegistryError("public key must be 64 hexadecimal digits") from None
    if len(key) != 32:
        raise RegistryError(f"public key must be 32 bytes (64 hex digits), got {len(key)} bytes")
    return key


class RegistryLog(Protocol):
    """Where registry changes are recorded as evidence (the collector's Merkle log)."""

    def append(self, entries: Sequence[bytes]) -> int | None: ...


class Registry:
    """Registry rows plus, when ``log`` is given, a log entry for every change, committed in
    the same transaction: key history is anchored exactly like readings."""

    def __init__(self, db: sqlite3.Connection, log: RegistryLog | None = None) -> None:
        self.db = db
        self.log = log
        self.db.executescript(_SCHEMA)
        self._track_changes()

    def _track_changes(self) -> None:
        """Create ``device_changes`` and its triggers; on a database from before them, number
        every existing device once. One IMMEDIATE transaction, so two processes opening the
        database at once cannot both do it."""
        have = self.db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='trigger' AND name IN"
            " (SELECT value FROM json_each(?))",
            (json.dumps(_TRIGGER_NAMES),),
        ).fetchone()[0]
        if have == len(_TRIGGER_NAMES):
            return
        try:
            self._migrate_changes()
        except sqlite3.OperationalError as exc:
            # a read-only connection (export, inspector) reads devices, never changes: the
            # first collector that opens the database for writing migrates it
            if "readonly" not in str(exc):
                raise

    def _migrate_changes(self) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for statement in _CHANGES_SCHEMA:
                self.db.execute(statement)
            top = self.db.execute("SELECT coalesce(max(change_seq), 0) FROM device_changes")
            self.db.execute(
                "INSERT OR IGNORE INTO device_changes"
                " SELECT gateway, ? + row_number() OVER (ORDER BY gateway),"
                " (julianday('now') - 2440587.5) * 86400.0"
                " FROM devices WHERE gateway NOT IN (SELECT gateway FROM device_changes)",
                (int(top.fetchone()[0]),),
            )

    def add(
        self,
        gateway: str,
        public_key: bytes,
        farm: str,
        field: str,
        location: str = "",
        sensor_meta: dict[str, dict[str, str]] | None = None,
    ) -> Device:
        """Register a gateway the operator typed in (id and key from `gateway init`)."""
        entry = registry_event(
            "enroll", gateway, public_key=public_key, farm=farm, field=field, location=location
        )
        return self.enroll_device(gateway, public_key, farm, field, location, entry, sensor_meta)

    def revoke(self, gateway: str) -> Device:
        now = time.time()
        with self.db:
            cur = self.db.execute(
                "UPDATE devices SET status='revoked', revoked_at=?"
                " WHERE gateway=? AND status='active'",
                (now, gateway),
            )
            if cur.rowcount and self.log is not None:
                self.log.append([registry_event("revoke", gateway, at=now)])
        if cur.rowcount == 0:
            raise RegistryError(f"{gateway} is not an active registered gateway")
        device = self.get(gateway)
        assert device is not None
        return device

    # ------------------------------------------------------------------ enrollment, rotation
    # Added for enrollment (collector/enrollment.py). The caller builds the log entry so it can
    # carry the gateway's signed request: who installed it, which sensors, its TLS CSR.

    def enroll_device(
        self,
        gateway: str,
        public_key: bytes,
        farm: str,
        field: str,
        location: str,
        entry: bytes,
        sensor_meta: dict[str, dict[str, str]] | None = None,
    ) -> Device:
        """Register a gateway and log ``entry`` (a registry event with ``"event": "enroll"``)
        in the same transaction; enrollment builds the entry so it can carry the signed request."""
        expected = gateway_id_for(public_key)
        if gateway != expected:
            raise RegistryError(
                f"gateway id {gateway!r} does not belong to this public key (it would be "
                f"{expected!r}); copy both from the output of 'fieldproof gateway init'"
            )
        # the enrollment request's own bounds (fieldproof.formats.enrollment): a request the
        # codec accepts is not refused here, after its token was spent
        for label, value, limit in (
            ("farm", farm, 64), ("field", field, 64), ("location", location or "-", 200)
        ):  # fmt: skip
            if not value or len(value) > limit or not value.isprintable():
                raise RegistryError(f"{label} must be 1 to {limit} printable characters")
        now = time.time()
        with self.db:
            row = self.db.execute(
                "SELECT status FROM devices WHERE gateway=?", (gateway,)
            ).fetchone()
            if row is not None:
                raise RegistryError(
                    f"{gateway} is already registered ({row[0]}); a revoked gateway must be "
                    "re-initialised with a new key"
                )
            self.db.execute(
                "INSERT INTO devices VALUES (?, ?, ?, ?, 'active', ?, NULL, ?)",
                (gateway, farm, field, location, now, json.dumps(sensor_meta or {})),
            )
            self.db.execute(
                "INSERT INTO device_keys VALUES (?, ?, ?, NULL)", (gateway, public_key, now)
            )
            if self.log is not None:
                self.log.append([entry])
        device = self.get(gateway)
        assert device is not None
        return device

    def _key_seq_table(self) -> None:
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS device_key_seqs (gateway TEXT NOT NULL,"
            " public_key BLOB NOT NULL, from_seq INTEGER NOT NULL,"
            " PRIMARY KEY (gateway, public_key))"
        )

    def rotate_key(
        self, gateway: str, old_key: bytes, new_key: bytes, from_seq: int, entry: bytes
    ) -> Device:
        """Make ``new_key`` the gateway's key for messages with seq >= ``from_seq``. The old
        key stays in the history (valid_to set) and still verifies what it signed before:
        :meth:`key_for_seq`. ``entry`` (a ``"rotate"`` registry event) is logged in the same
        transaction. The gateway keeps its id."""
        if len(new_key) != 32:
            raise RegistryError("the new public key must be 32 bytes (Ed25519)")
        now = time.time()
        with self.db:
            self._key_seq_table()
            device = self.get(gateway)
            if device is None or not device.active:
                raise RegistryError(f"{gateway} is not an active registered gateway")
            if device.public_key != old_key:
                raise RegistryError(
                    f"{gateway}'s current key is not the one that signed this rotation; "
                    "the request is stale or forged"
                )
            used = self.db.execute(
                "SELECT 1 FROM device_keys WHERE gateway=? AND public_key=?", (gateway, new_key)
            ).fetchone()
            if used is not None:
                raise RegistryError(f"{gateway} already used this key; a rotation needs a new key")
            last = self.db.execute(
                "SELECT max(from_seq) FROM device_key_seqs WHERE gateway=?", (gateway,)
            ).fetchone()[0]
            if last is not None and from_seq <= int(last):
                raise RegistryError(
                    f"rotation starts at seq {from_seq} but the previous key took over at {last}"
                )
            self.db.execute(
                "UPDATE device_keys SET valid_to=? WHERE gateway=? AND valid_to IS NULL",
                (now, gateway),
            )
            self.db.execute(
                "INSERT INTO device_keys VALUES (?, ?, ?, NULL)", (gateway, new_key, now)
            )
            self.db.execute(
                "INSERT INTO device_key_seqs VALUES (?, ?, ?)", (gateway, new_key, from_seq)
            )
            if self.log is not None:
                self.log.append([entry])
        rotated = self.get(gateway)
        assert rotated is not None
        return rotated

    def key_history(self, gateway: str) -> list[tuple[bytes, float, float | None, int]]:
        """(public key, valid_from, valid_to, first seq it signs), oldest first."""
        self._key_seq_table()
        rows = self.db.execute(
            "SELECT k.public_key, k.valid_from, k.valid_to, coalesce(s.from_seq, 0)"
            " FROM device_keys k LEFT JOIN device_key_seqs s"
            " ON s.gateway = k.gateway AND s.public_key = k.public_key"
            " WHERE k.gateway=? ORDER BY k.valid_from",
            (gateway,),
        ).fetchall()
        return [
            (bytes(k), float(f), None if t is None else float(t), int(s)) for k, f, t, s in rows
        ]

    def key_for_seq(self, gateway: str, seq: int) -> bytes | None:
        """The key that signs message ``seq`` of ``gateway``: the one whose rotation began at
        or before ``seq``, the first key when none had. None for an unknown gateway."""
        history = self.key_history(gateway)
        chosen = None
        for key, _, _, from_seq in history:
            if from_seq <= seq:
                chosen = key
        return chosen

    def get(self, gateway: str) -> Device | None:
        row = self.db.execute(
            "SELECT d.gateway, farm, field, location, status, added_at, revoked_at, sensor_meta,"
            " k.public_key FROM devices d JOIN device_keys k ON k.gateway = d.gateway"
            " WHERE d.gateway=? AND k.valid_to IS NULL",
            (gateway,),
        ).fetchone()
        return None if row is None else _device(row)

    def all(self) -> list[Device]:
        rows = self.db.execute(
            "SELECT d.gateway, farm, field, location, status, added_at, revoked_at, sensor_meta,"
            " k.public_key FROM devices d JOIN device_keys k ON k.gateway = d.gateway"
            " WHERE k.valid_to IS NULL ORDER BY farm, field, d.gateway"
        ).fetchall()
        return [_device(r) for r in rows]

    def change_seq(self) -> int:
        """The number of the latest change to any device (0: none yet)."""
        row = self.db.execute("SELECT coalesce(max(change_seq), 0) FROM device_changes")
        return int(row.fetchone()[0])

    def changes_since(self, seq: int) -> tuple[int, list[tuple[str, Device | None]]]:
        """Devices changed after change number ``seq``, as (gateway, device now — None when it
        is gone or has no current key), and the number to ask from next time. One statement,
        so one consistent snapshot; a range scan of an index, so its cost follows the number
        of changes, not of devices."""
        rows = self.db.execute(
            "SELECT c.gateway, c.change_seq, d.gateway, farm, field, location, status, added_at,"
            " revoked_at, sensor_meta, k.public_key FROM device_changes c"
            " LEFT JOIN devices d ON d.gateway = c.gateway"
            " LEFT JOIN device_keys k ON k.gateway = c.gateway AND k.valid_to IS NULL"
            " WHERE c.change_seq > ? ORDER BY c.change_seq",
            (seq,),
        ).fetchall()
        out: list[tuple[str, Device | None]] = []
        for row in rows:
            seq = max(seq, int(row[1]))
            present = row[2] is not None and row[-1] is not None
            out.append((str(row[0]), _device(row[2:]) if present else None))
        return seq, out


def _device(row: tuple[Any, ...]) -> Device:
    gw, farm, fld, loc, status, added, revoked, meta, key = row
    return Device(
        str(gw),
        str(farm),
        str(fld),
        str(loc),
        str(status),
        float(added),
        None if revoked is None else float(revoked),
        bytes(key),
        json.loads(str(meta)),
    )
