"""C2SP tlog-tiles: the evidence log as static files anyone can fetch, mirror and check.

A log of ``size`` entries is served as a signed ``checkpoint`` and *tiles*: at level L, tile N
holds the 256 consecutive Merkle Tree Hashes ``MTH(D[(N*256+i)*256**L : (N*256+i+1)*256**L])``;
the rightmost tile of each level may be *partial* (``.p/<W>``, 1..255 hashes). Entry bundles
(``tile/entries/<N>``) hold the entries themselves, each as a big-endian uint16 length and the
bytes. Paths encode N in zero-padded 3-digit elements, all but the last prefixed with ``x``.

Pure: paths, bundles and reading any tree hash (and so roots and proofs, through
:mod:`fieldproof.formats.merkle`) from tiles a caller supplies. Writing tiles from the log is
:mod:`anchor.tiles`; fetching and checking a mirror is :mod:`inspector.mirror`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from fieldproof.errors import FormatError
from fieldproof.formats import merkle
from fieldproof.formats.merkle import HASH_SIZE, NodeID

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
#: the spec's bound on levels; a log of 2^64 entries needs 8
MAX_LEVEL = 63
#: an entry bundle's length prefix is a uint16: the longest entry a log published as tiles may
#: hold (anchor.logstore refuses longer ones; the collector's max_message_bytes is bound by it)
MAX_ENTRY_BYTES = 0xFFFF

#: (level, index, width): width 256 is a full tile, 1..255 a partial one
Tile = tuple[int, int, int]
#: the hashes of a tile, as the bytes a reader fetched (32 * width)
TileReader = Callable[[Tile], bytes]

_PATH = re.compile(
    r"^tile/(0|[1-9][0-9]?|entries)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?$"
)


class TileError(FormatError):
    """A tile path, tile or entry bundle that is not what the spec says."""


def _index_path(index: int) -> str:
    if index < 0:
        raise TileError(f"tile index {index} is negative")
    groups = []
    while True:
        groups.append(f"{index % 1000:03d}")
        index //= 1000
        if index == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]``."""
    if not 0 <= level <= MAX_LEVEL:
        raise TileError(f"tile level {level} is outside 0..{MAX_LEVEL}")
    return f"tile/{level}/{_index_path(index)}" + _width_suffix(width)


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """``tile/entries/<N>[.p/<W>]``."""
    return f"tile/entries/{_index_path(index)}" + _width_suffix(width)


def _width_suffix(width: int) -> str:
    if not 1 <= width <= TILE_WIDTH:
        raise TileError(f"tile width {width} is outside 1..{TILE_WIDTH}")
    return "" if width == TILE_WIDTH else f".p/{width}"


def parse_path(path: str) -> tuple[int | None, int, int]:
    """(level or None for an entry bundle, index, width) of a tile path; :class:`TileError` for
    anything else (so a server can refuse it before touching a file)."""
    m = _PATH.fullmatch(path)
    if m is None:
        raise TileError(f"{path[:80]!r} is not a tile path")
    level_text, index_text, width_text = m.groups()
    index = int(index_text.replace("x", "").replace("/", ""))
    if _index_path(index) != index_text:
        raise TileError(f"{path[:80]!r} does not encode its index in canonical form")
    level = None if level_text == "entries" else int(level_text)
    if level is not None and level > MAX_LEVEL:
        raise TileError(f"tile level {level} is outside 0..{MAX_LEVEL}")
    width = TILE_WIDTH if width_text is None else int(width_text)
    if width_text is not None and not 1 <= width < TILE_WIDTH:
        raise TileError(f"partial tile width {width} is outside 1..255")
    return level, index, width


def tiles_for_size(size: int) -> list[Tile]:
    """Every hash tile a tree of ``size`` entries is served as (level 0 first): full tiles and,
    per level, the partial one (``floor(size / 256**L) mod 256`` wide, none when 0)."""
    out: list[Tile] = []
    level = 0
    count = size  # hashes at this level: complete subtrees of 256**level entries
    while count > 0:
        full, rest = divmod(count, TILE_WIDTH)
        out.extend((level, n, TILE_WIDTH) for n in range(full))
        if rest:
            out.append((level, full, rest))
        count = full
        level += 1
    return out


def new_tiles(old_size: int, size: int) -> list[Tile]:
    """The tiles a tree of ``size`` has that one of ``old_size`` did not (full tiles are
    immutable; partial ones are new whenever their width changes)."""
    before = set(tiles_for_size(old_size))
    return [t for t in tiles_for_size(size) if t not in before]


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Each entry as a big-endian uint16 length and its bytes; :class:`TileError` for an entry
    longer than :data:`MAX_ENTRY_BYTES` (its length cannot be written)."""
    out = bytearray()
    for i, e in enumerate(entries):
        if len(e) > MAX_ENTRY_BYTES:
            raise TileError(
                f"entry #{i} of this bundle is {len(e)} bytes and does not fit an entry bundle: "
                f"its length prefix is 16 bits (at most {MAX_ENTRY_BYTES} bytes)"
            )
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def decode_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """Exactly ``width`` entries, or :class:`TileError`."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TileError("entry bundle ends inside a length prefix")
        n = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if pos + n > len(data):
            raise TileError("entry bundle ends inside an entry")
        out.append(data[pos : pos + n])
        pos += n
        if len(out) > width:
            raise TileError(f"entry bundle holds more than its {width} entries")
    if len(out) != width:
        raise TileError(f"entry bundle holds {len(out)} entries, its path says {width}")
    return out


def split_hashes(data: bytes, width: int) -> list[bytes]:
    """The ``width`` hashes of a tile's bytes, or :class:`TileError`."""
    if len(data) != width * HASH_SIZE:
        raise TileError(f"tile of {len(data)} bytes; {width} hashes are {width * HASH_SIZE}")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


class TileHashes:
    """Tree hashes read from tiles, for a tree of ``size``: a :data:`merkle.NodeReader`, so
    :func:`merkle.stored_root` and the stored proofs work on tiles as they do on the log's own
    store. Each tile is read (and split) once."""

    def __init__(self, size: int, read: TileReader) -> None:
        self.size = size
        self._read = read
        self._tiles: dict[Tile, list[bytes]] = {}
        self._widths = {(lvl, n): w for lvl, n, w in tiles_for_size(size)}

    def tile(self, level: int, index: int) -> list[bytes]:
        width = self._widths.get((level, index))
        if width is None:
            raise TileError(f"a tree of {self.size} has no tile {tile_path(level, index)}")
        key = (level, index, width)
        if key not in self._tiles:
            self._tiles[key] = split_hashes(self._read(key), width)
        return self._tiles[key]

    def node(self, node: NodeID) -> bytes:
        """MTH of the perfect subtree ``(level, index)`` from the tile that holds it."""
        level, index = node
        tile_level, below = divmod(level, TILE_HEIGHT)
        first = index << below  # first hash at the tile's level
        hashes = self.tile(tile_level, first >> TILE_HEIGHT)
        offset = first & (TILE_WIDTH - 1)
        span = hashes[offset : offset + (1 << below)]
        if len(span) != 1 << below:
            raise TileError(f"node {node} is not complete in a tree of {self.size}")
        return merkle.root_from_leaf_hashes(span) if below else span[0]

    def __call__(self, nodes: Sequence[NodeID]) -> list[bytes]:
        return [self.node(n) for n in nodes]

    def root(self) -> bytes:
        return merkle.stored_root(self.size, self)

    def root_of(self, size: int) -> bytes:
        """The root of the tree's first ``size`` entries (a consistency check against an
        older checkpoint reads only this tree's tiles)."""
        if not 0 <= size <= self.size:
            raise TileError(f"size {size} is outside this tree of {self.size}")
        return merkle.stored_root(size, self)

    def check_full_tiles(self) -> Iterator[str]:
        """Problems where a full tile does not hash to its entry in the level above (the root
        check covers what a root is built from; this binds every full tile to it)."""
        for level, index, width in tiles_for_size(self.size):
            if width != TILE_WIDTH:
                continue
            below = merkle.root_from_leaf_hashes(self.tile(level, index))
            if self.node((TILE_HEIGHT * (level + 1), index)) != below:
                yield f"{tile_path(level, index)} does not hash to its entry in level {level + 1}"
