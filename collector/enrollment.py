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
import hashlib
import hmac
import json
import logging
import re
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from anchor.evidence import REGISTRY_EVENT_TYPE
from collector.ca import CAError, CertificateAuthority, common_name, fingerprint
from collector.registry import Device, Registry, RegistryError
from fieldproof.config import CollectorConfig
from fieldproof.keys import write_private_file
from fieldproof.wire import (
    ALG_EDDSA,
    HEADER_ALG,
    HEADER_KID,
    Payload,
    WireError,
    decode_deterministic,
    decode_message,
    encode_deterministic,
    gateway_id_for,
    parse_sign1,
    public_key_bytes,
    sign1,
    verify_sign1,
)

log = logging.getLogger("fieldproof.enrollment")

REQUEST_TYPE = "fieldproof/enroll/v1"
ROTATE_TYPE = "fieldproof/rotate/v1"
RESPONSE_TYPE = "fieldproof/enroll-response/v1"
TOKEN_PREFIX = "fpe1"  # noqa: S105 (a format tag, not a secret)
MAX_REQUEST_BYTES = 32 * 1024
#: a request dated further ahead than this is refused (the device clock is wrong)
MAX_FUTURE_S = 86400.0
_TEXT_LIMITS = {"farm": 64, "field": 64, "location": 200, "installer": 100}
_REQUIRED = {"t", "gw", "pk", "farm", "field", "location", "installer", "sensors", "time",
             "nonce", "csr"}  # fmt: skip
_OPTIONAL = {"token", "tmac"}
_TOKEN_RE = re.compile(r"^fpe1\.([0-9a-f]{8})\.([a-z2-7]{32})$")


class EnrollmentError(ValueError):
    """A request, response or token was refused; the message says why and what to do."""


# --------------------------------------------------------------------------------------------
# Tokens: "fpe1.<id>.<secret>", one use, bound to a farm and field, with an expiry
# --------------------------------------------------------------------------------------------


def parse_token(token: str) -> tuple[str, bytes]:
    """(token id, MAC key). The secret itself is never stored or logged."""
    m = _TOKEN_RE.match(token.strip().lower())
    if m is None:
        raise EnrollmentError(
            "that is not an enrollment token (it looks like fpe1.xxxxxxxx.<32 letters/digits>);"
            " copy it again from the operator"
        )
    secret = base64.b32decode(m.group(2).upper())
    return m.group(1), token_mac_key(secret)


def token_mac_key(secret: bytes) -> bytes:
    return hashlib.sha256(b"fieldproof enrollment token v1\x00" + secret).digest()


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


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


@dataclass(frozen=True)
class EnrollmentRequest:
    raw: bytes
    body: dict[str, Any]
    gateway: str
    public_key: bytes
    farm: str
    field: str
    location: str
    installer: str
    sensors: list[dict[str, Any]]
    time: float
    csr: x509.CertificateSigningRequest
    token_id: str | None

    def summary(self) -> list[tuple[str, str]]:
        """What an operator checks before approving."""
        sensors = ", ".join(f"{s.get('name')} ({s.get('kind')})" for s in self.sensors) or "-"
        return [
            ("gateway", self.gateway),
            ("public key", self.public_key.hex()),
            ("farm / field", f"{self.farm} / {self.field}"),
            ("location", self.location or "-"),
            ("installer", self.installer),
            ("sensors", sensors),
            ("signed at", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.time))),
            ("token", self.token_id or "none (needs an operator's approval)"),
        ]


def build_request(
    key: Ed25519PrivateKey,
    csr: x509.CertificateSigningRequest,
    *,
    farm: str,
    field: str,
    location: str,
    installer: str,
    sensors: list[dict[str, Any]],
    now: float,
    token: str | None = None,
) -> bytes:
    """The gateway's signed enrollment request (see the module docstring)."""
    pk = public_key_bytes(key)
    gw = gateway_id_for(pk)
    body: dict[str, Any] = {
        "t": REQUEST_TYPE,
        "gw": gw,
        "pk": pk,
        "farm": farm,
        "field": field,
        "location": location,
        "installer": installer,
        "sensors": sensors,
        "time": float(now),
        "nonce": secrets.token_bytes(16),
        "csr": csr.public_bytes(Encoding.DER),
    }
    if token is not None:
        token_id, mac_key = parse_token(token)
        body["token"] = token_id
        body["tmac"] = _mac(mac_key, encode_deterministic(body))
    return sign1(encode_deterministic(body), key, gw.encode())


def _signed_body(raw: bytes, what: str) -> tuple[dict[str, Any], bytes, str]:
    """Structure checks shared by requests and rotations: (body, payload, kid)."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise EnrollmentError(f"{what} is {len(raw)} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        parsed = parse_sign1(raw, require_tag=True)
        decode_deterministic(raw, what)
        body = decode_deterministic(parsed.payload, f"{what} payload")
    except WireError as exc:
        raise EnrollmentError(f"{what} is not a signed fieldproof document: {exc}") from None
    if set(parsed.protected) != {HEADER_ALG, HEADER_KID} or parsed.alg != ALG_EDDSA:
        raise EnrollmentError(f"{what}: protected header must hold exactly alg EdDSA and kid")
    if parsed.unprotected:
        raise EnrollmentError(f"{what}: unprotected header must be empty")
    kid = parsed.kid.decode("ascii", "replace") if parsed.kid else ""
    if not isinstance(body, dict):
        raise EnrollmentError(f"{what} payload must be a map")
    return body, parsed.payload, kid


def parse_request(raw: bytes, now: float | None = None) -> EnrollmentRequest:
    """Check structure, types and the gateway's signature. Token and registry checks are the
    :class:`Enroller`'s."""
    body, _, kid = _signed_body(raw, "enrollment request")
    if body.get("t") != REQUEST_TYPE:
        raise EnrollmentError(f"not an enrollment request (t = {body.get('t')!r})")
    missing = _REQUIRED - set(body)
    extra = set(body) - _REQUIRED - _OPTIONAL
    if missing or extra:
        raise EnrollmentError(
            f"enrollment request fields wrong: missing {sorted(missing)}, unknown {sorted(extra)}"
        )
    pk = body["pk"]
    if not isinstance(pk, bytes) or len(pk) != 32:
        raise EnrollmentError("pk must be a 32-byte Ed25519 public key")
    gw = body["gw"]
    if not isinstance(gw, str) or not _valid_gateway(gw) or kid != gw:
        raise EnrollmentError(f"gw must be a gateway id equal to the kid; got {gw!r}")
    try:
        verify_sign1(raw, pk)
    except WireError as exc:
        raise EnrollmentError(f"enrollment request signature: {exc}") from None
    for name, limit in _TEXT_LIMITS.items():
        value = body[name]
        if not isinstance(value, str) or len(value) > limit:
            raise EnrollmentError(f"{name} must be text of at most {limit} characters")
    sensors = body["sensors"]
    if not isinstance(sensors, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) for s in sensors
    ):
        raise EnrollmentError("sensors must be a list of maps with a name")
    t = body["time"]
    if not isinstance(t, float):
        raise EnrollmentError("time must be a float (seconds since the epoch)")
    if now is not None and t > now + MAX_FUTURE_S:
        raise EnrollmentError(
            "the request is dated in the future: the gateway's clock is wrong; "
            "fix it (fieldproof gateway doctor) and enroll again"
        )
    if not isinstance(body["nonce"], bytes) or len(body["nonce"]) != 16:
        raise EnrollmentError("nonce must be 16 bytes")
    if not isinstance(body["csr"], bytes):
        raise EnrollmentError("csr must be a DER certificate signing request")
    try:
        csr = x509.load_der_x509_csr(body["csr"])
    except ValueError:
        raise EnrollmentError("csr is not a DER certificate signing request") from None
    if common_name(csr.subject) != gw:
        raise EnrollmentError(f"the CSR must be for CN={gw}")
    token_id = body.get("token")
    if ("token" in body) != ("tmac" in body) or (
        token_id is not None and not isinstance(token_id, str)
    ):
        raise EnrollmentError("token and tmac go together")
    return EnrollmentRequest(
        raw=raw,
        body=body,
        gateway=gw,
        public_key=pk,
        farm=body["farm"],
        field=body["field"],
        location=body["location"],
        installer=body["installer"],
        sensors=sensors,
        time=t,
        csr=csr,
        token_id=token_id,
    )


def check_token_mac(req: EnrollmentRequest, mac_key: bytes) -> bool:
    body = {k: v for k, v in req.body.items() if k != "tmac"}
    tmac = req.body.get("tmac")
    return isinstance(tmac, bytes) and hmac.compare_digest(
        _mac(mac_key, encode_deterministic(body)), tmac
    )


# --------------------------------------------------------------------------------------------
# Log entries (same shape as anchor.evidence.registry_event, with more fields)
# --------------------------------------------------------------------------------------------


def registry_entry(event: str, gateway: str, at: float, **fields: Any) -> bytes:
    """A registry event as a log entry: deterministic CBOR ``{"t": "fieldproof/registry/v1",
    "event", "gw", "time", ...}`` like :func:`anchor.evidence.registry_event`, for the events
    and fields enrollment adds (``"request"``: the signed request; ``"rotate"``)."""
    body: dict[str, Any] = {"t": REGISTRY_EVENT_TYPE, "event": event, "gw": gateway}
    body.update(fields)
    body["time"] = float(at)
    return encode_deterministic(body)


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def _canonical_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_response(
    gateway: str,
    device: Device,
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    approved: str,
    broker: tuple[str, int] | None,
    mac_key: bytes | None,
) -> bytes:
    resp: dict[str, Any] = {
        "t": RESPONSE_TYPE,
        "gw": gateway,
        "farm": device.farm,
        "field": device.field,
        "cert": cert.public_bytes(Encoding.PEM).decode(),
        "ca": ca_cert.public_bytes(Encoding.PEM).decode(),
        "ca_sha256": fingerprint(ca_cert),
        "serial": format(cert.serial_number, "x"),
        "not_after": int(cert.not_valid_after_utc.timestamp()),
        "approved": approved,
    }
    if broker is not None and broker[0]:
        resp["broker"] = {"host": broker[0], "port": broker[1]}
    if mac_key is not None:
        resp["mac"] = _mac(mac_key, _canonical_json(resp)).hex()
    return json.dumps(resp, indent=1, sort_keys=True).encode() + b"\n"


def parse_response(data: bytes) -> dict[str, Any]:
    try:
        resp = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise EnrollmentError("the enrollment response is not JSON") from None
    if not isinstance(resp, dict) or resp.get("t") != RESPONSE_TYPE:
        raise EnrollmentError("not a fieldproof enrollment response")
    for name in ("gw", "cert", "ca", "farm", "field"):
        if not isinstance(resp.get(name), str):
            raise EnrollmentError(f"enrollment response has no {name}")
    return resp


def check_response_mac(resp: dict[str, Any], mac_key: bytes) -> bool:
    mac = resp.get("mac")
    if not isinstance(mac, str):
        return False
    body = {k: v for k, v in resp.items() if k != "mac"}
    return hmac.compare_digest(_mac(mac_key, _canonical_json(body)).hex(), mac)


# --------------------------------------------------------------------------------------------
# Rotation requests: outer COSE_Sign1 by the current key over an inner one by the new key
# --------------------------------------------------------------------------------------------


def build_rotation(
    old_key: Ed25519PrivateKey, new_key: Ed25519PrivateKey, gateway: str, from_seq: int,
    now: float,
) -> bytes:  # fmt: skip
    """The current key authorises the new one; the new key proves it is held by the device."""
    body = {
        "t": ROTATE_TYPE,
        "gw": gateway,
        "pk": public_key_bytes(old_key),
        "new_pk": public_key_bytes(new_key),
        "from_seq": from_seq,
        "time": float(now),
        "nonce": secrets.token_bytes(16),
    }
    inner = sign1(encode_deterministic(body), new_key, gateway.encode())
    return sign1(inner, old_key, gateway.encode())


@dataclass(frozen=True)
class RotationRequest:
    raw: bytes
    gateway: str
    old_key: bytes
    new_key: bytes
    from_seq: int
    time: float


def parse_rotation(raw: bytes, current_key: Callable[[str], bytes | None]) -> RotationRequest:
    """Verify both signatures; ``current_key(gateway)`` is the registry's current key."""
    inner, kid = _envelope(raw, "rotation request")
    registered = current_key(kid)
    if registered is None:
        raise EnrollmentError(f"{kid!r} is not a registered gateway")
    try:
        verify_sign1(raw, registered)
    except WireError as exc:
        raise EnrollmentError(
            f"rotation request is not signed by {kid}'s registered key: {exc}"
        ) from None
    body, _, inner_kid = _signed_body(inner, "rotation request (inner)")
    if body.get("t") != ROTATE_TYPE or set(body) != {
        "t", "gw", "pk", "new_pk", "from_seq", "time", "nonce"
    }:  # fmt: skip
        raise EnrollmentError("not a fieldproof rotation request")
    new_pk, from_seq = body["new_pk"], body["from_seq"]
    if body["gw"] != kid or inner_kid != kid or body["pk"] != registered:
        raise EnrollmentError("rotation request names another gateway or key")
    if not isinstance(new_pk, bytes) or len(new_pk) != 32:
        raise EnrollmentError("new_pk must be a 32-byte Ed25519 public key")
    if type(from_seq) is not int or from_seq < 1:
        raise EnrollmentError("from_seq must be a positive integer")
    try:
        verify_sign1(inner, new_pk)
    except WireError as exc:
        raise EnrollmentError(f"the new key's signature does not verify: {exc}") from None
    return RotationRequest(raw, kid, registered, new_pk, from_seq, float(body["time"]))


def _envelope(raw: bytes, what: str) -> tuple[bytes, str]:
    """(payload, kid) of an outer COSE_Sign1 whose payload is not a map."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise EnrollmentError(f"{what} is {len(raw)} bytes; the limit is {MAX_REQUEST_BYTES}")
    try:
        parsed = parse_sign1(raw, require_tag=True)
    except WireError as exc:
        raise EnrollmentError(f"{what} is not a signed fieldproof document: {exc}") from None
    kid = parsed.kid.decode("ascii", "replace") if parsed.kid else ""
    return parsed.payload, kid


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
        return path.read_bytes() if _valid_gateway(gateway) and path.exists() else None

    def stored_response(self, gateway: str) -> bytes | None:
        path = self.state / "responses" / f"{gateway}.json"
        return path.read_bytes() if _valid_gateway(gateway) and path.exists() else None

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


def _valid_gateway(gateway: str) -> bool:
    return re.fullmatch(r"gw-[0-9a-f]{16}", gateway) is not None


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
        if len(parts) != 3 or parts[:2] != ["v1", "enroll"] or not _valid_gateway(parts[2]):
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
