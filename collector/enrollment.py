"""Enrolling a gateway: a signed request from the device, approval, a certificate back.

The request is a COSE_Sign1 (fieldproof.wire) by the gateway's own Ed25519 key over a
deterministic-CBOR map::

    {"t": "fieldproof/enroll/v1", "gw": id, "pk": Ed25519 public key, "farm", "field",
     "location", "installer", "sensors": [{"name", "kind", "config"}...], "time": float,
     "nonce": 16 bytes, "csr": DER PKCS#10 for the MQTT client certificate (CN = id),
     ["token": token id, "tmac": HMAC-SHA256(token key, the map without "tmac")]}

Approval — by the operator (``devices approve FILE``) or automatically when the request
carries a valid one-time token made ahead for that farm and field — verifies it, registers
the device (the registry logs an ``enroll`` event that embeds the signed request, so who
installed which sensors where is evidence anchored like readings), signs the CSR with the
collector's CA and returns a JSON response. With a token, the response carries an HMAC under
the same token so the gateway knows it came from the operator's collector. docs/enrollment.md
is the byte-level description."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import queue
import secrets
import socket
import socketserver
import sqlite3
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from anchor.logstore import MAX_ENTRY_SIZE, LogError
from collector.ca import CertificateAuthority
from collector.registry import Device, Registry, RegistryError
from fieldproof.config import CollectorConfig, EnrollmentConfig
from fieldproof.errors import FieldproofError
from fieldproof.formats.enrollment import (
    MAX_REQUEST_BYTES,
    TOKEN_PREFIX,
    EnrollmentError,
    EnrollmentRequest,
    RotationRequest,
    build_response,
    check_token_mac,
    parse_request,
    parse_rotation,
    printable,
    registry_entry,
    token_mac_key,
    valid_gateway_id,
)
from fieldproof.keys import write_private_file
from fieldproof.tls import CAError
from fieldproof.wire import (
    Payload,
    WireError,
    decode_message,
    gateway_id_for,
)

log = logging.getLogger("fieldproof.enrollment")

_TOKEN_SCHEMA = """
CREATE TABLE IF NOT EXISTS enrollment_tokens (
    id TEXT PRIMARY KEY,
    mac_key BLOB NOT NULL,
    farm TEXT NOT NULL,
    field TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_by TEXT,
    used_at REAL
);
"""  # noqa: S105 (SQL, not a secret)
# ``mac_key`` held the token's MAC key in the clear before keys were sealed; it is now always
# empty (rows from before are sealed and emptied when the seal key is first used).

#: the key that seals token MAC keys in the database (32 random bytes, 0600), in the
#: enrollment state directory: whoever reads collector.sqlite alone can use no token
TOKEN_SEAL_KEY = "token-seal.key"  # noqa: S105 (a file name)
_SEAL_AAD = "fieldproof enrollment token seal v1"


@dataclass(frozen=True)
class TokenInfo:
    id: str
    farm: str
    field: str
    created_at: float
    expires_at: float
    used_by: str | None
    used_at: float | None


def load_or_create_seal_key(path: Path) -> bytes:
    """The token seal key: made once (exclusively: two processes racing make one key) and
    kept owner-only."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        write_private_file(tmp, secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # atomic and exclusive: the first process's key wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    st = path.stat()
    if st.st_mode & 0o077:
        raise EnrollmentError(f"{path} is readable by others; chmod 600 it")
    key = path.read_bytes()
    if len(key) != 32:
        raise EnrollmentError(f"{path} is not a token seal key (32 bytes)")
    return key


class TokenStore:
    """One-time tokens in the collector database. The token's secret is never kept; its MAC
    key (K, docs/enrollment.md) is kept sealed (AES-256-GCM, bound to the token's id, farm and
    field) under a key file outside the database (:data:`TOKEN_SEAL_KEY`): a copy or reader of
    collector.sqlite cannot make a token-approved request nor seal a response.

    ``seal_key_file`` is needed to create tokens and to check them (:meth:`create`,
    :meth:`get`); listing, claiming and revoking work without it."""

    def __init__(
        self,
        db: sqlite3.Connection,
        seal_key_file: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.seal_key_file = seal_key_file
        self.clock = clock
        self._aead: AESGCM | None = None
        self.db.executescript(_TOKEN_SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(enrollment_tokens)")}
        if "sealed_key" not in columns:
            with self.db:
                self.db.execute("ALTER TABLE enrollment_tokens ADD COLUMN sealed_key BLOB")

    def _sealer(self) -> AESGCM:
        if self._aead is None:
            if self.seal_key_file is None:
                raise EnrollmentError("no token seal key: the enrollment state directory is needed")
            self._aead = AESGCM(load_or_create_seal_key(self.seal_key_file))
            self._seal_legacy_rows()
        return self._aead

    @staticmethod
    def _aad(token_id: str, farm: str, field: str) -> bytes:
        return "\x00".join((_SEAL_AAD, token_id, farm, field)).encode()

    def _seal(self, mac_key: bytes, token_id: str, farm: str, field: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._sealer().encrypt(nonce, mac_key, self._aad(token_id, farm, field))

    def _seal_legacy_rows(self) -> None:
        """Rows written before keys were sealed hold K in the clear: seal and erase it."""
        rows = self.db.execute(
            "SELECT id, mac_key, farm, field FROM enrollment_tokens WHERE length(mac_key) > 0"
        ).fetchall()
        if not rows:
            return
        self.db.execute("PRAGMA secure_delete=ON")  # overwrite the freed bytes too
        try:
            with self.db:
                for token_id, key, farm, field in rows:
                    self.db.execute(
                        "UPDATE enrollment_tokens SET sealed_key=?, mac_key=X'' WHERE id=?",
                        (self._seal(bytes(key), token_id, farm, field), token_id),
                    )
        finally:
            self.db.execute("PRAGMA secure_delete=OFF")
        log.info("sealed the MAC keys of %d enrollment token(s) stored in the clear", len(rows))

    def create(self, farm: str, field: str, ttl_s: float) -> tuple[str, TokenInfo]:
        """A new token (shown once) for enrolling one gateway into ``farm``/``field``."""
        for label, value in (("farm", farm), ("field", field)):
            if not value or len(value) > 64 or not value.isprintable():
                raise EnrollmentError(f"{label} must be 1 to 64 printable characters")
        token_id = secrets.token_hex(4)
        secret = secrets.token_bytes(20)
        now = self.clock()
        sealed = self._seal(token_mac_key(secret), token_id, farm, field)
        with self.db:
            self.db.execute(
                "INSERT INTO enrollment_tokens (id, mac_key, farm, field, created_at,"
                " expires_at, used_by, used_at, sealed_key) VALUES (?, X'', ?, ?, ?, ?, NULL,"
                " NULL, ?)",
                (token_id, farm, field, now, now + ttl_s, sealed),
            )
        text = f"{TOKEN_PREFIX}.{token_id}.{base64.b32encode(secret).decode().lower()}"
        return text, TokenInfo(token_id, farm, field, now, now + ttl_s, None, None)

    def get(self, token_id: str) -> tuple[TokenInfo, bytes] | None:
        """The token and its MAC key, unsealed; None when there is no such token."""
        sealer = self._sealer()
        row = self.db.execute(
            "SELECT id, farm, field, created_at, expires_at, used_by, used_at, sealed_key"
            " FROM enrollment_tokens WHERE id=?",
            (token_id,),
        ).fetchone()
        if row is None or row[7] is None or len(row[7]) < 12:
            return None
        info = TokenInfo(*row[:7])
        sealed = bytes(row[7])
        try:
            aad = self._aad(info.id, info.farm, info.field)
            key = sealer.decrypt(sealed[:12], sealed[12:], aad)
        except InvalidTag:
            log.warning("enrollment token %s does not open with %s", info.id, self.seal_key_file)
            return None
        return info, key

    def all(self) -> list[TokenInfo]:
        rows = self.db.execute(
            "SELECT id, farm, field, created_at, expires_at, used_by, used_at"
            " FROM enrollment_tokens ORDER BY created_at"
        ).fetchall()
        return [TokenInfo(*r) for r in rows]

    def claim(self, token_id: str, gateway: str) -> None:
        """Mark the token used by ``gateway``. Claiming again for the same gateway is allowed
        (a retry after a lost response); for another gateway it is refused."""
        now = self.clock()
        with self.db:
            cur = self.db.execute(
                "UPDATE enrollment_tokens SET used_by=?, used_at=? WHERE id=? AND"
                " (used_by IS NULL OR used_by=?) AND expires_at > ?",
                (gateway, now, token_id, gateway, now),
            )
        if cur.rowcount != 1:
            raise EnrollmentError(
                f"enrollment token {token_id} is already used by another gateway or expired;"
                " ask the operator for a new one"
            )

    def revoke(self, token_id: str) -> bool:
        with self.db:
            cur = self.db.execute(
                "UPDATE enrollment_tokens SET expires_at=? WHERE id=? AND used_by IS NULL",
                (self.clock(), token_id),
            )
        return cur.rowcount == 1


# --------------------------------------------------------------------------------------------
# The enroller: approve, revoke, rotate
# --------------------------------------------------------------------------------------------

#: longest operator name an approval records (``operator:<name>`` in the log entry and the
#: response). An enrollment entry repeats a request of up to 32 KiB, so the largest one is a
#: few hundred bytes below the 65,535 a log entry may be (tests/collector/
#: test_enrollment_entry_size.py measures it); the name must not take what is left.
MAX_OPERATOR_CHARS = 64


def check_operator(name: str) -> str:
    """An operator's name for the record: 1 to :data:`MAX_OPERATOR_CHARS` printable characters
    (it goes into the log, the response and the log lines)."""
    if not 0 < len(name) <= MAX_OPERATOR_CHARS or not name.isprintable():
        raise EnrollmentError(
            f"operator name {printable(name, 80)!r} must be 1 to {MAX_OPERATOR_CHARS} printable "
            "characters (it is recorded in the log entry of the enrollment); give a shorter "
            "one with --operator"
        )
    return name


@dataclass(frozen=True)
class Approval:
    device: Device
    response: bytes
    cert: x509.Certificate
    #: True when the device was already registered (certificate renewal)
    renewed: bool


def ca_dir(cfg: CollectorConfig) -> Path:
    return cfg.enrollment.ca_dir or cfg.data_dir / "ca"


def state_dir(cfg: CollectorConfig) -> Path:
    return cfg.enrollment.state_dir or cfg.data_dir / "enrollment"


def token_store(cfg: CollectorConfig, db: sqlite3.Connection | None = None) -> TokenStore:
    """The tokens of this collector, with the seal key from its enrollment state directory."""
    from fieldproof.datadir import open_db

    db = db if db is not None else open_db(cfg.db_path)
    return TokenStore(db, state_dir(cfg) / TOKEN_SEAL_KEY)


@dataclass(frozen=True)
class PendingLimits:
    """Requests waiting for an operator are files written on a network client's say-so:
    bounded in number and bytes, and dropped after ``ttl_s``."""

    max_count: int = 100
    max_bytes: int = 4 * 1024 * 1024
    ttl_s: float = 14 * 86400.0


class PendingApproval(EnrollmentError):
    """No token: the request is stored until an operator approves it."""

    def __init__(self, gateway: str) -> None:
        super().__init__(
            f"{gateway} is waiting for an operator: "
            f"'fieldproof collector devices approve --pending {gateway}'"
        )
        self.gateway = gateway


class PendingFull(EnrollmentError):
    """The pending area is at its bound: nothing more is stored until an operator acts."""


class Enroller:
    """Everything enrollment changes: registry (logged), tokens, CA, stored responses.
    Thread-safe (one lock): the HTTP endpoint serves several requests at once."""

    def __init__(
        self,
        registry: Registry,
        ca: CertificateAuthority,
        tokens: TokenStore,
        state: Path,
        *,
        cert_days: int = 730,
        crl_copy: Path | None = None,
        broker: tuple[str, int] | None = None,
        pending_limits: PendingLimits | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.ca = ca
        self.tokens = tokens
        self.state = Path(state)
        self.cert_days = cert_days
        self.crl_copy = crl_copy
        self.broker = broker
        self.pending_limits = pending_limits or PendingLimits()
        self.clock = clock
        self._lock = threading.Lock()
        for sub in ("pending", "responses"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_config(
        cls, cfg: CollectorConfig, registry: Registry, clock: Callable[[], float] = time.time
    ) -> Enroller:
        try:
            ca = CertificateAuthority.open(ca_dir(cfg), clock)
        except CAError as exc:
            raise EnrollmentError(str(exc)) from None
        e = cfg.enrollment
        return cls(
            registry,
            ca,
            TokenStore(registry.db, state_dir(cfg) / TOKEN_SEAL_KEY, clock),
            state_dir(cfg),
            cert_days=e.cert_days,
            crl_copy=e.crl_copy,
            broker=(e.broker_host, e.broker_port) if e.broker_host else None,
            pending_limits=PendingLimits(e.pending_max, e.pending_max_bytes, e.pending_ttl_s),
            clock=clock,
        )

    # ------------------------------------------------------------------ approval

    def approve(self, raw: bytes, operator: str | None = None) -> Approval:
        """Approve a request: by ``operator`` (a name for the record) or, when None, only if
        it carries a valid unused token for its farm and field. Without either the request is
        kept for an operator (:class:`PendingApproval`)."""
        if operator is not None:
            check_operator(operator)
        with self._lock:
            return self._approve(raw, operator)

    def _check_identity(self, req: EnrollmentRequest) -> Device | None:
        """Before anything is stored or looked up on the request's word: the id must be the
        one its key derives, or the id of a gateway registered with exactly this key (a
        gateway keeps its id across key rotations). Returns the registered device."""
        existing = self.registry.get(req.gateway)
        if existing is not None:
            if not existing.active:
                raise EnrollmentError(
                    f"{req.gateway} was revoked; a revoked gateway must start again with a new"
                    " key ('fieldproof gateway init' after moving the old key away)"
                )
            if existing.public_key != req.public_key:
                raise EnrollmentError(f"{req.gateway} is registered with another key")
            return existing
        derived = gateway_id_for(req.public_key)
        if req.gateway != derived:
            raise EnrollmentError(
                f"a new gateway's id must be derived from its key: {derived}, not {req.gateway}"
            )
        return None

    def _approve(self, raw: bytes, operator: str | None) -> Approval:
        req = parse_request(raw, self.clock())
        existing = self._check_identity(req)
        mac_key: bytes | None = None
        token_ok = False
        if req.token_id is not None:
            found = self.tokens.get(req.token_id)
            if found is not None and check_token_mac(req, found[1]):
                info, mac_key = found
                token_ok = (info.farm, info.field) == (req.farm, req.field)
                if not token_ok and operator is None:
                    raise EnrollmentError(
                        f"the token is for farm {info.farm!r}, field {info.field!r}, but the "
                        f"gateway asks for {req.farm!r}, {req.field!r}; enroll again with "
                        "the right --farm/--field"
                    )
            elif operator is None:
                raise EnrollmentError(
                    f"enrollment token {req.token_id} is unknown or does not match this "
                    "request; check the token with the operator"
                )
        if operator is not None:
            approved = f"operator:{operator}"
        elif token_ok and req.token_id is not None:
            approved = f"token:{req.token_id}"
        else:
            self._save_pending(req)
            raise PendingApproval(req.gateway)
        # the log entry first: one that cannot be logged must cost no token
        entry = None if existing is not None else self._enroll_entry(req, approved)
        if token_ok and req.token_id is not None:
            try:
                self.tokens.claim(req.token_id, req.gateway)
            except EnrollmentError:
                if operator is None:
                    raise
                # the operator's word stands. The response is still sealed with the token the
                # gateway holds: the gateway requires that seal (docs/enrollment.md)
        renewed = existing is not None
        if existing is not None:
            device = existing
        else:
            assert entry is not None
            try:
                device = self.registry.enroll_device(
                    req.gateway, req.public_key, req.farm, req.field, req.location, entry
                )
            except RegistryError as exc:
                raise EnrollmentError(str(exc)) from None
            except LogError as exc:  # checked above; the log's own bound, should they differ
                raise EnrollmentError(
                    f"{req.gateway} cannot be enrolled: {exc}; nothing was registered"
                ) from None
        try:
            cert = self.ca.issue_client(req.csr, req.gateway, "gateway", self.cert_days)
        except CAError as exc:
            raise EnrollmentError(str(exc)) from None
        response = build_response(
            req.gateway, device, cert, self.ca.cert, approved, self.broker, mac_key
        )
        write_private_file(self.state / "responses" / f"{req.gateway}.json", response)
        (self.state / "pending" / f"{req.gateway}.cose").unlink(missing_ok=True)
        log.info(
            "%s %s for %s/%s (%s), certificate serial %x",
            "renewed" if renewed else "enrolled",
            req.gateway,
            printable(device.farm),
            printable(device.field),
            printable(approved),
            cert.serial_number,
        )
        return Approval(device, response, cert, renewed)

    def _enroll_entry(self, req: EnrollmentRequest, approved: str) -> bytes:
        """The log entry recording the enrollment, refused if the log could not take it (a
        log entry is at most 65,535 bytes, what a tlog-tiles entry bundle holds)."""
        entry = registry_entry(
            "enroll",
            req.gateway,
            self.clock(),
            pk=req.public_key,
            farm=req.farm,
            field=req.field,
            location=req.location,
            installer=req.installer,
            sensors=req.sensors,
            approved=approved,
            request=req.raw,
        )
        if len(entry) > MAX_ENTRY_SIZE:
            raise EnrollmentError(
                f"the log entry of {req.gateway}'s enrollment would be {len(entry)} bytes, and "
                f"a log entry may be at most {MAX_ENTRY_SIZE} (it holds the {len(req.raw)}-byte "
                "signed request and repeats its farm, field, location, installer and sensor "
                "settings); enroll again with shorter sensor settings. Nothing was registered "
                "and no token was used"
            )
        return entry

    # ------------------------------------------------------------------ pending requests

    def _pending_files(self) -> list[tuple[Path, os.stat_result]]:
        out = []
        for path in (self.state / "pending").glob("gw-*.cose"):
            try:
                out.append((path, path.stat()))
            except FileNotFoundError:
                continue
        return out

    def _save_pending(self, req: EnrollmentRequest) -> None:
        """Keep a request for an operator. Its id was checked against its key; a request
        waiting already is replaced only by a request of the same key that is not older (the
        technician ran enroll again), never by another key's; the pending area is bounded."""
        path = self.state / "pending" / f"{req.gateway}.cose"
        limits = self.pending_limits
        now = self.clock()
        files = []
        for other, st in self._pending_files():
            if now - st.st_mtime > limits.ttl_s:
                log.info("dropping the enrollment request of %s: waited over %.0f days",
                         other.stem, limits.ttl_s / 86400)  # fmt: skip
                other.unlink(missing_ok=True)
            elif other != path:
                files.append(st.st_size)
        if path.exists():
            try:
                waiting: EnrollmentRequest | None = parse_request(path.read_bytes())
            except EnrollmentError:
                waiting = None  # unreadable: the new, verified request takes its place
            if waiting is not None and waiting.gateway == gateway_id_for(waiting.public_key):
                if waiting.public_key != req.public_key:
                    raise EnrollmentError(
                        f"another key's request for {req.gateway} is waiting for an operator;"
                        " it is not replaced"
                    )
                if req.time < waiting.time:
                    raise EnrollmentError(
                        f"a newer request of {req.gateway} is waiting already; this one is "
                        "older (sent again?) and is not kept"
                    )
        if len(files) + 1 > limits.max_count or sum(files) + len(req.raw) > limits.max_bytes:
            raise PendingFull(
                f"{len(files)} enrollment requests are waiting for an operator already (the "
                "limit); ask the operator to approve them, or enroll with a token"
            )
        write_private_file(path, req.raw)

    def pending(self) -> list[EnrollmentRequest]:
        out = []
        for path in sorted((self.state / "pending").glob("gw-*.cose")):
            try:
                out.append(parse_request(path.read_bytes()))
            except EnrollmentError as exc:
                log.warning("ignoring unreadable pending request %s: %s", path.name, exc)
        return out

    def pending_request(self, gateway: str) -> bytes | None:
        path = self.state / "pending" / f"{gateway}.cose"
        return path.read_bytes() if valid_gateway_id(gateway) and path.exists() else None

    def stored_response(self, gateway: str) -> bytes | None:
        path = self.state / "responses" / f"{gateway}.json"
        return path.read_bytes() if valid_gateway_id(gateway) and path.exists() else None

    # ------------------------------------------------------------------ revocation, rotation

    def revoke(self, gateway: str) -> tuple[Device, int]:
        """Revoke in the registry (logged) and every certificate of the gateway (CRL rewritten).
        Returns the device and how many certificates were revoked."""
        with self._lock:
            device = None
            try:
                device = self.registry.revoke(gateway)
            except RegistryError:
                existing = self.registry.get(gateway)
                if existing is None:
                    raise
                device = existing  # already revoked: still make sure the CRL says so
            revoked = self.ca.revoke(gateway, crl_copy=self.crl_copy)
            (self.state / "responses" / f"{gateway}.json").unlink(missing_ok=True)
            return device, len(revoked)

    def rotate(self, raw: bytes) -> tuple[Device, RotationRequest]:
        """Apply a gateway's rotation request (verified against its registered key)."""
        with self._lock:

            def current(gw: str) -> bytes | None:
                d = self.registry.get(gw)
                return d.public_key if d is not None and d.active else None

            rot = parse_rotation(raw, current)
            entry = registry_entry(
                "rotate",
                rot.gateway,
                self.clock(),
                pk=rot.new_key,
                prev_pk=rot.old_key,
                from_seq=rot.from_seq,
                request=rot.raw,
            )
            try:
                device = self.registry.rotate_key(
                    rot.gateway, rot.old_key, rot.new_key, rot.from_seq, entry
                )
            except RegistryError as exc:
                raise EnrollmentError(str(exc)) from None
            return device, rot


# --------------------------------------------------------------------------------------------
# HTTP endpoint: POST /v1/enroll (request bytes) → 200 response | 202 pending | 4xx/5xx error;
#                GET /v1/enroll/<gateway> → 200 response | 202 pending | 404
#
# Every byte is a stranger's: a fixed pool of workers (no thread per connection), one request
# per connection, a deadline for all of it (TLS handshake, headers, body) and a byte budget,
# a token bucket and a connection cap per client address. Each refusal is counted by reason
# (EnrollmentServer.refused) and logged at most once a minute per reason.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointLimits:
    #: requests handled at once (the worker pool) and connections waiting for a worker
    workers: int = 4
    queue: int = 16
    #: connections one client address may have open (waiting or being served)
    per_address: int = 4
    #: seconds a connection may take in all: TLS handshake, request, body, answer
    request_timeout_s: float = 15.0
    #: token bucket per client address: this many requests at once, refilled at this rate
    rate_burst: int = 10
    rate_per_minute: float = 6.0
    #: request line and headers together
    header_bytes: int = 16 * 1024

    @classmethod
    def from_config(cls, e: EnrollmentConfig) -> EndpointLimits:
        return cls(
            workers=e.workers,
            queue=e.queue,
            per_address=e.connections_per_address,
            request_timeout_s=e.request_timeout_s,
            rate_burst=e.rate_burst,
            rate_per_minute=e.rate_per_minute,
        )


#: why the endpoint refused a client (EnrollmentServer.refused counts them)
REFUSAL_REASONS = (
    "rate_limited",  # over the per-address token bucket: 429
    "too_many_connections",  # over the per-address connection cap: closed at once
    "busy",  # every worker busy and the queue full: closed at once
    "timeout",  # the connection's deadline passed (slow client)
    "too_large",  # request line, headers or body over their bound
    "bad_request",  # not a request this endpoint answers (path, length, method)
    "refused",  # the enrollment request itself was refused: 403
    "pending_full",  # nothing more can wait for an operator: 503
    "connection",  # TLS handshake failed, reset, hung up
    "internal_error",  # a bug of ours (logged with its traceback)
)


class _Refusals:
    """Counts by reason and logs one WARNING per reason per ``interval_s`` (with how many
    were held back since), so a flood is a few lines, not one per connection."""

    def __init__(self, interval_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._last: dict[str, float] = {}
        self._held: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, reason: str, address: str, detail: str = "", exc_info: bool = False) -> None:
        now = self.clock()
        with self._lock:
            self.counts[reason] += 1
            last = self._last.get(reason)
            if last is not None and now - last < self.interval_s:
                self._held[reason] += 1
                return
            held = self._held.pop(reason, 0)
            self._last[reason] = now
        more = f"; {held} more since the previous such line" if held else ""
        log.warning(
            "enrollment endpoint: refused %s (%s)%s%s",
            printable(address, 64),
            reason,
            f": {printable(detail)}" if detail else "",
            more,
            exc_info=exc_info,
        )


class _RateLimiter:
    """A token bucket per client address. Only the accept thread calls it. Its table is
    bounded: past ``MAX_TRACKED`` addresses the refilled ones are forgotten (then the least
    recently seen half)."""

    MAX_TRACKED = 10_000

    def __init__(self, burst: int, per_minute: float, clock: Callable[[], float]) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, address: str) -> bool:
        now = self.clock()
        tokens, at = self._buckets.get(address, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        ok = tokens >= 1.0
        self._buckets[address] = (tokens - 1.0 if ok else tokens, now)
        if len(self._buckets) > self.MAX_TRACKED:
            self._prune(now)
        return ok

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate if self.rate > 0 else float("inf")
        self._buckets = {a: v for a, v in self._buckets.items() if now - v[1] < full}
        if len(self._buckets) > self.MAX_TRACKED // 2:
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[-self.MAX_TRACKED // 2 :]
            self._buckets = dict(keep)


class _TooLarge(FieldproofError):
    """The client sent more than its request may hold."""


class _Expired(FieldproofError):
    """The connection's deadline passed. Not a TimeoutError: http.server swallows those."""


class _DeadlineIO(io.RawIOBase):
    """A socket's reads under one deadline for the whole connection and a byte budget: a slow
    client (a byte every few seconds) runs into the deadline, a long one into the budget."""

    def __init__(self, sock: socket.socket, deadline: float, budget: int) -> None:
        self._sock = sock
        self._deadline = deadline
        self.budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.budget <= 0:
            raise _TooLarge("more than the request may hold")
        _arm(self._sock, self._deadline)
        try:
            with memoryview(buffer) as view:
                n = self._sock.recv_into(view[: self.budget])
        except TimeoutError:
            raise _Expired("the client was too slow") from None
        self.budget -= n
        return n


class _DeadlineWriter:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def write(self, data: bytes) -> int:
        _arm(self._sock, self._deadline)
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise _Expired("the client does not read its answer") from None
        return len(data)

    def flush(self) -> None:
        pass


def _arm(sock: socket.socket, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _Expired("the connection's time is up")
    sock.settimeout(left)


class _Handler(BaseHTTPRequestHandler):
    server: EnrollmentServer
    protocol_version = "HTTP/1.1"

    def __init__(
        self, request: Any, client_address: Any, server: EnrollmentServer, limited: bool,
        deadline: float,
    ) -> None:  # fmt: skip
        self.limited = limited
        self.deadline = deadline
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        sock: socket.socket = self.request
        self.connection = sock
        if isinstance(sock, ssl.SSLSocket):
            _arm(sock, self.deadline)
            try:
                sock.do_handshake()
            except TimeoutError:
                raise _Expired("the client did not finish the TLS handshake") from None
        budget = self.server.limits.header_bytes + MAX_REQUEST_BYTES
        self.rfile = io.BufferedReader(_DeadlineIO(sock, self.deadline, budget), 4096)
        self.wfile = _DeadlineWriter(sock, self.deadline)  # type: ignore[assignment]

    def handle(self) -> None:
        self.close_connection = True  # one request per connection
        self.handle_one_request()

    def finish(self) -> None:
        pass  # the server closes the socket

    @property
    def address(self) -> str:
        return str(self.client_address[0])

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (malformed request line, too many or too long headers,
        unsupported method) are counted like ours."""
        reason = "too_large" if code in (414, 431) else "bad_request"
        self.server.refuse(reason, self.address, f"{code} {message or ''}")
        super().send_error(code, message, explain)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("enrollment endpoint %s: %s", self.address, printable(format % args))

    def _send(self, status: int, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, reason: str, detail: str = "") -> None:
        self.server.refuse(reason, self.address, detail or message)
        extra = {}
        if status == HTTPStatus.TOO_MANY_REQUESTS:
            extra["Retry-After"] = str(self.server.retry_after_s)
        self._send(status, json.dumps({"error": message}).encode() + b"\n", extra)

    def _limited(self) -> bool:
        """Over the address's rate: answer 429 (after reading a small body, so the client
        gets the answer rather than a reset)."""
        if not self.limited:
            return False
        length = self._length()
        if length is not None and length > 0:
            self.rfile.read(length)
        self._error(HTTPStatus.TOO_MANY_REQUESTS, "too many requests; try again later",
                    "rate_limited")  # fmt: skip
        return True

    def _length(self) -> int | None:
        declared = self.headers.get("Content-Length", "0")
        if not (declared.isascii() and declared.isdigit() and len(declared) < 10):
            return None
        length = int(declared)
        return length if length <= MAX_REQUEST_BYTES else None

    def do_POST(self) -> None:
        if self._limited():
            return
        if self.path.rstrip("/") != "/v1/enroll":
            self._error(HTTPStatus.NOT_FOUND, "POST the request to /v1/enroll", "bad_request",
                        f"POST {self.path}")  # fmt: skip
            return
        if "Transfer-Encoding" in self.headers:
            self._error(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length",
                        "bad_request")  # fmt: skip
            return
        declared = self.headers.get("Content-Length", "")
        digits = declared.isascii() and declared.isdigit()
        length = int(declared) if digits and len(declared) < 10 else 0
        if length > MAX_REQUEST_BYTES or (digits and len(declared) >= 10):
            self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the body may hold at most {MAX_REQUEST_BYTES} bytes", "too_large",
                        f"Content-Length {declared[:20]}")  # fmt: skip
            return
        if length == 0:
            self._error(HTTPStatus.BAD_REQUEST, f"body must be 1..{MAX_REQUEST_BYTES} bytes",
                        "bad_request", "no Content-Length")  # fmt: skip
            return
        raw = self.rfile.read(length)
        if len(raw) != length:
            self.server.refuse("connection", self.address, "hung up before the whole body")
            return
        try:
            approval = self.server.enroller.approve(raw)
        except PendingApproval as exc:
            body = json.dumps({"status": "pending", "gateway": exc.gateway}).encode() + b"\n"
            self._send(HTTPStatus.ACCEPTED, body)
            return
        except PendingFull as exc:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(exc), "pending_full")
            return
        except (EnrollmentError, RegistryError) as exc:
            self._error(HTTPStatus.FORBIDDEN, str(exc), "refused")
            return
        self._send(HTTPStatus.OK, approval.response)

    def do_GET(self) -> None:
        if self._limited():
            return
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[:2] != ["v1", "enroll"] or not valid_gateway_id(parts[2]):
            self._error(HTTPStatus.NOT_FOUND, "GET /v1/enroll/<gateway id>", "bad_request",
                        f"GET {self.path}")  # fmt: skip
            return
        gw = parts[2]
        response = self.server.enroller.stored_response(gw)
        if response is not None:
            self._send(HTTPStatus.OK, response)
        elif self.server.enroller.pending_request(gw) is not None:
            body = json.dumps({"status": "pending", "gateway": gw}).encode() + b"\n"
            self._send(HTTPStatus.ACCEPTED, body)
        else:
            body = json.dumps({"error": f"no enrollment for {gw}"}).encode() + b"\n"
            self._send(HTTPStatus.NOT_FOUND, body)


_Job = tuple[socket.socket, Any, bool, float]


class EnrollmentServer(socketserver.TCPServer):
    """The endpoint: the accept loop (``serve_forever``) checks the client's address (its
    connection cap and token bucket) and queues the connection for a fixed pool of workers;
    when the queue is full the connection is closed at once."""

    allow_reuse_address = True
    request_queue_size = 64

    def __init__(
        self,
        enroller: Enroller,
        host: str,
        port: int,
        limits: EndpointLimits | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (seconds) refills the token buckets and spaces the refusal log lines."""
        self.enroller = enroller
        self.limits = limits or EndpointLimits()
        self._refusals = _Refusals(clock=clock)
        self._rate = _RateLimiter(self.limits.rate_burst, self.limits.rate_per_minute, clock)
        # (a Queue of maxsize 0 would be unbounded)
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=max(1, self.limits.queue))
        self._open: Counter[str] = Counter()
        self._open_lock = threading.Lock()
        self._closing = threading.Event()
        super().__init__((host, port), _Handler)  # type: ignore[arg-type]
        self._workers = [
            threading.Thread(target=self._work, name=f"enrollment-worker-{i}", daemon=True)
            for i in range(self.limits.workers)
        ]
        for t in self._workers:
            t.start()

    @property
    def refused(self) -> Counter[str]:
        """Refusals since start, by reason (:data:`REFUSAL_REASONS`)."""
        return self._refusals.counts

    @property
    def retry_after_s(self) -> int:
        rate = self.limits.rate_per_minute
        return max(1, round(60 / rate)) if rate > 0 else 3600

    def refuse(self, reason: str, address: str, detail: str = "", exc_info: bool = False) -> None:
        self._refusals.add(reason, address, detail, exc_info)

    def process_request(self, request: Any, client_address: Any) -> None:
        """In the accept thread: never blocks on the client."""
        address = str(client_address[0])
        with self._open_lock:
            if self._open[address] >= self.limits.per_address:
                self.refuse("too_many_connections", address)
                self.shutdown_request(request)
                return
            self._open[address] += 1
        limited = not self._rate.allow(address)
        deadline = time.monotonic() + self.limits.request_timeout_s
        try:
            self._jobs.put_nowait((request, client_address, limited, deadline))
        except queue.Full:
            self._release(address)
            self.refuse("busy", address, "every worker is busy and the queue is full")
            self.shutdown_request(request)

    def _release(self, address: str) -> None:
        with self._open_lock:
            self._open[address] -= 1
            if self._open[address] <= 0:
                del self._open[address]

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            request, client_address, limited, deadline = job
            address = str(client_address[0])
            try:
                if not self._closing.is_set():
                    _Handler(request, client_address, self, limited, deadline)
            except _TooLarge as exc:
                self.refuse("too_large", address, str(exc))
            except (_Expired, TimeoutError) as exc:
                self.refuse("timeout", address, str(exc) or "the client was too slow")
            except OSError as exc:  # ssl.SSLError, resets
                self.refuse("connection", address, str(exc))
            except Exception as exc:
                self.refuse("internal_error", address, type(exc).__name__, exc_info=True)
            finally:
                self.shutdown_request(request)
                self._release(address)

    def server_close(self) -> None:
        super().server_close()
        if self._closing.is_set():
            return
        self._closing.set()
        for _ in self._workers:
            self._jobs.put(None)
        for t in self._workers:
            t.join(self.limits.request_timeout_s + 5)


def start_enrollment_server(
    enroller: Enroller,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    limits: EndpointLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> EnrollmentServer:
    """Serve the endpoint in a daemon thread; ``server.server_address`` has the real port.
    Stop with ``server.shutdown()`` then ``server.server_close()``."""
    server = EnrollmentServer(enroller, host, port, limits, clock)
    if tls_cert is not None and tls_key is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls_cert), str(tls_key))
        # the handshake happens in a worker under the connection's deadline, not in the
        # accept loop, so a client that never finishes it cannot stall the endpoint
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    threading.Thread(target=server.serve_forever, name="enrollment-http", daemon=True).start()
    return server


def verify_with_key_history(registry: Registry, message: bytes, gateway: str) -> Payload | None:
    """A message that the gateway's current key does not verify may be one a key retired by
    rotation signed before the rotation (still in the gateway's spool). Accept it only when
    that key was the gateway's key at the message's seq. None when no key fits."""
    for key, _, valid_to, _ in registry.key_history(gateway):
        if valid_to is None:
            continue
        try:
            payload = decode_message(message, key)
        except WireError:
            continue
        if registry.key_for_seq(gateway, payload.seq) == key:
            return payload
    return None
