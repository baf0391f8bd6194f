"""C2SP tlog-cosignature v1 (Ed25519): a witness's statement that it checked a checkpoint.

A cosignature is a signed-note signature line on the checkpoint::

    — <witness name> base64(key ID (4) ‖ timestamp (8, big-endian) ‖ Ed25519 signature (64))

* key ID = ``SHA-256(name ‖ 0x0A ‖ 0x04 ‖ 32-byte public key)[:4]`` (type byte 0x04, not the
  0x01 of a log's own signature, so one key can never be mistaken for the other);
* the signed message is ``"cosignature/v1\\ntime <timestamp>\\n"`` followed by the whole
  checkpoint body (the note text, up to and including its last newline);
* a witness publishes its key as a vkey ``name+hexid+base64(0x04 ‖ public key)``.

:class:`CosignatureVerifier` satisfies :class:`fieldproof.formats.note.Verifier`, so a
checkpoint's cosignatures are checked by :func:`~fieldproof.formats.note.open_note` like any other
signature. Everything raising here raises :class:`CosignatureError` (a ``FormatError``)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fieldproof.errors import FormatError
from fieldproof.formats.note import NoteVerifierKey, check_key_name

__all__ = [
    "ALG_COSIGNATURE_V1",
    "COSIGNATURE_SIZE",
    "Cosignature",
    "CosignatureError",
    "CosignatureVerifier",
    "cosignature_key_id",
    "cosigned_message",
    "parse_cosignature_line",
    "verify_cosignature_line",
]

ALG_COSIGNATURE_V1 = 0x04
"""Signature type byte of Ed25519 cosignature/v1 keys."""

COSIGNATURE_SIZE = 4 + 8 + 64
"""Decoded bytes of a v1 cosignature: key ID, timestamp, Ed25519 signature."""

MAX_TIMESTAMP = (1 << 63) - 1

_SIG_PREFIX = "\u2014 "  # em dash, space
_MAX_LINE = 512  # a v1 line is ~110 bytes plus the name; anything longer is not one


class CosignatureError(FormatError):
    """A cosignature or cosigner key is malformed or does not verify."""


def cosignature_key_id(name: str, public_key: bytes) -> int:
    """``SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4]`` as a big-endian integer."""
    digest = hashlib.sha256(
        name.encode() + b"\n" + bytes([ALG_COSIGNATURE_V1]) + public_key
    ).digest()
    return int.from_bytes(digest[:4], "big")


def cosigned_message(timestamp: int, body: bytes) -> bytes:
    """The bytes a v1 cosignature signs: header, time line, then the checkpoint body."""
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise CosignatureError("cosignature timestamp must be an integer")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature timestamp {timestamp} is out of range")
    if not isinstance(body, bytes) or not body.endswith(b"\n"):
        raise CosignatureError("the cosigned checkpoint body must be bytes ending in newline")
    return b"cosignature/v1\ntime %d\n" % timestamp + body


def _b64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CosignatureError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise CosignatureError(f"{what} is not canonical base64")
    return raw


class CosignatureVerifier(NoteVerifierKey):
    """A witness's Ed25519 cosignature/v1 key, usually from its vkey string.

    As a note ``Verifier``, ``verify(text, sig)`` takes the note text and the decoded signature
    without its key ID (timestamp ‖ Ed25519 signature)."""

    ALGORITHM = ALG_COSIGNATURE_V1

    def __init__(self, name: str, public_key: bytes) -> None:
        try:
            self._name = check_key_name(name)
        except FormatError as exc:
            raise CosignatureError(f"witness name: {exc}") from None
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise CosignatureError("a witness's Ed25519 public key must be 32 bytes")
        self._pub = public_key
        try:
            self._key = Ed25519PublicKey.from_public_bytes(public_key)
        except ValueError:
            raise CosignatureError("not an Ed25519 public key") from None
        self._key_id = cosignature_key_id(name, public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``name+hexid+base64(0x04 ‖ pub)``; the key ID must match name and key."""
        if not isinstance(vkey, str) or len(vkey) > 1024:
            raise CosignatureError("witness vkey must be a string of at most 1024 characters")
        parts = vkey.split("+", 2)
        if len(parts) != 3:
            raise CosignatureError("witness vkey must look like name+hexkeyid+base64key")
        name, hex_id, b64 = parts
        if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
            raise CosignatureError(f"witness vkey key ID {hex_id!r} must be 8 lowercase hex digits")
        raw = _b64(b64, "witness vkey key material")
        if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
            raise CosignatureError(
                "witness vkey is not an Ed25519 cosignature/v1 key (want type byte 0x04 and 32 "
                f"key bytes, got {len(raw)} bytes starting {raw[:1].hex() or 'empty'})"
            )
        v = cls(name, raw[1:])
        if v.key_id != int(hex_id, 16):
            raise CosignatureError(
                f"witness vkey says key ID {hex_id} but its name and key give {v.key_id:08x}"
            )
        return v

    def verify(self, message: bytes, signature: bytes) -> bool:
        """``message`` is the checkpoint body, ``signature`` timestamp ‖ Ed25519 signature."""
        if not isinstance(signature, bytes) or len(signature) != COSIGNATURE_SIZE - 4:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        try:
            signed = cosigned_message(timestamp, message)
            self._key.verify(signature[8:], signed)
        except (CosignatureError, InvalidSignature):
            return False
        return True


@dataclass(frozen=True)
class Cosignature:
    """One parsed v1 cosignature line."""

    name: str
    key_id: int
    timestamp: int
    signature: bytes
    line: str
    """The line as it appeared, without its newline."""


def parse_cosignature_line(line: str) -> Cosignature:
    """Parse ``— <name> <base64(key ID ‖ timestamp ‖ signature)>`` (no newline)."""
    if not isinstance(line, str) or len(line) > _MAX_LINE:
        raise CosignatureError(f"a cosignature line is a string of at most {_MAX_LINE} characters")
    if not line.startswith(_SIG_PREFIX):
        raise CosignatureError("a cosignature line starts with an em dash and a space")
    name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    if not sep:
        raise CosignatureError("a cosignature line has a space between name and signature")
    try:
        check_key_name(name)
    except FormatError as exc:
        raise CosignatureError(f"cosignature name: {exc}") from None
    raw = _b64(b64, "cosignature")
    if len(raw) != COSIGNATURE_SIZE:
        raise CosignatureError(f"a v1 cosignature is {COSIGNATURE_SIZE} bytes, this one {len(raw)}")
    timestamp = int.from_bytes(raw[4:12], "big")
    if timestamp > MAX_TIMESTAMP:
        raise CosignatureError(f"cosignature timestamp {timestamp} exceeds 2^63-1")
    return Cosignature(name, int.from_bytes(raw[:4], "big"), timestamp, raw[12:], line)


def verify_cosignature_line(line: str, body: bytes, verifier: CosignatureVerifier) -> Cosignature:
    """Parse ``line`` and check it is ``verifier``'s valid cosignature over ``body``."""
    cosig = parse_cosignature_line(line)
    if (cosig.name, cosig.key_id) != (verifier.name, verifier.key_id):
        raise CosignatureError(
            f"cosignature by {cosig.name}/{cosig.key_id:08x}, not by the configured witness "
            f"{verifier.name}/{verifier.key_id:08x}"
        )
    if not verifier.verify(body, cosig.timestamp.to_bytes(8, "big") + cosig.signature):
        raise CosignatureError(
            f"cosignature by {cosig.name} (time {cosig.timestamp}) does not verify over this "
            "checkpoint"
        )
    return cosig
