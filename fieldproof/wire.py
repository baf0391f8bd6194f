"""The fieldproof wire format, shared by gateway, collector and verifier.

A message is a tagged COSE_Sign1 (RFC 9052) signed with the gateway's Ed25519 key (alg EdDSA,
``kid`` = gateway id, both in the protected header). Its payload is a deterministically encoded
CBOR map (RFC 8949 §4.2.1)::

    {"v": 1, "gw": <gateway id>, "seq": <uint>, "boot": <uint>, "e": <SenML pack>}

The SenML pack (RFC 8428, CBOR labels) carries the base name ``urn:dev:fp:<gateway>:``, the base
time (earliest sample, seconds since the epoch) and one record per reading named
``<sensor>/<quantity>``. A reading a sensor failed to produce is carried as a record with the
string value label ``vs`` = ``"missing:<reason>"`` instead of ``v``, so a gap is evidence too.

The full byte-level description lives in docs/wire-format.md. The code lives in
:mod:`fieldproof.formats` (cbor, cose, payload, message, receipt); this module is the one
name every room imports them by.
"""

from fieldproof.formats.cbor import (
    COSE_SIGN1_TAG,
    MalformedMessage,
    WireError,
    decode_deterministic,
    encode_deterministic,
    scan_cbor,
)
from fieldproof.formats.cose import (
    ALG_EDDSA,
    ALG_ES256,
    ALG_ES384,
    ALG_ES512,
    HEADER_ALG,
    HEADER_CONTENT_TYPE,
    HEADER_KID,
    MAX_MESSAGE_BYTES,
    BadSignature,
    Sign1,
    parse_sign1,
    sig_structure,
    sign1,
    verify_sign1,
)
from fieldproof.formats.message import (
    decode_message,
    decode_message_plain,
    encode_message,
    gateway_id_for,
    open_message,
    public_key_bytes,
)
from fieldproof.formats.payload import (
    MAX_READINGS_PER_MESSAGE,
    MAX_SAMPLE_TIME,
    MAX_SEQ,
    MISSING_PREFIX,
    SENML_BASE_PREFIX,
    SENML_BN,
    SENML_BT,
    SENML_N,
    SENML_T,
    SENML_U,
    SENML_V,
    SENML_VS,
    WIRE_VERSION,
    Payload,
    PlainPayload,
    PlainReading,
    Reading,
    base_name,
    payload_from_cbor,
    plain_payload_from_cbor,
)
from fieldproof.formats.receipt import (
    MAX_RECEIPT_BYTES,
    MAX_RECEIPT_RANGES,
    decode_receipt,
    encode_receipt,
)

__all__ = [
    "ALG_EDDSA",
    "ALG_ES256",
    "ALG_ES384",
    "ALG_ES512",
    "COSE_SIGN1_TAG",
    "HEADER_ALG",
    "HEADER_CONTENT_TYPE",
    "HEADER_KID",
    "MAX_MESSAGE_BYTES",
    "MAX_READINGS_PER_MESSAGE",
    "MAX_RECEIPT_BYTES",
    "MAX_RECEIPT_RANGES",
    "MAX_SAMPLE_TIME",
    "MAX_SEQ",
    "MISSING_PREFIX",
    "SENML_BASE_PREFIX",
    "SENML_BN",
    "SENML_BT",
    "SENML_N",
    "SENML_T",
    "SENML_U",
    "SENML_V",
    "SENML_VS",
    "WIRE_VERSION",
    "BadSignature",
    "MalformedMessage",
    "Payload",
    "PlainPayload",
    "PlainReading",
    "Reading",
    "Sign1",
    "WireError",
    "base_name",
    "decode_deterministic",
    "decode_message",
    "decode_message_plain",
    "decode_receipt",
    "encode_deterministic",
    "encode_message",
    "encode_receipt",
    "gateway_id_for",
    "open_message",
    "parse_sign1",
    "payload_from_cbor",
    "plain_payload_from_cbor",
    "public_key_bytes",
    "scan_cbor",
    "sig_structure",
    "sign1",
    "verify_sign1",
]
