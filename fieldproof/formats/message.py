"""Whole messages: a COSE_Sign1 over a payload, the gateway id derived from its key, and the
collector and verifier hot path (one parse, the exact form first)."""

from __future__ import annotations

import hashlib
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof.formats.cbor import MalformedMessage, _decode_fixed_schema, _head
from fieldproof.formats.cose import (
    ALG_EDDSA,
    HEADER_ALG,
    HEADER_KID,
    MAX_MESSAGE_BYTES,
    BadSignature,
    Sign1,
    _verify_raw,
    parse_sign1,
    sign1,
)
from fieldproof.formats.payload import Payload, PlainPayload, Reading, plain_payload_from_cbor


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
