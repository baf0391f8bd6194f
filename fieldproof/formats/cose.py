"""COSE_Sign1 (RFC 9052 §4.2, §4.4): tagged, alg EdDSA (-8) with Ed25519, ``kid`` in the
protected header. Verification goes through libsodium (:mod:`fieldproof.ed25519`)."""

from __future__ import annotations

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
from fieldproof.formats.cbor import (
    COSE_SIGN1_TAG,
    MalformedMessage,
    WireError,
    _head,
    encode_deterministic,
)
from fieldproof.formats.tiles import MAX_ENTRY_BYTES

HEADER_ALG = 1


HEADER_CONTENT_TYPE = 3


HEADER_KID = 4


ALG_EDDSA = -8


ALG_ES256 = -7


ALG_ES384 = -35


ALG_ES512 = -36


#: Largest message the codec reads or a gateway signs (65,535 bytes; a 10-reading message is
#: about 400): an accepted message is logged as its exact bytes, and a C2SP tlog-tiles entry
#: bundle gives an entry a 16-bit length, so a longer message could never be published.
MAX_MESSAGE_BYTES = MAX_ENTRY_BYTES


class BadSignature(WireError):
    """The structure is fine but the signature does not verify with the given key."""


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
