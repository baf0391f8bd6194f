"""The fieldproof wire format, shared by gateway, collector and verifier.

A message is a tagged COSE_Sign1 (RFC 9052) signed with the gateway's Ed25519 key (alg EdDSA,
``kid`` = gateway id, both in the protected header). Its payload is a deterministically encoded
CBOR map (RFC 8949 §4.2.1)::

    {"v": 1, "gw": <gateway id>, "seq": <uint>, "boot": <uint>, "e": <SenML pack>}

The SenML pack (RFC 8428, CBOR labels) carries the base name ``urn:dev:fp:<gateway>:``, the base
time (earliest sample, seconds since the epoch) and one record per reading named
``<sensor>/<quantity>``. A reading a sensor failed to produce is carried as a record with the
string value label ``vs`` = ``"missing:<reason>"`` instead of ``v``, so a gap is evidence too.

The full byte-level description lives in docs/wire-format.md.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fieldproof import ed25519
from fieldproof.errors import FormatError

WIRE_VERSION = 1
COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_CONTENT_TYPE = 3
HEADER_KID = 4
ALG_EDDSA = -8
ALG_ES256 = -7
ALG_ES384 = -35
ALG_ES512 = -36
#: Largest message the collector accepts; a 10-reading message is about 400 bytes.
MAX_MESSAGE_BYTES = 64 * 1024
#: Most readings one message may carry.
MAX_READINGS_PER_MESSAGE = 1000
MAX_SEQ = 2**63 - 1
#: sample times must fit a 64-bit nanosecond timestamp (InfluxDB's range ends in 2262)
MAX_SAMPLE_TIME = 9_000_000_000.0

# SenML CBOR labels (RFC 8428 §6, Table 4)
SENML_BN = -2
SENML_BT = -3
SENML_N = 0
SENML_U = 1
SENML_V = 2
SENML_VS = 3
SENML_T = 6

SENML_BASE_PREFIX = "urn:dev:fp:"
MISSING_PREFIX = "missing:"
_UNIT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789%/._-")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-:._/")


class WireError(FormatError):
    """A message is not a valid fieldproof message; the text says why."""


class MalformedMessage(WireError):
    """The bytes are not the structure the wire format requires."""


class BadSignature(WireError):
    """The structure is fine but the signature does not verify with the given key."""


# --------------------------------------------------------------------------------------------
# Deterministic CBOR (RFC 8949 §4.2.1)
# --------------------------------------------------------------------------------------------


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    if value < 2**8:
        return bytes([major << 5 | 24, value])
    if value < 2**16:
        return bytes([major << 5 | 25]) + struct.pack(">H", value)
    if value < 2**32:
        return bytes([major << 5 | 26]) + struct.pack(">I", value)
    return bytes([major << 5 | 27]) + struct.pack(">Q", value)


def encode_deterministic(obj: Any) -> bytes:
    """Encode ``obj`` as core deterministic CBOR: shortest heads and floats, definite lengths,
    map keys sorted by the bytewise order of their encodings (RFC 8949 §4.2.1)."""
    if isinstance(obj, Mapping):
        items = sorted((encode_deterministic(k), encode_deterministic(v)) for k, v in obj.items())
        for (a, _), (b, _) in itertools.pairwise(items):
            if a == b:
                raise WireError("duplicate map key in CBOR map")
        return _head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(obj, list | tuple):
        return _head(4, len(obj)) + b"".join(encode_deterministic(x) for x in obj)
    if isinstance(obj, cbor2.CBORTag):
        return _head(6, obj.tag) + encode_deterministic(obj.value)
    return bytes(cbor2.dumps(obj, canonical=True))


def decode_deterministic(data: bytes, what: str = "CBOR item") -> Any:
    """Decode ``data`` and insist it is exactly one item in deterministic encoding.

    Re-encoding and comparing rejects trailing bytes, indefinite lengths, non-shortest forms,
    unsorted and duplicate keys in one step, so two different byte strings can never carry
    the same meaning."""
    # a COSE_Sign1 (tag 18) is the one tag allowed, on the outermost item only
    top = COSE_SIGN1_TAG if data[:1] == b"\xd2" else None
    scan_cbor(data, what, max_depth=16, max_items=1_000_000, top_tag=top)
    try:
        obj = cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedMessage(f"{what} is not valid CBOR: {exc}") from None
    try:
        again = encode_deterministic(_thaw(obj))
    except (WireError, TypeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(f"{what} cannot be re-encoded: {exc}") from None
    if again != data:
        raise MalformedMessage(f"{what} is not deterministically encoded (RFC 8949 §4.2.1)")
    return _thaw(obj)


def _thaw(obj: Any) -> Any:
    """cbor2 6 returns immutable containers; give callers plain dicts and lists."""
    if isinstance(obj, Mapping):
        return {_thaw(k): _thaw(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_thaw(x) for x in obj]
    if isinstance(obj, cbor2.CBORTag):
        return cbor2.CBORTag(obj.tag, _thaw(obj.value))
    return obj


# --------------------------------------------------------------------------------------------
# COSE_Sign1 (RFC 9052 §4.2, §4.4)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sign1:
    """The four parts of a COSE_Sign1, with the protected header both raw and decoded."""

    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes
    signature: bytes
    #: parsed by :func:`_parse_exact`: a tagged COSE_Sign1 in exactly the deterministic form a
    #: fieldproof gateway signs (so :func:`decode_message` need not re-check its encoding)
    exact: bool = False

    @property
    def alg(self) -> Any:
        return self.protected.get(HEADER_ALG, self.unprotected.get(HEADER_ALG))

    @property
    def kid(self) -> bytes | None:
        kid = self.protected.get(HEADER_KID, self.unprotected.get(HEADER_KID))
        return kid if isinstance(kid, bytes) else None

    def to_be_signed(self, external_aad: bytes = b"") -> bytes:
        # RFC 9052 §4.4: with no protected attributes the Sig_structure carries a zero-length
        # bstr, even when the sender encoded the empty map as h'a0' (which §3 says to accept).
        protected = self.protected_bytes if self.protected else b""
        return sig_structure(protected, self.payload, external_aad)


#: the deterministic encoding of an array of four items and the text "Signature1"
_SIG1_PREFIX = b"\x84\x6aSignature1"


def sig_structure(protected_bytes: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The Sig_structure for a COSE_Sign1: ["Signature1", protected, external_aad, payload],
    deterministically encoded (built directly: it is on every verification's path)."""
    return b"".join(
        (
            _SIG1_PREFIX,
            _head(2, len(protected_bytes)),
            protected_bytes,
            _head(2, len(external_aad)),
            external_aad,
            _head(2, len(payload)),
            payload,
        )
    )


def parse_sign1(message: bytes, *, require_tag: bool = False) -> Sign1:
    """Split a COSE_Sign1 into its parts, checking every structural rule of RFC 9052."""
    if not isinstance(message, bytes | bytearray):
        raise MalformedMessage("message must be bytes")
    if len(message) > MAX_MESSAGE_BYTES:
        raise MalformedMessage(f"message is {len(message)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    try:
        obj = cbor2.loads(bytes(message))
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedMessage(f"message is not valid CBOR: {exc}") from None
    if isinstance(obj, cbor2.CBORTag):
        if obj.tag != COSE_SIGN1_TAG:
            raise MalformedMessage(f"CBOR tag {obj.tag} is not COSE_Sign1 (18)")
        obj = obj.value
    elif require_tag:
        raise MalformedMessage("COSE_Sign1 must be tagged (CBOR tag 18)")
    if not isinstance(obj, list | tuple) or len(obj) != 4:
        raise MalformedMessage("COSE_Sign1 must be an array of four items")
    protected_bytes, unprotected, payload, signature = obj
    if not isinstance(protected_bytes, bytes):
        raise MalformedMessage("protected header must be a byte string")
    if not isinstance(unprotected, Mapping):
        raise MalformedMessage("unprotected header must be a map")
    if not isinstance(payload, bytes):
        raise MalformedMessage("payload must be an embedded byte string")
    if not isinstance(signature, bytes):
        raise MalformedMessage("signature must be a byte string")
    if protected_bytes == b"":
        protected: dict[Any, Any] = {}
    else:
        try:
            decoded = cbor2.loads(protected_bytes)
        except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError) as exc:
            raise MalformedMessage(f"protected header is not valid CBOR: {exc}") from None
        if not isinstance(decoded, Mapping):
            raise MalformedMessage("protected header must encode a map")
        protected = dict(decoded)
    unprotected_d = dict(unprotected)
    duplicated = set(protected) & set(unprotected_d)
    if duplicated:
        raise MalformedMessage(f"header labels {sorted(map(str, duplicated))} in both buckets")
    return Sign1(protected_bytes, protected, unprotected_d, payload, signature)


_EC_CURVES: dict[int, tuple[ec.EllipticCurve, int]] = {
    65: (ec.SECP256R1(), 32),
    97: (ec.SECP384R1(), 48),
    133: (ec.SECP521R1(), 66),
}
_EC_HASHES: dict[int, hashes.HashAlgorithm] = {
    ALG_ES256: hashes.SHA256(),
    ALG_ES384: hashes.SHA384(),
    ALG_ES512: hashes.SHA512(),
}


def _verify_raw(alg: Any, public_key: bytes, signature: bytes, data: bytes) -> None:
    try:
        if alg == ALG_EDDSA:
            if len(public_key) == 32:
                try:
                    ed25519.verify(public_key, signature, data)
                except ed25519.InvalidEd25519Signature as exc:
                    raise BadSignature(str(exc)) from None
            elif len(public_key) == 57:
                Ed448PublicKey.from_public_bytes(public_key).verify(signature, data)
            else:
                raise BadSignature("EdDSA public key must be 32 (Ed25519) or 57 (Ed448) bytes")
        elif alg in _EC_HASHES:
            curve_and_size = _EC_CURVES.get(len(public_key))
            if curve_and_size is None:
                raise BadSignature("ECDSA public key must be an uncompressed SEC1 point")
            curve, size = curve_and_size
            if len(signature) != 2 * size:
                raise BadSignature("ECDSA signature has the wrong length for the key's curve")
            key = ec.EllipticCurvePublicKey.from_encoded_point(curve, public_key)
            der = encode_dss_signature(
                int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
            )
            key.verify(der, data, ec.ECDSA(_EC_HASHES[alg]))
        else:
            raise BadSignature(f"unsupported COSE algorithm {alg!r}")
    except InvalidSignature:
        raise BadSignature("signature does not verify with this key") from None
    except WireError:
        raise
    except ValueError as exc:
        raise BadSignature(f"public key is not usable: {exc}") from None


def verify_sign1(message: bytes, public_key: bytes, external_aad: bytes = b"") -> bytes:
    """Verify a COSE_Sign1 and return its payload; raise :class:`WireError` on any failure.

    Accepts EdDSA (Ed25519, Ed448) and ES256/384/512 (``public_key`` an uncompressed SEC1
    point). fieldproof's own messages are EdDSA with Ed25519; see :func:`decode_message`."""
    sign1 = parse_sign1(message)
    _verify_raw(sign1.alg, bytes(public_key), sign1.signature, sign1.to_be_signed(external_aad))
    return sign1.payload


def sign1(payload: bytes, private_key: Ed25519PrivateKey, kid: bytes) -> bytes:
    """Produce a tagged COSE_Sign1 over ``payload`` with alg EdDSA and ``kid`` protected."""
    protected_bytes = encode_deterministic({HEADER_ALG: ALG_EDDSA, HEADER_KID: kid})
    signature = private_key.sign(sig_structure(protected_bytes, payload))
    return encode_deterministic(
        cbor2.CBORTag(COSE_SIGN1_TAG, [protected_bytes, {}, payload, signature])
    )


# --------------------------------------------------------------------------------------------
# Payload: gateway id, sequence, boot counter and the SenML pack
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """One measured value: which sensor, which quantity, SenML unit, value, sample time (s).

    ``value`` is None when the sensor failed; ``missing_reason`` then says why."""

    sensor: str
    quantity: str
    unit: str
    value: float | None
    time: float
    missing_reason: str = ""

    @property
    def name(self) -> str:
        return f"{self.sensor}/{self.quantity}"


#: a reading as a plain tuple, in :class:`Reading`'s field order
PlainReading = tuple[str, str, str, float | None, float, str]
#: a payload as a plain tuple: gateway, seq, boot, readings
PlainPayload = tuple[str, int, int, tuple[PlainReading, ...]]


@dataclass(frozen=True, slots=True)
class Payload:
    """What a gateway signs: who, which message in its never-repeating sequence, what it read."""

    gateway: str
    seq: int
    boot: int
    readings: tuple[Reading, ...]

    def to_cbor(self) -> bytes:
        return encode_deterministic(self.to_obj())

    def to_obj(self) -> dict[str, Any]:
        if not self.readings:
            raise WireError("a message must carry at least one reading")
        base_time = min(r.time for r in self.readings)
        pack: list[dict[int, Any]] = []
        for i, r in enumerate(self.readings):
            rec: dict[int, Any] = {SENML_N: r.name}
            if i == 0:
                rec[SENML_BN] = base_name(self.gateway)
                rec[SENML_BT] = base_time
            if r.unit:
                rec[SENML_U] = r.unit
            if r.value is None:
                rec[SENML_VS] = MISSING_PREFIX + (r.missing_reason or "unknown")
            else:
                rec[SENML_V] = r.value
            offset = r.time - base_time
            if offset:
                rec[SENML_T] = offset
            pack.append(rec)
        return {
            "v": WIRE_VERSION,
            "gw": self.gateway,
            "seq": self.seq,
            "boot": self.boot,
            "e": pack,
        }


def base_name(gateway: str) -> str:
    return f"{SENML_BASE_PREFIX}{gateway}:"


def _check_name(name: str, what: str) -> None:
    if not name or len(name) > 128 or not set(name) <= _NAME_CHARS:
        raise MalformedMessage(
            f"{what} {name!r} is empty, too long or has characters SenML forbids"
        )


def scan_cbor(
    data: bytes,
    what: str,
    *,
    max_depth: int = 8,
    max_items: int = 20_000,
    top_tag: int | None = None,
) -> None:
    """Walk the item heads without building anything: exactly one well-formed item, definite
    lengths, no tags (except ``top_tag`` on the outermost item), bounded depth and item count.

    Run before cbor2 builds objects, so a few hundred hostile bytes can never make it allocate
    megabytes: CBOR's string references (tag 25/256) and shared values (tag 28/29) expand
    exponentially, and deep nesting costs recursion."""
    pos, n, items = 0, len(data), 0
    if top_tag is not None:
        head = _head(6, top_tag)
        if not data.startswith(head):
            raise MalformedMessage(f"{what} must start with CBOR tag {top_tag}")
        pos = len(head)
    remaining = [1]  # items still to read at each open level
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        if pos >= n:
            raise MalformedMessage(f"{what} is truncated")
        initial = data[pos]
        pos += 1
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            value = info
        elif info <= 27:
            size = 1 << (info - 24)
            if pos + size > n:
                raise MalformedMessage(f"{what} is truncated")
            value = int.from_bytes(data[pos : pos + size], "big")
            pos += size
        else:
            raise MalformedMessage(f"{what} uses an indefinite length or a reserved encoding")
        items += 1
        if items > max_items:
            raise MalformedMessage(f"{what} has more than {max_items} CBOR items")
        if major in (2, 3):
            if value > n - pos:
                raise MalformedMessage(f"{what} is truncated")
            pos += value
        elif major in (4, 5):
            count = value * (2 if major == 5 else 1)
            if count > n - pos:
                raise MalformedMessage(f"{what} announces more items than it has bytes")
            remaining.append(count)
            if len(remaining) > max_depth + 1:
                raise MalformedMessage(f"{what} is nested deeper than {max_depth}")
        elif major == 6:
            raise MalformedMessage(f"{what} contains a CBOR tag ({value}); none is allowed")
        elif major == 7 and info == 24 and value < 32:
            raise MalformedMessage(f"{what} has a badly encoded simple value")
    if pos != n:
        raise MalformedMessage(f"{what} has {n - pos} bytes after its CBOR item")


def _decode_fixed_schema(data: bytes, what: str) -> Any:
    """Strict decode for structures whose map keys are all small integers (-24..23) or short
    text (< 24 bytes), as the payload and COSE headers are once their schema is checked.

    For such keys cbor2's canonical order (length first, RFC 7049) equals RFC 8949's bytewise
    order: every key's first byte encodes its major type and length. So re-encoding with cbor2's
    C encoder and comparing is the deterministic-encoding check at a fraction of the cost of
    :func:`decode_deterministic`. The caller MUST then reject any other key (the schema check),
    which closes the one gap (long keys, where the two orders differ)."""
    scan_cbor(data, what, top_tag=COSE_SIGN1_TAG if what == "message" else None)
    try:
        obj = cbor2.loads(data)
        again = cbor2.dumps(obj, canonical=True)
    except (cbor2.CBORError, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise MalformedMessage(f"{what} is not valid CBOR: {exc}") from None
    if again != data:
        raise MalformedMessage(f"{what} is not deterministically encoded (RFC 8949 §4.2.1)")
    return obj


def payload_from_cbor(data: bytes) -> Payload:
    """Parse and validate a payload (strictly deterministic CBOR, SenML rules, sane bounds)."""
    gateway, seq, boot, readings = plain_payload_from_cbor(data)
    return Payload(gateway, seq, boot, tuple(Reading(*r) for r in readings))


def plain_payload_from_cbor(data: bytes) -> PlainPayload:
    """:func:`payload_from_cbor` as plain tuples: for callers that handle many messages and
    never need the objects (the verifier)."""
    fast = _payload_exact(data)
    return fast if fast is not None else _payload_general_plain(data)


def _payload_general_plain(data: bytes) -> PlainPayload:
    """:func:`_payload_general` as plain tuples (what the exact reader must agree with)."""
    p = _payload_general(data)
    return p.gateway, p.seq, p.boot, tuple(
        (r.sensor, r.quantity, r.unit, r.value, r.time, r.missing_reason) for r in p.readings
    )


def _payload_general(data: bytes) -> Payload:
    """:func:`payload_from_cbor` for any bytes: decode, then check every rule, saying which
    one failed. The reference the exact-form reader must agree with."""
    obj = _decode_fixed_schema(data, "payload")
    if not isinstance(obj, dict) or set(obj) != {"v", "gw", "seq", "boot", "e"}:
        raise MalformedMessage("payload must be a map with exactly v, gw, seq, boot, e")
    if type(obj["v"]) is not int or obj["v"] != WIRE_VERSION:  # not true, not 1.0: one encoding
        raise MalformedMessage(f"payload version {obj['v']!r} is not {WIRE_VERSION}")
    gateway, seq, boot, pack = obj["gw"], obj["seq"], obj["boot"], obj["e"]
    if not isinstance(gateway, str):
        raise MalformedMessage("gw must be a text string")
    _check_name(gateway, "gateway id")
    for label, value in (("seq", seq), ("boot", boot)):
        if type(value) is not int or not 0 <= value <= MAX_SEQ:
            raise MalformedMessage(f"{label} must be an unsigned integer below 2^63")
    if not isinstance(pack, list) or not 1 <= len(pack) <= MAX_READINGS_PER_MESSAGE:
        raise MalformedMessage(f"e must be a SenML pack of 1..{MAX_READINGS_PER_MESSAGE} records")
    readings: list[Reading] = []
    base_time: float | None = None
    for i, rec in enumerate(pack):
        if not isinstance(rec, dict):
            raise MalformedMessage(f"SenML record {i} is not a map")
        allowed = {SENML_N, SENML_U, SENML_V, SENML_VS, SENML_T}
        if i == 0:
            allowed |= {SENML_BN, SENML_BT}
            if rec.get(SENML_BN) != base_name(gateway):
                raise MalformedMessage("SenML base name does not match the gateway id")
            bt = rec.get(SENML_BT)
            if not isinstance(bt, int | float) or isinstance(bt, bool) or not math.isfinite(bt):
                raise MalformedMessage("SenML base time must be a finite number")
            base_time = float(bt)
        extra = set(rec) - allowed
        if extra:
            raise MalformedMessage(f"SenML record {i} has labels fieldproof does not use: {extra}")
        name, unit = rec.get(SENML_N), rec.get(SENML_U, "")
        if not isinstance(name, str) or name.count("/") != 1:
            raise MalformedMessage(f"SenML record {i} name must be '<sensor>/<quantity>'")
        _check_name(name, "SenML name")
        if not isinstance(unit, str) or len(unit) > 16 or not set(unit) <= _UNIT_CHARS:
            raise MalformedMessage(
                f"SenML record {i} unit must be up to 16 of A-Z a-z 0-9 % / . _ -"
            )
        offset = rec.get(SENML_T, 0)
        if type(offset) not in (int, float) or not math.isfinite(offset):
            raise MalformedMessage(f"SenML record {i} time must be a finite number")
        has_v, has_vs = SENML_V in rec, SENML_VS in rec
        if has_v == has_vs:
            raise MalformedMessage(f"SenML record {i} must carry exactly one of v or vs")
        sensor, quantity = name.split("/")
        assert base_time is not None
        if not 0.0 <= base_time + offset <= MAX_SAMPLE_TIME:
            raise MalformedMessage(
                f"SenML record {i} sample time {base_time + offset!r} is outside 1970..2255"
            )
        if has_v:
            value = rec[SENML_V]
            if type(value) not in (int, float) or not math.isfinite(value):
                raise MalformedMessage(f"SenML record {i} value must be a finite number")
            readings.append(Reading(sensor, quantity, unit, float(value), base_time + offset))
        else:
            text = rec[SENML_VS]
            if not isinstance(text, str) or not text.startswith(MISSING_PREFIX) or len(text) > 200:
                raise MalformedMessage(f"SenML record {i} vs must be 'missing:<reason>'")
            readings.append(
                Reading(
                    sensor, quantity, unit, None, base_time + offset, text[len(MISSING_PREFIX) :]
                )
            )
    return Payload(gateway, seq, boot, tuple(readings))


# --------------------------------------------------------------------------------------------
# The exact-form payload reader
# --------------------------------------------------------------------------------------------
#
# Every gateway encodes its payload the same way, so most payloads can be read in one pass over
# the bytes: no scan, no CBOR decoder building objects, no canonical re-encode to compare (those
# cost ~3x the pass). The reader accepts only byte strings that the general path
# (:func:`_payload_general`) accepts, and returns what it returns; for anything else it returns
# None and the general path decides, and says what is wrong. Proven in
# tests/fieldproof/test_wire_properties.py on generated payloads, their mutations and every float
# form.

#: SenML labels as their one-byte encodings, in deterministic order: n u v vs t, then bn bt
_LABELS_FIRST = frozenset((0x00, 0x01, 0x02, 0x03, 0x06, 0x21, 0x22))
_LABELS = frozenset((0x00, 0x01, 0x02, 0x03, 0x06))
_HALF, _SINGLE, _DOUBLE = struct.Struct(">e"), struct.Struct(">f"), struct.Struct(">d")
#: float head -> (its width, the next narrower width, which must not hold the value exactly)
_FLOAT_FORMS = {0xF9: (_HALF, None), 0xFA: (_SINGLE, _HALF), 0xFB: (_DOUBLE, _SINGLE)}
#: validated SenML names (-> sensor, quantity), units and gateway ids by their encoded bytes:
#: a handful of distinct ones in real traffic, capped so hostile traffic cannot grow them. A
#: cached string is the same object every time, so readings share their names.
_NAMES: dict[bytes, tuple[str, str] | None] = {}
_UNITS: dict[bytes, str | None] = {}
_GATEWAYS: dict[bytes, str | None] = {}
_CACHE_CAP = 4096


class _NotExact(Exception):
    """Internal: the bytes are not in the exact form (the general path takes over)."""


def _text_at(data: bytes, pos: int) -> tuple[bytes, int]:
    """A text string's raw bytes at ``pos`` (shortest head only) and the position after it."""
    initial = data[pos]
    if 0x60 <= initial <= 0x77:
        start, length = pos + 1, initial - 0x60
    elif initial == 0x78 and data[pos + 1] >= 24:
        start, length = pos + 2, data[pos + 1]
    elif initial == 0x79 and (length := int.from_bytes(data[pos + 1 : pos + 3], "big")) >= 256:
        start = pos + 3
    else:
        raise _NotExact
    end = start + length
    if end > len(data):
        raise _NotExact
    return data[start:end], end


def _number_at(data: bytes, pos: int) -> tuple[int | float, int]:
    """A finite number at ``pos`` in deterministic form: an integer in -24..23, or a float in
    the shortest width that holds it exactly (RFC 8949 §4.2.1, what cbor2's canonical encoder
    writes, so what the general path's re-encode compares with)."""
    initial = data[pos]
    if initial < 0x18:
        return initial, pos + 1
    if 0x20 <= initial < 0x38:
        return 0x1F - initial, pos + 1
    form = _FLOAT_FORMS.get(initial)
    if form is None:
        raise _NotExact
    width, narrower = form
    try:
        value: float = width.unpack_from(data, pos + 1)[0]
        if math.isfinite(value) and not (narrower is not None and _holds(narrower, value)):
            return value, pos + 1 + width.size
    except struct.error:  # truncated
        pass
    raise _NotExact


def _holds(width: struct.Struct, value: float) -> bool:
    try:
        return bool(width.unpack(width.pack(value))[0] == value)
    except OverflowError:
        return False


def _uint_at(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned integer up to :data:`MAX_SEQ` in its shortest head."""
    initial = data[pos]
    if initial < 0x18:
        return initial, pos + 1
    if not 0x18 <= initial <= 0x1B:
        raise _NotExact
    size = 1 << (initial - 0x18)
    end = pos + 1 + size
    value = int.from_bytes(data[pos + 1 : end], "big")
    if end > len(data) or value < (24 if size == 1 else 1 << (4 * size)) or value > MAX_SEQ:
        raise _NotExact
    return value, end


def _cached(cache: dict[bytes, Any], raw: bytes, check: Any) -> Any:
    """``check`` of the text, remembered. Every valid name, unit and gateway id is ASCII of at
    most 128 bytes, so anything longer is refused without being kept: the cache holds at most
    ``_CACHE_CAP`` short keys whatever the traffic."""
    if len(raw) > 128:
        return None
    if len(cache) >= _CACHE_CAP:
        cache.clear()
    value = cache[raw] = check(raw.decode())
    return value


def _check_senml_name(name: str) -> tuple[str, str] | None:
    if 0 < len(name) <= 128 and set(name) <= _NAME_CHARS and name.count("/") == 1:
        sensor, _, quantity = name.partition("/")
        return sensor, quantity
    return None


def _check_unit(unit: str) -> str | None:
    return unit if len(unit) <= 16 and set(unit) <= _UNIT_CHARS else None


def _check_gateway(gw: str) -> str | None:
    return gw if 0 < len(gw) <= 128 and set(gw) <= _NAME_CHARS else None


def _payload_exact(data: bytes) -> PlainPayload | None:
    """The payload in ``data`` if it is in the form gateways write and valid, else None (for
    the general path to decide and explain)."""
    try:
        return _read_payload_exact(data)
    except (_NotExact, IndexError, UnicodeDecodeError):
        return None


def _read_payload_exact(data: bytes) -> PlainPayload | None:
    # {"e": [records], "v": 1, "gw": text, "seq": uint, "boot": uint}, in deterministic order;
    # IndexError from reading past the end means "not exact" like _NotExact does
    if data[:3] != b"\xa5\x61e":
        return None
    initial = data[3]
    if 0x81 <= initial <= 0x97:
        count, pos = initial - 0x80, 4
    elif initial == 0x98 and data[4] >= 24:
        count, pos = data[4], 5
    elif initial == 0x99 and 256 <= (count := int.from_bytes(data[4:6], "big")) <= (
        MAX_READINGS_PER_MESSAGE
    ):
        pos = 6
    else:
        return None
    names, units, text_at, number_at = _NAMES, _UNITS, _text_at, _number_at
    readings: list[PlainReading] = []
    bn = b""
    base_time = 0.0
    for i in range(count):
        initial = data[pos]
        if not 0xA2 <= initial <= 0xA7:  # n and v or vs, at most n u v vs t bn bt
            return None
        pos += 1
        labels = _LABELS if i else _LABELS_FIRST
        name: tuple[str, str] | None = None
        unit = missing = ""
        value: int | float | None = None
        offset: int | float = 0
        last = -1
        have_value = False
        for _ in range(initial - 0xA0):
            label = data[pos]
            if label <= last or label not in labels:
                return None
            last = label
            if label == 0x00:
                head = data[pos + 1]  # names are short: their text head inline (a sixth faster)
                if 0x60 <= head <= 0x77:
                    raw, pos = data[pos + 2 : pos + head - 0x5E], pos + head - 0x5E
                elif head == 0x78 and data[pos + 2] >= 24:
                    raw, pos = data[pos + 3 : pos + 3 + data[pos + 2]], pos + 3 + data[pos + 2]
                else:
                    raw, pos = text_at(data, pos + 1)
                name = names.get(raw) or _cached(names, raw, _check_senml_name)
                if name is None:
                    return None
            elif label == 0x01:
                head = data[pos + 1]
                if 0x60 <= head <= 0x77:
                    raw, pos = data[pos + 2 : pos + head - 0x5E], pos + head - 0x5E
                else:
                    raw, pos = text_at(data, pos + 1)
                got = units.get(raw)
                unit = got if got is not None else _cached(units, raw, _check_unit)
                if unit is None:
                    return None
            elif label == 0x02:
                value, pos = number_at(data, pos + 1)
                have_value = True
            elif label == 0x03:
                if have_value:
                    return None
                raw, pos = text_at(data, pos + 1)
                text = raw.decode()
                if not text.startswith(MISSING_PREFIX) or len(text) > 200:
                    return None
                missing, have_value = text[len(MISSING_PREFIX) :], True
            elif label == 0x06:
                offset, pos = number_at(data, pos + 1)
            elif label == 0x21:
                bn, pos = text_at(data, pos + 1)
            else:
                bt, pos = number_at(data, pos + 1)
                base_time = float(bt)
        if name is None or not have_value or (i == 0 and last != 0x22):
            return None
        t = base_time + offset
        if not 0.0 <= t <= MAX_SAMPLE_TIME:
            return None
        readings.append(
            (name[0], name[1], unit, None if value is None else float(value), t, missing)
        )
    if data[pos : pos + 6] != b"\x61v\x01\x62gw":
        return None
    raw_gw, pos = text_at(data, pos + 6)
    if data[pos : pos + 4] != b"\x63seq":
        return None
    seq, pos = _uint_at(data, pos + 4)
    if data[pos : pos + 5] != b"\x64boot":
        return None
    boot, pos = _uint_at(data, pos + 5)
    if pos != len(data):
        return None
    got_gw = _GATEWAYS.get(raw_gw)
    gateway = got_gw if got_gw is not None else _cached(_GATEWAYS, raw_gw, _check_gateway)
    if gateway is None or bn != b"urn:dev:fp:" + raw_gw + b":":
        return None
    return gateway, seq, boot, tuple(readings)


# --------------------------------------------------------------------------------------------
# Whole messages
# --------------------------------------------------------------------------------------------


def gateway_id_for(public_key: bytes) -> str:
    """A gateway's id: ``gw-`` and the first 8 bytes of SHA-256 of its Ed25519 public key."""
    return "gw-" + hashlib.sha256(public_key).digest()[:8].hex()


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def encode_message(payload: Payload, private_key: Ed25519PrivateKey) -> bytes:
    """Sign a payload as the gateway it names."""
    return sign1(payload.to_cbor(), private_key, payload.gateway.encode())


def _bstr_at(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """The byte string whose shortest-form head starts at ``pos``, and the position after it;
    None if there is none there (another type, a longer head than needed, past the end)."""
    if pos >= len(data):
        return None
    initial = data[pos]
    if initial >> 5 != 2:
        return None
    info = initial & 0x1F
    if info < 24:
        length, start = info, pos + 1
    elif info == 24:
        length, start = data[pos + 1] if pos + 1 < len(data) else 0, pos + 2
        if length < 24:
            return None
    elif info == 25:
        length, start = int.from_bytes(data[pos + 1 : pos + 3], "big"), pos + 3
        if length < 256 or start > len(data):
            return None
    else:  # a message is far below 4 GiB; longer heads are never shortest here
        return None
    end = start + length
    if end > len(data):
        return None
    return data[start:end], end


#: tag 18, array of 4 — and the protected header map {1: -8 (EdDSA), 4: kid}, in that order
_EXACT_START = b"\xd2\x84"
_EXACT_PROTECTED = b"\xa2\x01\x27\x04"


def _parse_exact(message: bytes) -> Sign1 | None:
    """Parse a message only if it is byte for byte the form a gateway produces:
    ``18([<< {1: -8, 4: kid} >>, {}, payload, signature(64)]) `` in deterministic CBOR. No
    CBOR decoder runs. Anything else returns None and takes the general path
    (:func:`parse_sign1` and the checks in :func:`decode_message`), which accepts every message
    this does — with the same parts — and says precisely what is wrong with the rest."""
    if not message.startswith(_EXACT_START):
        return None
    got = _bstr_at(message, 2)
    if got is None:
        return None
    protected_bytes, pos = got
    if message[pos : pos + 1] != b"\xa0":
        return None
    got = _bstr_at(message, pos + 1)
    if got is None:
        return None
    payload, pos = got
    if message[pos : pos + 2] != b"\x58\x40" or len(message) != pos + 66:
        return None
    if not protected_bytes.startswith(_EXACT_PROTECTED):
        return None
    got = _bstr_at(protected_bytes, 4)
    if got is None or got[1] != len(protected_bytes):
        return None
    kid = got[0]
    return Sign1(
        bytes(protected_bytes),
        {HEADER_ALG: ALG_EDDSA, HEADER_KID: bytes(kid)},
        {},
        bytes(payload),
        bytes(message[pos + 2 :]),
        exact=True,
    )


def _open_exact(message: Any) -> Sign1 | None:
    if isinstance(message, bytes | bytearray) and len(message) <= MAX_MESSAGE_BYTES:
        return _parse_exact(bytes(message))
    return None


def open_message(message: bytes) -> tuple[str, Sign1]:
    """The gateway id a message claims (unverified), so the right key can be looked up, and
    the parsed message, so :func:`decode_message` need not parse it again."""
    parsed = _open_exact(message) or parse_sign1(message, require_tag=True)
    kid = parsed.protected.get(HEADER_KID)
    if not isinstance(kid, bytes):
        raise MalformedMessage("protected header has no kid")
    try:
        return kid.decode("ascii"), parsed
    except UnicodeDecodeError:
        raise MalformedMessage("kid is not an ASCII gateway id") from None


def decode_message_plain(
    message: bytes, public_key: bytes, parsed: Sign1 | None = None
) -> PlainPayload:
    """Verify a fieldproof message with the gateway's Ed25519 key and return its payload.

    Stricter than :func:`verify_sign1`: tag 18, EdDSA, kid in the protected header, the exact
    deterministic encoding, and a payload whose gateway id equals the kid. ``parsed`` is
    :func:`open_message`'s parse of these same bytes, when the caller has it. The payload comes
    as plain tuples (:func:`decode_message` gives objects)."""
    if parsed is None:
        parsed = _open_exact(message) or parse_sign1(message, require_tag=True)
    if not parsed.exact:
        expected_protected = set(parsed.protected)
        if parsed.protected.get(HEADER_ALG) != ALG_EDDSA or expected_protected != {
            HEADER_ALG,
            HEADER_KID,
        }:
            raise MalformedMessage("protected header must hold exactly alg EdDSA (-8) and kid")
        if parsed.unprotected:
            raise MalformedMessage("unprotected header must be empty")
        kid = parsed.protected[HEADER_KID]
        if not isinstance(kid, bytes) or parsed.protected_bytes != (
            _EXACT_PROTECTED + _head(2, len(kid)) + kid
        ):
            raise MalformedMessage("protected header is not deterministically encoded")
        # headers checked above hold only keys 1 and 4, so the fast check is exact here
        _decode_fixed_schema(bytes(message), "message")
    if len(public_key) != 32:
        raise BadSignature("gateway keys are 32-byte Ed25519 public keys")
    _verify_raw(ALG_EDDSA, public_key, parsed.signature, parsed.to_be_signed())
    payload = plain_payload_from_cbor(parsed.payload)
    if payload[0].encode() != parsed.protected[HEADER_KID]:
        raise MalformedMessage("payload gateway id does not match the kid")
    return payload


def decode_message(message: bytes, public_key: bytes, parsed: Sign1 | None = None) -> Payload:
    """Verify a fieldproof message with the gateway's Ed25519 key and return its payload (see
    :func:`decode_message_plain` for every check made)."""
    gateway, seq, boot, readings = decode_message_plain(message, public_key, parsed)
    return Payload(gateway, seq, boot, tuple(Reading(*r) for r in readings))


# --------------------------------------------------------------------------------------------
# Receipts: collector → gateway "I have these sequence numbers durably"
# --------------------------------------------------------------------------------------------

MAX_RECEIPT_RANGES = 10_000
#: the longest receipt: MAX_RECEIPT_RANGES ranges of two 19-digit numbers, with room to spare
MAX_RECEIPT_BYTES = 512 * 1024


def encode_receipt(collector: str, seqs: list[int]) -> bytes:
    """A receipt as compact JSON: ``{"c": collector id, "s": [[first, last], ...]}``."""
    ranges: list[list[int]] = []
    for seq in sorted(set(seqs)):
        if ranges and seq == ranges[-1][1] + 1:
            ranges[-1][1] = seq
        else:
            ranges.append([seq, seq])
    return json.dumps({"c": collector, "s": ranges}, separators=(",", ":")).encode()


def decode_receipt(data: bytes, max_seqs: int = 1_000_000) -> tuple[str, list[int]]:
    """Parse a receipt; raise :class:`MalformedMessage` on anything unexpected."""
    if len(data) > MAX_RECEIPT_BYTES:
        raise MalformedMessage(f"receipt is {len(data)} bytes; the limit is {MAX_RECEIPT_BYTES}")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):  # deep nesting: "[[[[..."
        raise MalformedMessage("receipt is not JSON") from None
    if (
        not isinstance(obj, dict)
        or not isinstance(obj.get("c"), str)
        or not isinstance(obj.get("s"), list)
    ):
        raise MalformedMessage('receipt must be {"c": str, "s": [[first, last], ...]}')
    if len(obj["s"]) > MAX_RECEIPT_RANGES:
        raise MalformedMessage("receipt has too many ranges")
    seqs: list[int] = []
    for item in obj["s"]:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(type(x) is int and 0 <= x <= MAX_SEQ for x in item)
            or item[0] > item[1]
            or len(seqs) + item[1] - item[0] + 1 > max_seqs
        ):
            raise MalformedMessage("receipt range must be [first, last] with first <= last")
        seqs.extend(range(item[0], item[1] + 1))
    return obj["c"], seqs
