"""What a hostile bundle may cost to decode (issue 13, finding 7): peak memory, measured with
tracemalloc, stays under a stated multiple of the file's size, whatever its shape.

The decoder (fieldproof/formats/bundle.py) reads the CBOR item heads itself and checks every
declared length and count against the bytes left and against the limits before it builds
anything, and it builds only what the format defines. Before it, ``cbor2.loads`` of the whole
file built every item first: 4 MiB of empty arrays or maps peaked at 64–72× the file size
(~300 MB), before any limit applied.

Each case is ~4 MiB. The ones shaped like a valid bundle (the most, smallest entries the
format allows) decode; the others are refused, most before they cost anything.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import cbor2
import pytest

from fieldproof.formats.bundle import BUNDLE_FORMAT, MIN_ENTRY_BYTES, BundleError, decode_bundle

#: the stated bound: decoding never takes more than this many times the file's size
MAX_MULTIPLE = 8
SIZE = 4 << 20
HASH = b"\x11" * 32


def _bundle(**fields: Any) -> bytes:
    obj: dict[str, Any] = {
        "format": BUNDLE_FORMAT, "version": 2, "created": 1.0,
        "scope": {"farm": None, "field": None, "gateway": None, "from": 0.0, "to": 1.0},
        "log": {"origin": "o", "vkey": "v"}, "checkpoints": [], "consistency": [],
        "hashes": [], "registry": [], "messages": [], "notes": []}
    obj.update(fields)
    return bytes(cbor2.dumps(obj))


def _head(major: int, value: int) -> bytes:
    return bytes([major << 5 | 27]) + value.to_bytes(8, "big")


def tiny_entries() -> bytes:
    """The most entries 4 MiB can hold: the shortest the format allows, ascending indices."""
    n = SIZE // (MIN_ENTRY_BYTES + 5)
    return _bundle(messages=[[1000 + i, b"\xd2" * MIN_ENTRY_BYTES] for i in range(n)])


def many_hashes() -> bytes:
    n = SIZE // 40
    return _bundle(hashes=[[i, i + 1, HASH] for i in range(1000, 1000 + n)])


def tiny_checkpoints() -> bytes:
    """Checkpoints with notes of 64 bytes (a real one is over 140) and no anchors, refused at
    the end: a version 2 bundle with checkpoints needs its completeness claim."""
    n = SIZE // 80
    return _bundle(checkpoints=[{"note": b"x" * 64, "anchors": []}] * n,
                   consistency=[[]] * (n - 1))


def _one(key: str, value: bytes) -> bytes:
    """A map of one key (text) and a value given as raw CBOR bytes."""
    return b"\xa1" + bytes(cbor2.dumps(key)) + value


CASES: dict[str, Callable[[], bytes]] = {
    "tiny entries": tiny_entries,
    "many subtree hashes": many_hashes,
    "tiny checkpoints": tiny_checkpoints,
    "empty arrays where a number goes": lambda: _bundle(created=[[]] * SIZE),
    "empty maps in the scope": lambda: _one("scope", _head(4, SIZE) + b"\xa0" * SIZE),
    "a map of two million keys": lambda: _one("scope", _head(5, SIZE // 2) + b"\x00" * SIZE),
    "tiny items under an unknown key": lambda: _one("junk", _head(4, SIZE) + b"\x80" * SIZE),
    "tiny items as notes": lambda: _one("notes", _head(4, SIZE) + b"\x60" * SIZE),
    "deep nesting": lambda: b"\x81" * SIZE + b"\x00",
    "deep nesting in the scope": lambda: _one("scope", b"\x81" * SIZE + b"\x00"),
    "a byte string declaring 2^60 bytes": lambda: _one(
        "messages", b"\x81\x82\x19\x03\xe8" + _head(2, 2**60) + b"\x00" * SIZE),
    "an array declaring 2^60 items": lambda: _one("messages", _head(4, 2**60) + b"\x00" * SIZE),
    "a map declaring 2^60 pairs": lambda: _one("scope", _head(5, 2**60) + b"\x00" * SIZE),
    "a text declaring 2^60 bytes": lambda: _one("format", _head(3, 2**60) + b"a" * SIZE),
}
DECODES = {"tiny entries", "many subtree hashes"}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_bundle_costs_a_bounded_multiple_of_its_size(case: str) -> None:
    data = CASES[case]()
    assert SIZE * 0.7 < len(data) < SIZE * 1.3
    refused: BundleError | None = None
    tracemalloc.start()
    try:
        try:
            bundle = decode_bundle(data)
        except BundleError as exc:
            bundle, refused = None, exc
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (refused is None) == (case in DECODES), refused
    assert peak < MAX_MULTIPLE * len(data), f"{peak / len(data):.1f}x the file size"
    if case in DECODES:
        assert bundle is not None
        assert len(bundle.messages) + len(bundle.hashes) > 50_000
    else:
        assert bundle is None
