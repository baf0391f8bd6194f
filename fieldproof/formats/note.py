"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys.

Byte-compatible with golang.org/x/mod/sumdb/note: the same key strings (`vkey`
`name+hexid+base64(0x01||pub)`, `skey` `PRIVATE+KEY+name+hexid+base64(0x01||seed)`), the same
key IDs and signature lines, so Go tooling and witnesses can check our checkpoints and we can
check theirs.

Parsing is strict (a note is evidence): valid UTF-8, no control characters except newline,
canonical base64, limits on size and signature count. Following the spec, signatures from
unknown keys are kept aside but ignored, a known key whose signature fails rejects the whole
note, and a note with no verified known signature is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fieldproof.errors import FormatError

__all__ = [
    "ALG_ED25519",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "Ed25519Signer",
    "Ed25519Verifier",
    "InvalidSignatureError",
    "MalformedNoteError",
    "Note",
    "NoteError",
    "NoteSignature",
    "Signer",
    "UnverifiedNoteError",
    "Verifier",
    "add_signature_lines",
    "check_key_name",
    "ed25519_key_id",
    "generate_key",
    "open_note",
    "sign_note",
]

ALG_ED25519 = 0x01
"""Signature type byte for Ed25519 in key IDs and key strings."""

MAX_SIGNATURES = 100
"""Signature lines accepted per note (the spec requires at least 16)."""

MAX_NOTE_SIZE = 1 << 20
"""Largest note accepted, in bytes: room for 100 post-quantum signatures, not for abuse."""

_SIG_PREFIX = "\u2014 "  # em dash, space
_SKEY_PREFIX = "PRIVATE+KEY+"


class NoteError(FormatError):
    """A signed note cannot be trusted; the message says why."""


class MalformedNoteError(NoteError):
    """The bytes are not a well-formed signed note (or key string)."""


class InvalidSignatureError(NoteError):
    """A signature from a known key does not verify: the note was altered or mis-signed."""


class UnverifiedNoteError(NoteError):
    """No signature from any trusted key is on the note."""

    def __init__(self, message: str, note: Note) -> None:
        super().__init__(message)
        self.note = note


def check_key_name(name: str) -> str:
    """Key names must be non-empty, without spaces, `+` or control characters."""
    if not isinstance(name, str) or not name:
        raise MalformedNoteError("key name must be a non-empty string")
    bad = [c for c in name if c.isspace() or c == "+" or ord(c) < 0x20 or c == "\x7f"]
    if bad:
        raise MalformedNoteError(
            f"key name {name!r} contains {bad[0]!r}; names may not contain spaces, '+' or "
            "control characters (use a schema-less URL such as example.com/log)"
        )
    return name


def ed25519_key_id(name: str, public_key: bytes) -> int:
    """Key ID = first 4 bytes (big-endian) of SHA-256(name || 0x0A || 0x01 || public key)."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@runtime_checkable
class Verifier(Protocol):
    """A trusted key: identified by (name, key_id), able to check a signature over a text."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


@runtime_checkable
class Signer(Protocol):
    """A key that can sign note texts under (name, key_id)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


def _b64decode(text: str, what: str) -> bytes:
    """Standard, padded, canonical base64 only: one byte string has one encoding."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MalformedNoteError(f"{what} is not valid base64: {exc}") from None
    if base64.b64encode(raw).decode() != text:
        raise MalformedNoteError(f"{what} is not canonical base64")
    return raw


def _split_key(text: str, what: str) -> tuple[str, int, bytes]:
    parts = text.split("+", 2)  # base64 may itself contain '+'
    if len(parts) != 3:
        # Never echo the text: for a signer key it is the secret.
        raise MalformedNoteError(f"{what} must look like name+hexkeyid+base64key")
    name, hex_id, b64 = parts
    check_key_name(name)
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise MalformedNoteError(f"{what} key ID {hex_id!r} must be 8 lowercase hex digits")
    raw = _b64decode(b64, f"{what} key material")
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise MalformedNoteError(
            f"{what} is not an Ed25519 key (want type byte 0x01 and 32 key bytes, "
            f"got {len(raw)} bytes starting {raw[:1].hex() or 'empty'})"
        )
    return name, int(hex_id, 16), raw[1:]


class NoteVerifierKey:
    """What every note verifier key shows (C2SP signed-note: ``name+hexid+base64(type ‖ key)``):
    a log's Ed25519 key (type 0x01) and a witness's cosignature/v1 key (type 0x04) differ only
    in their type byte, key ID and what they verify. Subclasses set ``_name``, ``_pub``,
    ``_key_id`` and :attr:`ALGORITHM`."""

    ALGORITHM: int
    _name: str
    _pub: bytes
    _key_id: int

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        return self._pub

    @property
    def vkey(self) -> str:
        """The verifier key string to publish (safe to share)."""
        b64 = base64.b64encode(bytes([self.ALGORITHM]) + self._pub).decode()
        return f"{self._name}+{self._key_id:08x}+{b64}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"


class Ed25519Verifier(NoteVerifierKey):
    """An Ed25519 verifier key, usually built from its `vkey` string."""

    ALGORITHM = ALG_ED25519

    def __init__(self, name: str, public_key: bytes) -> None:
        self._name = check_key_name(name)
        if not isinstance(public_key, bytes) or len(public_key) != 32:
            raise MalformedNoteError("Ed25519 public key must be 32 bytes")
        self._pub = public_key
        self._key = Ed25519PublicKey.from_public_bytes(public_key)
        self._key_id = ed25519_key_id(name, public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Ed25519Verifier:
        """Parse `name+hexid+base64(0x01||pub)`, rejecting a key ID that does not match."""
        name, key_id, pub = _split_key(vkey, "verifier key")
        v = cls(name, pub)
        if v.key_id != key_id:
            raise MalformedNoteError(
                f"verifier key {vkey!r} says key ID {key_id:08x} but its name and public key "
                f"give {v.key_id:08x}: the key string was altered or copied wrongly"
            )
        return v

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True


class Ed25519Signer:
    """An Ed25519 signing key. Its repr never shows the private key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self._name = check_key_name(name)
        self._key = private_key
        pub = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._verifier = Ed25519Verifier(name, pub)

    @classmethod
    def from_skey(cls, skey: str) -> Ed25519Signer:
        """Parse `PRIVATE+KEY+name+hexid+base64(0x01||seed)` as written by Go's note.GenerateKey."""
        if not isinstance(skey, str) or not skey.startswith(_SKEY_PREFIX):
            raise MalformedNoteError("signer key must start with PRIVATE+KEY+")
        name, key_id, seed = _split_key(skey[len(_SKEY_PREFIX) :].strip(), "signer key")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if signer.key_id != key_id:
            raise MalformedNoteError(
                f"signer key for {name!r} says key ID {key_id:08x} but the key gives "
                f"{signer.key_id:08x}: the key file is damaged"
            )
        return signer

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._verifier.key_id

    @property
    def skey(self) -> str:
        """The private key string. Secret: write it only to a 0600 file, never to logs."""
        seed = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        b64 = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"{_SKEY_PREFIX}{self._name}+{self.key_id:08x}+{b64}"

    def verifier(self) -> Ed25519Verifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"Ed25519Signer(name={self._name!r}, key_id={self.key_id:08x})"


def generate_key(name: str) -> Ed25519Signer:
    """A fresh Ed25519 signer for `name`."""
    return Ed25519Signer(name, Ed25519PrivateKey.generate())


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, key ID, and the base64 text as it appeared."""

    name: str
    key_id: int
    base64: str


@dataclass(frozen=True)
class Note:
    """An opened note: its text, the signatures verified by trusted keys, and the others."""

    text: str
    sigs: tuple[NoteSignature, ...]
    unverified_sigs: tuple[NoteSignature, ...]


def _check_text_chars(text: str, what: str) -> None:
    for i, c in enumerate(text):
        if (ord(c) < 0x20 and c != "\n") or c == "\x7f":
            raise MalformedNoteError(
                f"{what} contains control character {c!r} at position {i}; only newline is allowed"
            )


def sign_note(text: str | bytes, signers: Iterable[Signer]) -> bytes:
    """The signed note: text, a blank line, one signature line per signer."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedNoteError("note text must be UTF-8") from None
    if not text.endswith("\n"):
        raise MalformedNoteError("note text must end with a newline")
    _check_text_chars(text, "note text")
    msg = text.encode("utf-8")
    lines = []
    for s in signers:
        check_key_name(s.name)
        sig = s.key_id.to_bytes(4, "big") + s.sign(msg)
        lines.append(f"{_SIG_PREFIX}{s.name} {base64.b64encode(sig).decode()}\n")
    if not lines:
        raise ValueError("a signed note needs at least one signer")
    out = msg + b"\n" + "".join(lines).encode("utf-8")
    if len(out) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"signed note would be {len(out)} bytes, over {MAX_NOTE_SIZE}")
    return out


def open_note(msg: bytes, verifiers: Sequence[Verifier]) -> Note:
    """Verify a signed note against trusted keys and return it.

    Raises MalformedNoteError (bad bytes), InvalidSignatureError (a trusted key's signature
    fails) or UnverifiedNoteError (no trusted key signed it).
    """
    if not isinstance(msg, bytes | bytearray):
        raise MalformedNoteError(f"signed note must be bytes, got {type(msg).__name__}")
    msg = bytes(msg)
    if len(msg) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"signed note is {len(msg)} bytes, over the {MAX_NOTE_SIZE} limit")
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedNoteError(f"signed note is not valid UTF-8 ({exc.reason})") from None
    _check_text_chars(decoded, "signed note")

    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("signed note has no blank line before its signatures")
    text, sig_block = decoded[: split + 1], decoded[split + 2 :]
    if not sig_block or not sig_block.endswith("\n"):
        raise MalformedNoteError(
            "signed note must end with signature lines, each ending in newline"
        )

    known: dict[tuple[str, int], Verifier] = {}
    for v in verifiers:
        known[(v.name, v.key_id)] = v

    text_bytes = text.encode("utf-8")
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    seen_verified: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    lines = sig_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"signed note has {len(lines)} signatures, over {MAX_SIGNATURES}")
    for n, line in enumerate(lines, 1):
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError(f"signature line {n} does not start with an em dash and space")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep:
            raise MalformedNoteError(f"signature line {n} has no space between name and signature")
        check_key_name(name)
        raw = _b64decode(b64, f"signature line {n}")
        if len(raw) < 5:
            raise MalformedNoteError(
                f"signature line {n} is too short to hold a key ID and signature"
            )
        key_id = int.from_bytes(raw[:4], "big")
        sig = NoteSignature(name, key_id, b64)
        trusted_key = known.get((name, key_id))
        if trusted_key is None:
            if line not in seen_unverified:
                seen_unverified.add(line)
                unverified.append(sig)
            continue
        if (name, key_id) in seen_verified:
            continue
        seen_verified.add((name, key_id))
        if not trusted_key.verify(text_bytes, raw[4:]):
            raise InvalidSignatureError(
                f"signature by {name} (key ID {key_id:08x}) does not verify: the note text or "
                "signature was changed after signing"
            )
        verified.append(sig)

    note = Note(text, tuple(verified), tuple(unverified))
    if not verified:
        names = ", ".join(f"{s.name}/{s.key_id:08x}" for s in unverified) or "none"
        trusted = ", ".join(f"{v.name}/{v.key_id:08x}" for v in verifiers) or "none"
        raise UnverifiedNoteError(
            f"note is not signed by any trusted key (signed by: {names}; trusted: {trusted})",
            note,
        )
    return note


def add_signature_lines(msg: bytes, lines: Iterable[str]) -> bytes:
    """The signed note ``msg`` with extra signature lines (witness cosignatures) appended.

    The text and the existing signatures are kept byte for byte. A new line whose key (name and
    key ID) already signed the note replaces that key's line (a witness's newer cosignature);
    an identical line is not repeated. Only the form is checked here, not the signatures: verify
    each line before adding it. Raises MalformedNoteError on a malformed note or line, or when
    the result would exceed MAX_SIGNATURES or MAX_NOTE_SIZE."""
    if not isinstance(msg, bytes | bytearray):
        raise MalformedNoteError(f"signed note must be bytes, got {type(msg).__name__}")
    try:
        decoded = bytes(msg).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError("signed note is not valid UTF-8") from None
    split = decoded.rfind("\n\n")
    if split < 0 or not decoded.endswith("\n") or split + 2 >= len(decoded):
        raise MalformedNoteError("not a signed note: no signature lines after a blank line")
    text, sig_block = decoded[: split + 2], decoded[split + 2 :]

    def key_of(line: str) -> tuple[str, int]:
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError("a signature line starts with an em dash and space")
        name, sep, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        if not sep:
            raise MalformedNoteError("a signature line has a space between name and signature")
        check_key_name(name)
        _check_text_chars(line, "signature line")
        raw = _b64decode(b64, "signature line")
        if len(raw) < 5:
            raise MalformedNoteError("signature line too short for a key ID and signature")
        return name, int.from_bytes(raw[:4], "big")

    current = sig_block[:-1].split("\n")
    keys = [key_of(line) for line in current]
    for line in lines:
        if not isinstance(line, str):
            raise MalformedNoteError("signature lines must be strings")
        line = line.removesuffix("\n")
        key = key_of(line)
        if key in keys:
            current[keys.index(key)] = line
        else:
            current.append(line)
            keys.append(key)
    if len(current) > MAX_SIGNATURES:
        raise MalformedNoteError(
            f"note would have {len(current)} signatures, over {MAX_SIGNATURES}"
        )
    out = (text + "".join(line + "\n" for line in current)).encode("utf-8")
    if len(out) > MAX_NOTE_SIZE:
        raise MalformedNoteError(f"signed note would be {len(out)} bytes, over {MAX_NOTE_SIZE}")
    return out
