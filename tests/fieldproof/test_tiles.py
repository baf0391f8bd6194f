"""C2SP tlog-tiles (fieldproof/formats/tiles.py): paths exactly as the spec spells them, the
spec's own examples, and tree hashes read from tiles equal to the RFC 9162 definition for
every size, level and partial width."""

from __future__ import annotations

import hashlib
import random

import pytest

from fieldproof.formats import merkle
from fieldproof.formats.tiles import (
    TileError,
    TileHashes,
    decode_entry_bundle,
    encode_entry_bundle,
    entries_path,
    new_tiles,
    parse_path,
    tile_path,
    tiles_for_size,
)


def test_paths_as_the_spec_spells_them() -> None:
    assert tile_path(0, 0) == "tile/0/000"
    assert tile_path(1, 5) == "tile/1/005"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(2, 1000) == "tile/2/x001/000"
    assert tile_path(0, 999) == "tile/0/999"
    assert tile_path(0, 7, 112) == "tile/0/007.p/112"
    assert entries_path(1234067, 3) == "tile/entries/x001/x234/067.p/3"
    with pytest.raises(TileError):
        tile_path(64, 0)
    with pytest.raises(TileError):
        tile_path(0, 0, 0)


@pytest.mark.parametrize("index", [0, 1, 999, 1000, 1001, 65_535, 1_234_067, 10**9 + 7])
@pytest.mark.parametrize("width", [1, 17, 255, 256])
def test_paths_parse_back(index: int, width: int) -> None:
    assert parse_path(tile_path(3, index, width)) == (3, index, width)
    assert parse_path(entries_path(index, width)) == (None, index, width)


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/x000/005",  # a leading zero group
        "tile/00/000",  # a leading zero level
        "tile/64/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/012",
        "tile/0/5",
        "tile/0/0005",
        "tile/0/x001/234/067",  # an inner group without x
        "tile/0/../000",
        "tile/entries/000/",
        "checkpoint",
        "tile/0/000\n",
    ],
)
def test_non_canonical_paths_are_refused(path: str) -> None:
    with pytest.raises(TileError):
        parse_path(path)


def test_the_specs_examples() -> None:
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t[0] == 0]
    assert len([t for t in level0 if t[2] == 256]) == 273 and (0, 273, 112) in level0
    assert (1, 0, 256) in tiles and (1, 1, 17) in tiles and (2, 0, 1) in tiles
    assert len(tiles) == 273 + 1 + 1 + 1 + 1
    assert tiles_for_size(256) == [(0, 0, 256), (1, 0, 1)]
    assert tiles_for_size(0) == []
    assert new_tiles(256, 257) == [(0, 1, 1)]


def spec_tiles(leaves: list[bytes], size: int) -> dict[tuple[int, int, int], bytes]:
    """Tiles by the spec's formula, MTH(D[(n*256+i)*256**l : (n*256+i+1)*256**l]), from
    RFC 9162 directly: an independent reference for the reader under test."""
    out = {}
    for level, index, width in tiles_for_size(size):
        span = 256**level
        hashes = []
        for i in range(width):
            start = (index * 256 + i) * span
            hashes.append(merkle.root_from_leaf_hashes(leaves[start : start + span]))
        out[(level, index, width)] = b"".join(hashes)
    return out


@pytest.fixture(scope="module")
def leaves() -> list[bytes]:
    return [merkle.leaf_hash(hashlib.sha256(i.to_bytes(4, "big")).digest()) for i in range(66_000)]


@pytest.mark.parametrize(
    "size", [1, 2, 3, 255, 256, 257, 511, 512, 1000, 65_535, 65_536, 65_537, 65_999]
)
def test_tree_hashes_from_tiles_are_rfc_9162(leaves: list[bytes], size: int) -> None:
    tiles = spec_tiles(leaves, size)
    reads: list[tuple[int, int, int]] = []

    def read(tile: tuple[int, int, int]) -> bytes:
        reads.append(tile)
        return tiles[tile]

    th = TileHashes(size, read)
    assert th.root() == merkle.root_from_leaf_hashes(leaves[:size])
    assert len(reads) == len(set(reads))  # each tile read once
    assert list(th.check_full_tiles()) == []
    rng = random.Random(size)
    for old in {0, 1, size, *(rng.randrange(1, size + 1) for _ in range(5))}:
        assert th.root_of(old) == merkle.root_from_leaf_hashes(leaves[:old])
    for index in {0, size - 1, rng.randrange(size)}:
        proof = merkle.stored_inclusion_proof(index, size, th)
        merkle.verify_inclusion(leaves[index], index, size, proof, th.root())


def test_a_tampered_tile_is_caught(leaves: list[bytes]) -> None:
    size = 1000
    tiles = spec_tiles(leaves, size)
    bad = bytearray(tiles[(0, 1, 256)])
    bad[40] ^= 1
    tiles[(0, 1, 256)] = bytes(bad)
    th = TileHashes(size, tiles.__getitem__)
    # the root is built from the level-1 hash, so the change shows in the full-tile check
    assert th.root() == merkle.root_from_leaf_hashes(leaves[:size])
    assert [p for p in th.check_full_tiles()] == [
        "tile/0/001 does not hash to its entry in level 1"
    ]
    tiles[(0, 1, 256)] = tiles[(0, 1, 256)][:-1]
    with pytest.raises(TileError, match="8191 bytes"):
        TileHashes(size, tiles.__getitem__).tile(0, 1)


def test_entry_bundles() -> None:
    entries = [b"", b"a", bytes(range(256)) * 10, b"\x00" * 65_535]
    data = encode_entry_bundle(entries)
    assert data[:2] == b"\x00\x00" and data[2:4] == b"\x00\x01"
    assert decode_entry_bundle(data, 4) == entries
    with pytest.raises(TileError):
        decode_entry_bundle(data, 3)
    with pytest.raises(TileError):
        decode_entry_bundle(data[:-1], 4)
    with pytest.raises(TileError):
        encode_entry_bundle([b"\x00" * 65_536])
