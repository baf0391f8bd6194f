"""The log as tlog-tiles files (anchor/tiles.py): written from the collector's own store at
each checkpoint, byte for byte what the spec's formula gives, partial tiles of every
checkpointed size kept, the checkpoint file last, and a re-run after a crash completes it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from anchor.logstore import MerkleLog, open_log
from anchor.tiles import CHECKPOINT_FILE, published_size, write_tiles
from fieldproof.formats import merkle
from fieldproof.formats.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from fieldproof.formats.note import generate_key
from fieldproof.formats.tiles import (
    TileHashes,
    decode_entry_bundle,
    entries_path,
    tile_path,
    tiles_for_size,
)

ORIGIN = "fieldproof.test/log/tiles"


def entry(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(4, "big")).digest() * (1 + i % 3)


def grow(log: MerkleLog, to: int) -> None:
    log.append([entry(i) for i in range(log.size(), to)])


def read_dir(root: Path):  # type: ignore[no-untyped-def]
    return lambda t: (root / tile_path(*t)).read_bytes()


def test_tiles_follow_the_log_checkpoint_by_checkpoint(tmp_path: Path) -> None:
    signer = generate_key(ORIGIN)
    log = open_log(tmp_path / "log.sqlite")
    out = tmp_path / "tiles"
    sizes = [1, 255, 256, 300, 70_000]
    for size in sizes:
        grow(log, size)
        note = sign_checkpoint(Checkpoint(ORIGIN, size, log.root(size)), signer)
        write_tiles(log, size, note, out)
        assert published_size(out) == size
        cp = open_checkpoint((out / CHECKPOINT_FILE).read_bytes(), signer.verifier())
        th = TileHashes(size, read_dir(out))
        assert th.root() == cp.root_hash == log.root(size)
        assert list(th.check_full_tiles()) == []
        for level, index, width in tiles_for_size(size):
            if level == 0:
                bundle = (out / entries_path(index, width)).read_bytes()
                got = decode_entry_bundle(bundle, width)
                assert got == log.entries(index * 256, index * 256 + width)
                hashes = (out / tile_path(0, index, width)).read_bytes()
                assert hashes == b"".join(merkle.leaf_hash(e) for e in got)
    # the partial tiles of every checkpointed size are still served
    assert (out / tile_path(0, 0, 1)).exists() and (out / tile_path(0, 0, 255)).exists()
    assert (out / tile_path(0, 1, 44)).exists()  # size 300
    assert (out / tile_path(2, 0, 1)).exists() and (out / tile_path(1, 1, 17)).exists()


def test_a_sync_interrupted_before_the_checkpoint_file_is_completed_later(
    tmp_path: Path,
) -> None:
    signer = generate_key(ORIGIN)
    log = open_log(tmp_path / "log.sqlite")
    out = tmp_path / "tiles"
    grow(log, 10)
    write_tiles(log, 10, sign_checkpoint(Checkpoint(ORIGIN, 10, log.root(10)), signer), out)
    grow(log, 600)
    note = sign_checkpoint(Checkpoint(ORIGIN, 600, log.root(600)), signer)
    write_tiles(log, 600, note, out)
    # as if the process died after some tiles and before the checkpoint: the old one stays
    (out / CHECKPOINT_FILE).write_bytes(
        sign_checkpoint(Checkpoint(ORIGIN, 10, log.root(10)), signer)
    )
    (out / tile_path(0, 2, 88)).unlink()
    assert published_size(out) == 10
    write_tiles(log, 600, note, out)  # the next pass writes what is missing
    assert published_size(out) == 600
    assert TileHashes(600, read_dir(out)).root() == log.root(600)
