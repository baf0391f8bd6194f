"""``fieldproof log mirror``: a certifier's or cooperative's own copy of a collector's public
log (C2SP tlog-tiles), checked before anything is kept.

Each pass fetches the log's signed ``checkpoint``, verifies it with the log key the mirror was
given (never one the log hands out), fetches the tiles the mirror lacks into a staging folder,
and accepts them only when they rebuild the signed root, every full tile hashes to its entry
one level up, and the tree still starts with the tree mirrored before (the root of the old size
recomputed from the new tiles equals the old checkpoint's): a log that rewrote or forked its
history is refused with a clear message, and the mirror keeps what it had. The ``checkpoint``
file is replaced last, so a mirror interrupted at any point is still a consistent copy that
any web server can serve and ``fieldproof verify --known-checkpoint`` can pin.

Witnesses cosign a checkpoint after the log published it, and the log re-publishes the same
note with their cosignature lines added. So a checkpoint of the mirrored size is not ignored:
one with the same body and the same log signature replaces the kept one, the cosignatures of
witnesses the mirror was given keys for merged (each verified; old and new, the latest per
witness), so none is lost. A different body for the same size is refused as a fork.

Given witness keys, the kept ``checkpoint`` holds only what the mirror verified: the log's own
signature lines and each given witness's latest valid cosignature; any other line (a forged or
stale cosignature, a witness nobody named) is dropped, at every size. Without keys the note is
kept as the log published it (the lines were not checked)."""

from __future__ import annotations

import base64
import binascii
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from fieldproof.errors import FieldproofError
from fieldproof.formats import merkle
from fieldproof.formats.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from fieldproof.formats.cosignature import (
    Cosignature,
    CosignatureError,
    CosignatureVerifier,
    verify_cosignature_line,
)
from fieldproof.formats.note import Ed25519Verifier, NoteError, open_note
from fieldproof.formats.tiles import (
    TILE_WIDTH,
    Tile,
    TileError,
    TileHashes,
    decode_entry_bundle,
    entries_path,
    tile_path,
    tiles_for_size,
)

CHECKPOINT = "checkpoint"
#: a signed note is a few hundred bytes (more with witness cosignatures)
MAX_CHECKPOINT_BYTES = 64 * 1024
#: an entry bundle holds 256 entries of at most 65535 bytes each
MAX_BUNDLE_BYTES = TILE_WIDTH * (2 + 0xFFFF)
STAGING = ".staging"


class MirrorError(FieldproofError):
    """The log cannot be mirrored as it stands: its checkpoint does not verify, its tiles do
    not give the signed root, or it is not the tree mirrored before (a fork or a rewrite)."""


class SourceUnavailable(FieldproofError):
    """The log's server could not be reached or did not have a file (try again later)."""


class Source(Protocol):
    def get(self, path: str, limit: int) -> bytes: ...


class HttpSource:
    """A log served over HTTP(S) (the collector's ``/tiles/``, any static web host), through
    one client: a mirror fetches hundreds of small files, and a client per request cost
    ~100 ms each (its TLS context) against ~1 ms for the request itself."""

    def __init__(self, base: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base = base
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)

    def get(self, path: str, limit: int) -> bytes:
        url = f"{self.base.rstrip('/')}/{path}"
        try:
            with self.client.stream("GET", url) as r:
                if r.status_code != 200:
                    raise SourceUnavailable(f"{url}: HTTP {r.status_code}")
                data = bytearray()
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > limit:
                        raise MirrorError(f"{url} is larger than the {limit} bytes it may be")
                return bytes(data)
        except httpx.HTTPError as exc:
            raise SourceUnavailable(f"{url}: {type(exc).__name__}: {exc}") from None


@dataclass
class DirectorySource:
    """A log as files (a backup, a copy on a USB stick, another mirror)."""

    root: Path

    def get(self, path: str, limit: int) -> bytes:
        file = self.root / path
        try:
            with open(file, "rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise SourceUnavailable(f"{file}: {exc.strerror}") from None
        if len(data) > limit:
            raise MirrorError(f"{file} is larger than the {limit} bytes it may be")
        return data


def source_for(location: str, token: str | None = None) -> Source:
    if location.startswith(("http://", "https://")):
        return HttpSource(location, token)
    return DirectorySource(Path(location.removeprefix("file://")))


@dataclass(frozen=True)
class MirrorResult:
    size: int
    previous_size: int
    fetched: int
    #: the kept checkpoint of an unchanged size was replaced (witnesses cosigned it since)
    cosigned: bool = False
    #: names of the given witnesses whose valid cosignature the kept checkpoint holds
    witnesses_signed: tuple[str, ...] = ()
    #: signature lines of the log's note not kept (unverified: given witness keys only)
    dropped: int = 0

    @property
    def grew(self) -> bool:
        return self.size > self.previous_size


def mirror_once(
    source: Source,
    dest: Path,
    verifier: Ed25519Verifier,
    *,
    entries: bool = False,
    witnesses: Sequence[CosignatureVerifier] = (),
) -> MirrorResult:
    """One pass: fetch, check, then keep. Raises :class:`MirrorError` for a log that must not
    be kept (nothing in ``dest`` changes then) and :class:`SourceUnavailable` when the server
    cannot be asked. ``witnesses``: keys whose cosignatures are verified and merged when the
    log re-publishes a checkpoint of the mirrored size."""
    note = source.get(CHECKPOINT, MAX_CHECKPOINT_BYTES)
    new = _open(note, verifier, "the log's checkpoint")
    old = None
    if (dest / CHECKPOINT).exists():
        old_note = (dest / CHECKPOINT).read_bytes()
        old = _open(old_note, verifier, f"the mirrored {dest / CHECKPOINT}")
        if new.size < old.size:
            raise MirrorError(
                f"the log now says it holds {new.size} entries, but {old.size} were mirrored "
                "before: it was rewritten or cut. Keep this mirror as evidence; do not follow it."
            )
        if new.size == old.size:
            if new.root_hash != old.root_hash:
                raise MirrorError(
                    f"FORK: the log signed two different trees of {new.size} entries "
                    f"({old.root_hash.hex()} mirrored before, {new.root_hash.hex()} now). "
                    "Keep both checkpoints as evidence and tell the log's operator and auditors."
                )
            kept = _same_size_note(old_note, note, verifier, witnesses)
            signed, dropped = _tally(kept, note, witnesses)
            if kept == old_note:
                return MirrorResult(new.size, old.size, 0, False, signed, dropped)
            _put(dest / CHECKPOINT, kept)
            return MirrorResult(new.size, old.size, 0, True, signed, dropped)
    staging = dest / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    fetched: list[str] = []

    def read(tile: Tile) -> bytes:
        path = tile_path(*tile)
        have = dest / path
        if have.exists():
            return have.read_bytes()
        data = source.get(path, tile[2] * merkle.HASH_SIZE)
        _put(staging / path, data)
        fetched.append(path)
        return data

    hashes = TileHashes(new.size, read)
    try:
        for level, index, _width in tiles_for_size(new.size):
            hashes.tile(level, index)  # every tile, so the mirror is whole
        if hashes.root() != new.root_hash:
            if old is not None and _own_root(source, new.size) == new.root_hash:
                raise MirrorError(
                    f"REWRITE: the log's own tiles give its signed tree of {new.size} entries, "
                    f"but that tree does not contain the {old.size} entries mirrored before. "
                    "Keep this mirror as evidence and tell the log's operator and auditors."
                )
            raise MirrorError(
                f"the log's tiles do not give the root its checkpoint signs for {new.size} "
                "entries: the tiles were altered or are not this log's"
            )
        bad = list(hashes.check_full_tiles())
        if bad:
            raise MirrorError(f"inconsistent tiles: {bad[0]} (and {len(bad) - 1} more)")
        if old is not None and hashes.root_of(old.size) != old.root_hash:
            raise MirrorError(
                f"REWRITE: the log's tree of {new.size} entries does not start with the tree of "
                f"{old.size} entries mirrored before (its root is not {old.root_hash.hex()}). "
                "Keep this mirror as evidence and tell the log's operator and auditors."
            )
        if entries:
            fetched += _fetch_entries(source, dest, staging, hashes)
    except TileError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise MirrorError(f"the log serves a malformed tile: {exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    kept = _verified_only(note, verifier, witnesses) if witnesses else note
    for path in fetched:  # accepted: move into place, then the checkpoint last
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / path, dest / path)
    _put(dest / CHECKPOINT, kept)
    shutil.rmtree(staging, ignore_errors=True)
    signed, dropped = _tally(kept, note, witnesses)
    return MirrorResult(new.size, old.size if old else 0, len(fetched), False, signed, dropped)


def _split_note(note: bytes) -> tuple[bytes, list[str]]:
    """A verified note's body (up to its last text newline) and its signature lines."""
    split = note.rfind(b"\n\n")
    return note[: split + 1], note[split + 2 : -1].decode("utf-8").split("\n")


def _same_size_note(
    old_note: bytes,
    new_note: bytes,
    verifier: Ed25519Verifier,
    witnesses: Sequence[CosignatureVerifier],
) -> bytes:
    """The note to keep when the log publishes a checkpoint of the mirrored size and root:
    the old one, unless the new one has the same body and the same log signature. Then, with
    no witness keys, the new note as published; with keys, the new note with each known
    witness's latest valid cosignature from either note (invalid ones dropped). A different
    body is a fork (two checkpoints for one tree size), refused."""
    old_body, old_lines = _split_note(old_note)
    new_body, new_lines = _split_note(new_note)
    if new_body != old_body:
        raise MirrorError(
            f"FORK: the log signed two different checkpoints of the same tree "
            f"({old_body[:300]!r} mirrored before, {new_body[:300]!r} now). Keep both "
            "checkpoints as evidence and tell the log's operator and auditors."
        )
    log_key = (verifier.name, verifier.key_id)

    def log_lines(lines: list[str]) -> list[str]:
        return [line for line in lines if _key_of(line) == log_key]

    if log_lines(new_lines) != log_lines(old_lines):
        return old_note  # another valid log signature over the same body: nothing new
    if not witnesses:
        return new_note
    merged = _note_of(new_body, log_lines(new_lines), old_lines + new_lines, witnesses)
    try:  # over the note limits (a log padding its note with lines): keep what was kept
        open_note(merged, [verifier])
    except NoteError:
        return old_note
    return merged


def _latest(body: bytes, lines: Sequence[str],
            witnesses: Sequence[CosignatureVerifier]) -> dict[int, Cosignature]:
    """Each given witness's (by index) latest cosignature among ``lines`` valid over ``body``."""
    latest: dict[int, Cosignature] = {}
    for line in lines:
        for i, witness in enumerate(witnesses):
            try:
                cosig = verify_cosignature_line(line, body, witness)
            except CosignatureError:
                continue
            if i not in latest or cosig.timestamp > latest[i].timestamp:
                latest[i] = cosig
    return latest


def _note_of(body: bytes, log_lines: Sequence[str], lines: Sequence[str],
             witnesses: Sequence[CosignatureVerifier]) -> bytes:
    """``body`` signed by ``log_lines`` and each given witness's latest valid cosignature
    among ``lines``: nothing the mirror did not verify."""
    latest = _latest(body, lines, witnesses)
    kept = [*log_lines, *(latest[i].line for i in sorted(latest))]
    return body + b"\n" + "".join(f"{line}\n" for line in kept).encode("utf-8")


def _verified_only(note: bytes, verifier: Ed25519Verifier,
                   witnesses: Sequence[CosignatureVerifier]) -> bytes:
    """A newly mirrored note (already opened with the log key) with only its log signature
    lines and the given witnesses' valid cosignatures."""
    body, lines = _split_note(note)
    log_key = (verifier.name, verifier.key_id)
    return _note_of(body, [line for line in lines if _key_of(line) == log_key], lines, witnesses)


def _tally(kept: bytes, published: bytes,
           witnesses: Sequence[CosignatureVerifier]) -> tuple[tuple[str, ...], int]:
    """The given witnesses with a valid cosignature in the kept note, and how many signature
    lines of the published note were left out of it (0 without witness keys)."""
    if not witnesses:
        return (), 0
    body, lines = _split_note(kept)
    latest = _latest(body, lines, witnesses)
    dropped = set(_split_note(published)[1]) - set(lines)
    return tuple(witnesses[i].name for i in sorted(latest)), len(dropped)


def _key_of(line: str) -> tuple[str, int] | None:
    """The (name, key ID) of a signature line of a note that already opened, or None."""
    name, _, b64 = line.removeprefix("\u2014 ").partition(" ")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return (name, int.from_bytes(raw[:4], "big")) if len(raw) >= 4 else None


def _own_root(source: Source, size: int) -> bytes | None:
    """The root the source's own tiles give (none of the mirror's), or None if they cannot:
    tells a rewritten log (self-consistent, another history) from altered tiles."""
    try:
        return TileHashes(size, lambda t: source.get(tile_path(*t), t[2] * merkle.HASH_SIZE)).root()
    except (TileError, SourceUnavailable, MirrorError):
        return None


def _fetch_entries(source: Source, dest: Path, staging: Path, hashes: TileHashes) -> list[str]:
    """Entry bundles the mirror lacks, each entry checked against its level-0 tile hash."""
    fetched = []
    for level, index, width in tiles_for_size(hashes.size):
        if level != 0:
            continue
        path = entries_path(index, width)
        if (dest / path).exists():
            continue
        data = source.get(path, MAX_BUNDLE_BYTES)
        leaves = hashes.tile(0, index)
        for i, entry in enumerate(decode_entry_bundle(data, width)):
            if merkle.leaf_hash(entry) != leaves[i]:
                raise MirrorError(f"entry {index * TILE_WIDTH + i} in {path} is not the logged one")
        _put(staging / path, data)
        fetched.append(path)
    return fetched


def _open(note: bytes, verifier: Ed25519Verifier, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, verifier)
    except (NoteError, CheckpointError) as exc:
        raise MirrorError(
            f"{what} does not verify with the log key {verifier.name}: {exc} "
            "(a wrong --log-key, or a checkpoint someone else signed)"
        ) from None


def _put(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


__all__ = [
    "DirectorySource",
    "HttpSource",
    "MirrorError",
    "MirrorResult",
    "SourceUnavailable",
    "mirror_once",
    "source_for",
]
