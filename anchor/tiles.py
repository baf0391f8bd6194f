"""The evidence log as C2SP tlog-tiles files (fieldproof/formats/tiles.py) in a directory:
``checkpoint``, hash tiles ``tile/<L>/<N>[.p/<W>]`` and entry bundles
``tile/entries/<N>[.p/<W>]``. Any web server or object store can serve the directory; a backup
copies it; ``fieldproof log mirror`` follows it.

Written after each checkpoint is committed to the database: the tiles the new size adds, then
the ``checkpoint`` file last, each file atomically (temporary name, fsync, rename). A crash in
between leaves the previous checkpoint in place and some extra tiles (harmless: files are
content-addressed by size); the next sync writes what is missing, because what was written is
read back from the ``checkpoint`` file, not remembered. Partial tiles of every checkpointed
size are kept, as the spec requires."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from anchor.logstore import MerkleLog
from fieldproof.formats.checkpoint import CheckpointError, parse_checkpoint
from fieldproof.formats.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    encode_entry_bundle,
    entries_path,
    new_tiles,
    tile_path,
)

log = logging.getLogger("fieldproof.anchor.tiles")

CHECKPOINT_FILE = "checkpoint"


def published_size(directory: Path) -> int:
    """The size of the checkpoint the directory serves (0 when none or unreadable)."""
    try:
        note = (directory / CHECKPOINT_FILE).read_bytes()
        body = note.split(b"\n\n", 1)[0] + b"\n"
        return parse_checkpoint(body).size
    except (OSError, CheckpointError):
        return 0


def write_tiles(log_: MerkleLog, size: int, note: bytes, directory: Path) -> int:
    """Bring ``directory`` to the signed checkpoint ``note`` of ``size`` entries. Returns the
    number of tile and bundle files written."""
    old = published_size(directory)
    if old > size:
        raise ValueError(f"{directory} already serves a checkpoint of {old} > {size} entries")
    written = 0
    for level, index, width in new_tiles(old, size):
        first = index * TILE_WIDTH
        nodes = [(TILE_HEIGHT * level, first + i) for i in range(width)]
        hashes = b"".join(log_.store.get_nodes(nodes))
        _write_atomic(directory / tile_path(level, index, width), hashes)
        written += 1
        if level == 0:
            entries = log_.entries(first, first + width)
            _write_atomic(directory / entries_path(index, width), encode_entry_bundle(entries))
            written += 1
    _write_atomic(directory / CHECKPOINT_FILE, note)
    return written


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
