"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): the signed statement of a log's tree head.

Body, UTF-8, every line ending in newline::

    <origin>
    <tree size, decimal, no leading zeros>
    <base64 RFC 9162 root hash>
    [<extension line>...]

The body is the text of a C2SP signed note (`fieldproof.formats.note`); the log's Ed25519 key
signs it. Any tool of that ecosystem (Go's sumdb/note, transparency-dev witnesses) reads ours.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass

from fieldproof.errors import FormatError
from fieldproof.formats.merkle import HASH_SIZE, MAX_TREE_SIZE
from fieldproof.formats.note import Signer, Verifier, open_note, sign_note

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "open_checkpoint",
    "parse_checkpoint",
    "sign_checkpoint",
]


class CheckpointError(FormatError):
    """A checkpoint body is malformed or is not the one expected (wrong origin)."""


def _check_line(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise CheckpointError(f"{what} must be a non-empty string")
    for c in value:
        if ord(c) < 0x20 or c == "\x7f":
            raise CheckpointError(f"{what} {value!r} contains control character {c!r}")


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: who (origin), how many entries (size), which tree (root_hash)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise CheckpointError(f"checkpoint size must be an integer, got {self.size!r}")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"checkpoint size {self.size} is outside 0..2^64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash must be {HASH_SIZE} bytes (SHA-256)")
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("checkpoint extensions must be a tuple of lines")
        for ext in self.extensions:
            _check_line(ext, "checkpoint extension line")

    def body(self) -> bytes:
        """The note text that gets signed."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return ("\n".join([*lines, *self.extensions]) + "\n").encode("utf-8")


def parse_checkpoint(text: str | bytes) -> Checkpoint:
    """Parse a checkpoint body strictly: one spelling per tree head."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("checkpoint is not valid UTF-8") from None
    if not isinstance(text, str):
        raise CheckpointError(f"checkpoint must be text, got {type(text).__name__}")
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint body must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(
            f"checkpoint body has {len(lines)} lines; it needs origin, tree size and root hash"
        )
    origin, size_line, root_line, *extensions = lines
    if not origin:
        raise CheckpointError("checkpoint origin line is empty")
    if not size_line.isascii() or not size_line.isdigit():
        raise CheckpointError(f"checkpoint tree size {size_line!r} is not a decimal number")
    if len(size_line) > 1 and size_line[0] == "0":
        raise CheckpointError(f"checkpoint tree size {size_line!r} has leading zeros")
    if len(size_line) > 20:
        raise CheckpointError(f"checkpoint tree size {size_line!r} is too large")
    size = int(size_line)
    try:
        root = base64.b64decode(root_line.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise CheckpointError(f"checkpoint root hash {root_line!r} is not base64") from None
    if base64.b64encode(root).decode() != root_line:
        raise CheckpointError(f"checkpoint root hash {root_line!r} is not canonical base64")
    if len(root) != HASH_SIZE:
        raise CheckpointError(f"checkpoint root hash is {len(root)} bytes, expected {HASH_SIZE}")
    if any(not e for e in extensions):
        raise CheckpointError("checkpoint extension lines must not be empty")
    return Checkpoint(origin, size, root, tuple(extensions))


def sign_checkpoint(cp: Checkpoint, signer: Signer) -> bytes:
    """The checkpoint as a signed note, ready to publish and anchor."""
    return sign_note(cp.body(), [signer])


def open_checkpoint(
    note: bytes, verifier: Verifier | Sequence[Verifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it; with `origin`, also insist on that log.

    Raises `fieldproof.formats.note.NoteError` subclasses for signature problems and
    CheckpointError for body problems (both ValueError).
    """
    verifiers = [verifier] if isinstance(verifier, Verifier) else list(verifier)
    opened = open_note(note, verifiers)
    cp = parse_checkpoint(opened.text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(
            f"checkpoint is for log {cp.origin!r}, not the expected {origin!r}: "
            "it was issued by a different log"
        )
    return cp
