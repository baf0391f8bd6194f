"""The device registry: which gateways exist, their keys, farm/field, and whether revoked.

Lives in the collector's SQLite database. A gateway id is derived from its first public key,
so registering a key under a different id is refused. Key history is kept (a key retired by
rotation stays valid for what it signed before) so a verifier can pick the key valid at a time."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any, Protocol

from anchor.evidence import registry_event
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


class RegistryError(ValueError):
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
        for label, value in (("farm", farm), ("field", field), ("location", location or "-")):
            if not value or len(value) > 64 or not value.isprintable():
                raise RegistryError(f"{label} must be 1 to 64 printable characters")
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
