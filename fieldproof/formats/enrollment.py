"""Enrollment documents, byte for byte (docs/enrollment.md): the gateway's signed request and
key rotation, one-time tokens and their MACs, and the collector's response.

A request is a COSE_Sign1 (:mod:`fieldproof.wire`) by the gateway's own Ed25519 key over a
deterministic-CBOR map::

    {"t": "fieldproof/enroll/v1", "gw": id, "pk": Ed25519 public key, "farm", "field",
     "location", "installer", "sensors": [{"name", "kind", "config"}...], "time": float,
     "nonce": 16 bytes, "csr": DER PKCS#10 for the MQTT client certificate (CN = id),
     ["token": token id, "tmac": HMAC-SHA256(token key, the map without "tmac")]}

Pure codecs, shared by the gateway (builds requests, checks responses), the collector
(parses requests, builds responses) and the inspector (checks the requests embedded in the
log's registry events). No I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from fieldproof.errors import FormatError
from fieldproof.formats.registry_event import REGISTRY_EVENT_TYPE
from fieldproof.tls import common_name, fingerprint
from fieldproof.wire import (
    ALG_EDDSA,
    HEADER_ALG,
    HEADER_KID,
    WireError,
    decode_deterministic,
    encode_deterministic,
    gateway_id_for,
    parse_sign1,
    public_key_bytes,
    sign1,
    verify_sign1,
)

REQUEST_TYPE = "fieldproof/enroll/v1"
ROTATE_TYPE = "fieldproof/rotate/v1"
RESPONSE_TYPE = "fieldproof/enroll-response/v1"
TOKEN_PREFIX = "fpe1"  # noqa: S105 (a format tag, not a secret)
MAX_REQUEST_BYTES = 32 * 1024
#: a request dated further ahead than this is refused (the device clock is wrong)
MAX_FUTURE_S = 86400.0
_TEXT_LIMITS = {"farm": 64, "field": 64, "location": 200, "installer": 100}
#: a request lists at most this many sensors, each a map of at most this many members
MAX_SENSORS = 64
MAX_SENSOR_MEMBERS = 64
#: any other text in a request (sensor names, kinds, configuration keys and values)
MAX_OTHER_TEXT = 200
#: sensor configuration maps and lists nest at most this deep
_MAX_DEPTH = 8
_REQUIRED = {"t", "gw", "pk", "farm", "field", "location", "installer", "sensors", "time",
             "nonce", "csr"}  # fmt: skip
_OPTIONAL = {"token", "tmac"}
_TOKEN_RE = re.compile(r"^fpe1\.([0-9a-f]{8})\.([a-z2-7]{32})$")


class EnrollmentError(FormatError):
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


def printable(text: str, limit: int = 200) -> str:
    """``text`` safe for a terminal or a log line: every character that is not printable
    (controls such as ESC, bidirectional overrides, line separators) shown as its escape
    (``\\x1b``), and cut at ``limit`` characters. For text that came from a network client."""
    out = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:limit])
    return out + ("…" if len(text) > limit else "")


def _check_text(value: object, what: str, limit: int) -> str:
    """Text of at most ``limit`` characters, every one printable (no control characters: a
    request's text reaches the operator's terminal, the log and InfluxDB tags)."""
    if not isinstance(value, str) or len(value) > limit:
        raise EnrollmentError(f"{what} must be text of at most {limit} characters")
    if not value.isprintable():
        raise EnrollmentError(
            f"{what} holds a control or other non-printable character "
            f"({printable(value, 60)}); only printable text is accepted"
        )
    return value


def _check_value(value: object, what: str, depth: int) -> None:
    """A sensor configuration value: numbers, booleans, null, printable text, and lists or
    maps of those, nested at most :data:`_MAX_DEPTH` deep."""
    if value is None or isinstance(value, bool | int | float):
        return
    if isinstance(value, str):
        _check_text(value, what, MAX_OTHER_TEXT)
        return
    if depth >= _MAX_DEPTH:
        raise EnrollmentError(f"{what} nests too deep")
    if isinstance(value, list):
        if len(value) > MAX_SENSOR_MEMBERS:
            raise EnrollmentError(f"{what} has more than {MAX_SENSOR_MEMBERS} items")
        for i, item in enumerate(value):
            _check_value(item, f"{what}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        if len(value) > MAX_SENSOR_MEMBERS:
            raise EnrollmentError(f"{what} has more than {MAX_SENSOR_MEMBERS} members")
        for k, v in value.items():
            key = _check_text(k, f"a key of {what}", 64)
            _check_value(v, f"{what}.{key}", depth + 1)
        return
    raise EnrollmentError(f"{what} must be text, a number, a list or a map")


def check_fields(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's text fields and sensor list are bounded and printable; returns the
    sensors. Used by the gateway before signing and by the collector after verifying."""
    for name, limit in _TEXT_LIMITS.items():
        _check_text(body.get(name), name, limit)
    for name in ("farm", "field"):
        if not body[name]:
            raise EnrollmentError(f"{name} must not be empty")
    sensors = body.get("sensors")
    if not isinstance(sensors, list) or len(sensors) > MAX_SENSORS:
        raise EnrollmentError(f"sensors must be a list of at most {MAX_SENSORS} maps")
    for i, sensor in enumerate(sensors):
        if not isinstance(sensor, dict) or not isinstance(sensor.get("name"), str):
            raise EnrollmentError("sensors must be a list of maps with a name")
        _check_text(sensor["name"], f"sensors[{i}].name", 64)
        if "kind" in sensor:
            _check_text(sensor["kind"], f"sensors[{i}].kind", 64)
        _check_value(sensor, f"sensors[{i}]", 1)
    return sensors


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


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
        """What an operator checks before approving. Every text is shown escaped
        (:func:`printable`): it came from the network."""
        p = printable
        sensors = ", ".join(
            f"{p(str(s.get('name')), 64)} ({p(str(s.get('kind')), 64)})" for s in self.sensors
        )
        return [
            ("gateway", p(self.gateway)),
            ("public key", self.public_key.hex()),
            ("farm / field", f"{p(self.farm)} / {p(self.field)}"),
            ("location", p(self.location) or "-"),
            ("installer", p(self.installer)),
            ("sensors", p(sensors, 2000) or "-"),
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
    check_fields(body)
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
    if not isinstance(gw, str) or not valid_gateway_id(gw) or kid != gw:
        raise EnrollmentError(f"gw must be a gateway id equal to the kid; got {gw!r}")
    try:
        verify_sign1(raw, pk)
    except WireError as exc:
        raise EnrollmentError(f"enrollment request signature: {exc}") from None
    sensors = check_fields(body)
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
    if ("token" in body) != ("tmac" in body):
        raise EnrollmentError("token and tmac go together")
    if token_id is not None and (
        not isinstance(token_id, str) or re.fullmatch(r"[0-9a-f]{8}", token_id) is None
    ):
        raise EnrollmentError("token must be a token id (8 hexadecimal digits)")
    if "tmac" in body and (not isinstance(body["tmac"], bytes) or len(body["tmac"]) != 32):
        raise EnrollmentError("tmac must be 32 bytes")
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


class Placement(Protocol):
    """Where a device is enrolled: what a response tells the gateway."""

    @property
    def farm(self) -> str: ...
    @property
    def field(self) -> str: ...


def valid_gateway_id(gateway: str) -> bool:
    return re.fullmatch(r"gw-[0-9a-f]{16}", gateway) is not None


def _canonical_json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def build_response(
    gateway: str,
    device: Placement,
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
    if not valid_gateway_id(resp["gw"]):
        raise EnrollmentError(f"the enrollment response names no gateway id: {resp['gw']!r:.80}")
    for name in ("farm", "field", "approved"):
        if name in resp:
            _check_text(resp[name], f"the response's {name}", 200)
    broker = resp.get("broker")
    if broker is not None and not (
        isinstance(broker, dict)
        and isinstance(broker.get("host"), str)
        and 0 < len(broker["host"]) <= 253
        and broker["host"].isprintable()
        and " " not in broker["host"]
        and type(broker.get("port")) is int
        and 0 < broker["port"] < 65536
    ):
        raise EnrollmentError("the enrollment response's broker is not a host name and port")
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
