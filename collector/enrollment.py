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
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509

from collector.ca import CertificateAuthority
from collector.registry import Device, Registry, RegistryError
from fieldproof.config import CollectorConfig
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


@dataclass(frozen=True)
class TokenInfo:
    id: str
    farm: str
    field: str
    created_at: float
    expires_at: float
    used_by: str | None
    used_at: float | None


class TokenStore:
    """One-time tokens in the collector database. Only a key derived from the secret is kept;
    whoever can write this database can enroll devices anyway."""

    def __init__(self, db: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self.db.executescript(_TOKEN_SCHEMA)

    def create(self, farm: str, field: str, ttl_s: float) -> tuple[str, TokenInfo]:
        """A new token (shown once) for enrolling one gateway into ``farm``/``field``."""
        for label, value in (("farm", farm), ("field", field)):
            if not value or len(value) > 64:
                raise EnrollmentError(f"{label} must be a name of 1 to 64 characters")
        token_id = secrets.token_hex(4)
        secret = secrets.token_bytes(20)
        now = self.clock()
        with self.db:
            self.db.execute(
                "INSERT INTO enrollment_tokens VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                (token_id, token_mac_key(secret), farm, field, now, now + ttl_s),
            )
        text = f"{TOKEN_PREFIX}.{token_id}.{base64.b32encode(secret).decode().lower()}"
        return text, TokenInfo(token_id, farm, field, now, now + ttl_s, None, None)

    def get(self, token_id: str) -> tuple[TokenInfo, bytes] | None:
        row = self.db.execute(
            "SELECT id, farm, field, created_at, expires_at, used_by, used_at, mac_key"
            " FROM enrollment_tokens WHERE id=?",
            (token_id,),
        ).fetchone()
        if row is None:
            return None
        return TokenInfo(*row[:7]), bytes(row[7])

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
# Requests
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# The enroller: approve, revoke, rotate
# --------------------------------------------------------------------------------------------


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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.ca = ca
        self.tokens = tokens
        self.state = Path(state)
        self.cert_days = cert_days
        self.crl_copy = crl_copy
        self.broker = broker
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
            TokenStore(registry.db, clock),
            state_dir(cfg),
            cert_days=e.cert_days,
            crl_copy=e.crl_copy,
            broker=(e.broker_host, e.broker_port) if e.broker_host else None,
            clock=clock,
        )

    # ------------------------------------------------------------------ approval

    def approve(self, raw: bytes, operator: str | None = None) -> Approval:
        """Approve a request: by ``operator`` (a name for the record) or, when None, only if
        it carries a valid unused token for its farm and field."""
        with self._lock:
            return self._approve(raw, operator)

    def _approve(self, raw: bytes, operator: str | None) -> Approval:
        req = parse_request(raw, self.clock())
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
        if token_ok and req.token_id is not None:
            try:
                self.tokens.claim(req.token_id, req.gateway)
            except EnrollmentError:
                if operator is None:
                    raise
                mac_key = None  # the operator's word stands; the spent token proves nothing
        existing = self.registry.get(req.gateway)
        renewed = existing is not None
        if existing is not None:
            if not existing.active:
                raise EnrollmentError(
                    f"{req.gateway} was revoked; a revoked gateway must start again with a new"
                    " key ('fieldproof gateway init' after moving the old key away)"
                )
            if existing.public_key != req.public_key:
                raise EnrollmentError(f"{req.gateway} is registered with another key")
            device = existing
        else:
            if req.gateway != gateway_id_for(req.public_key):
                raise EnrollmentError(
                    f"a new gateway's id must be derived from its key: "
                    f"{gateway_id_for(req.public_key)}, not {req.gateway}"
                )
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
            try:
                device = self.registry.enroll_device(
                    req.gateway, req.public_key, req.farm, req.field, req.location, entry
                )
            except RegistryError as exc:
                raise EnrollmentError(str(exc)) from None
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
            device.farm,
            device.field,
            approved,
            cert.serial_number,
        )
        return Approval(device, response, cert, renewed)

    def _save_pending(self, req: EnrollmentRequest) -> None:
        write_private_file(self.state / "pending" / f"{req.gateway}.cose", req.raw)

    def pending(self) -> list[EnrollmentRequest]:
        out = []
        for path in sorted((self.state / "pending").glob("gw-*.cose")):
            try:
                out.append(parse_request(path.read_bytes()))
            except EnrollmentError as exc:
                log.warning("ignoring unreadable pending request %s: %s", path, exc)
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


class PendingApproval(EnrollmentError):
    """No token: the request is stored until an operator approves it."""

    def __init__(self, gateway: str) -> None:
        super().__init__(
            f"{gateway} is waiting for an operator: "
            f"'fieldproof collector devices approve --pending {gateway}'"
        )
        self.gateway = gateway


# --------------------------------------------------------------------------------------------
# HTTP endpoint: POST /v1/enroll (request bytes) → 200 response | 202 pending | 4xx error;
#                GET /v1/enroll/<gateway> → 200 response | 202 pending | 404
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: EnrollmentServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a client may take per read (TLS handshake included)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("enrollment endpoint %s: " + format, self.client_address[0], *args)

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str) -> None:
        self._send(status, json.dumps({"error": message}).encode() + b"\n")

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/enroll":
            self._error(HTTPStatus.NOT_FOUND, "POST the request to /v1/enroll")
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_REQUEST_BYTES:
            self._error(HTTPStatus.BAD_REQUEST, f"body must be 1..{MAX_REQUEST_BYTES} bytes")
            return
        raw = self.rfile.read(length)
        try:
            approval = self.server.enroller.approve(raw)
        except PendingApproval as exc:
            self._send(
                HTTPStatus.ACCEPTED,
                json.dumps({"status": "pending", "gateway": exc.gateway}).encode() + b"\n",
            )
            return
        except (EnrollmentError, RegistryError) as exc:
            self._error(HTTPStatus.FORBIDDEN, str(exc))
            return
        self._send(HTTPStatus.OK, approval.response)

    def do_GET(self) -> None:
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[:2] != ["v1", "enroll"] or not valid_gateway_id(parts[2]):
            self._error(HTTPStatus.NOT_FOUND, "GET /v1/enroll/<gateway id>")
            return
        gw = parts[2]
        response = self.server.enroller.stored_response(gw)
        if response is not None:
            self._send(HTTPStatus.OK, response)
        elif self.server.enroller.pending_request(gw) is not None:
            self._send(
                HTTPStatus.ACCEPTED,
                json.dumps({"status": "pending", "gateway": gw}).encode() + b"\n",
            )
        else:
            self._error(HTTPStatus.NOT_FOUND, f"no enrollment for {gw}")


class EnrollmentServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, enroller: Enroller, host: str, port: int) -> None:
        self.enroller = enroller
        super().__init__((host, port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that fails TLS or hangs up is one log line, not a traceback."""
        import sys

        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):  # ssl.SSLError, timeouts and resets are OSErrors
            log.warning("enrollment endpoint: %s: %s", client_address[0], exc)
        else:
            super().handle_error(request, client_address)


def start_enrollment_server(
    enroller: Enroller,
    host: str = "127.0.0.1",
    port: int = 0,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> EnrollmentServer:
    """Serve the endpoint in a daemon thread; ``server.server_address`` has the real port.
    Stop with ``server.shutdown()``."""
    server = EnrollmentServer(enroller, host, port)
    if tls_cert is not None and tls_key is not None:
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls_cert), str(tls_key))
        # handshake in the handler's thread (first read), not in the accept loop, so a client
        # that never finishes it cannot stall the endpoint
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
