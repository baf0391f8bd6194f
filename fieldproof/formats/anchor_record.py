"""The anchor record: the fixed, versioned bytes put on chain for one checkpoint.

Layout (big-endian), 78 bytes, documented in docs/anchor-record.md::

    0   4  magic  b"FPAN"
    4   2  version (1)
    6   8  tree size
    14 32  root hash (RFC 9162 Merkle tree head)
    46 32  SHA-256 of the log origin line (UTF-8, no newline)
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from fieldproof.errors import FormatError

MAGIC = b"FPAN"
VERSION = 1
RECORD_SIZE = 78
_LAYOUT = struct.Struct(">4sHQ32s32s")


class RecordError(FormatError):
    """Bytes on chain are not a fieldproof anchor record of a version this code knows."""


@dataclass(frozen=True)
class AnchorRecord:
    tree_size: int
    root_hash: bytes
    origin_hash: bytes

    @classmethod
    def for_checkpoint(cls, origin: str, tree_size: int, root_hash: bytes) -> AnchorRecord:
        return cls(tree_size, root_hash, hashlib.sha256(origin.encode()).digest())

    def encode(self) -> bytes:
        if len(self.root_hash) != 32 or len(self.origin_hash) != 32:
            raise RecordError("root hash and origin hash must be 32 bytes")
        return _LAYOUT.pack(MAGIC, VERSION, self.tree_size, self.root_hash, self.origin_hash)

    @classmethod
    def decode(cls, data: bytes) -> AnchorRecord:
        if len(data) != RECORD_SIZE:
            raise RecordError(f"anchor record is {len(data)} bytes, expected {RECORD_SIZE}")
        magic, version, size, root, origin_hash = _LAYOUT.unpack(data)
        if magic != MAGIC:
            raise RecordError(f"anchor record magic {magic!r} is not {MAGIC!r}")
        if version != VERSION:
            raise RecordError(f"anchor record version {version} is not supported (knows {VERSION})")
        return cls(size, root, origin_hash)

    def matches(self, origin: str) -> bool:
        return hashlib.sha256(origin.encode()).digest() == self.origin_hash
