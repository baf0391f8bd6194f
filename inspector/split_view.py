"""Split views caught: the bundle's checkpoints against the newest ones the inspector can get
from outside the bundle (docs/bundle.md §5 step 3a).

A log key can sign two different trees of one size, one shown to this inspector and one to
everybody else (a split view). Inside one bundle nothing shows it; an outside view does:

* a **mirror** (``--mirror DIR|URL``, C2SP tlog-tiles as ``fieldproof log mirror`` keeps them):
  its ``checkpoint`` must verify with the log key and its hash tiles must rebuild the root it
  signs; then every signed checkpoint no larger than the mirror is checked with a consistency
  proof computed from the mirror's tiles (so a bundle older than the mirror is checked in full),
  and one of the mirror's size must have its root;
* a **witness-cosigned checkpoint** (``--witness-checkpoint FILE``): a note a witness cosigned,
  as another reader of the log holds it. C2SP tlog-witness serves no checkpoint over GET
  (litewitness has only ``POST /add-checkpoint``), so witnesses' views reach the inspector as
  files; the cosigned notes inside the bundle are its own checkpoints, not outside views;
* the **known checkpoints** (``--known-checkpoint``), compared here with the other outside
  views (their link to the bundle is :func:`inspector.checkpoint_check.link_known`'s).

Two different roots signed for one size by any two of them (with at least one outside view
among them), or a tree of a mirror that does not extend a smaller signed one, is ``log_fork``,
naming both sources. An outside view that shares no size with anything and is larger than every
checkpoint it could be proven against is ``outside_checkpoint_unlinked`` (a warning: nothing was
compared); one that is not this log's signed checkpoint, or a mirror that cannot be read or whose
tiles do not rebuild its root, is ``outside_checkpoint_invalid``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fieldproof.errors import FieldproofError
from fieldproof.formats import merkle
from fieldproof.formats.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from fieldproof.formats.note import Ed25519Verifier, NoteError
from fieldproof.formats.tiles import TileError, TileHashes, tile_path
from inspector.findings import FindingCode
from inspector.mirror import CHECKPOINT, MAX_CHECKPOINT_BYTES, Source, source_for
from inspector.policy import Policy
from inspector.results import Findings

__all__ = [
    "OutsideView",
    "Sighting",
    "TreeViews",
    "check_split_views",
    "opened_known",
    "outside_views",
    "read_mirror",
    "read_outside_note",
]

Kind = Literal["bundle", "known", "mirror", "witness"]
Status = Literal["consistent", "fork", "unlinked", "invalid"]

#: mirrors and witness checkpoints one verification reads at most
MAX_OUTSIDE_VIEWS = 64


@dataclass(frozen=True)
class Sighting:
    """One signed (size, root) of the log and where it was seen."""

    source: str
    kind: Kind
    size: int
    root: bytes


@dataclass
class OutsideView:
    """A checkpoint from outside the bundle, and (for a mirror) the tiles behind it.
    ``checkpoint`` is None when the view cannot be used (``problem`` says why)."""

    source: str
    kind: Kind
    checkpoint: Checkpoint | None = None
    note: bytes = b""
    tiles: TileHashes | None = None
    problem: str = ""
    #: with ``--policy``: the policy witnesses whose cosignature on it verifies
    cosigned_by: tuple[str, ...] = ()
    status: Status = "invalid"
    detail: str = ""

    def label(self) -> str:
        by = f", cosigned by {', '.join(self.cosigned_by)}" if self.cosigned_by else ""
        return f"{self.source}{by}"

    def to_json(self) -> dict[str, Any]:
        cp = self.checkpoint
        return {"source": self.source, "kind": self.kind, "status": self.status,
                "size": cp.size if cp else None, "root": cp.root_hash.hex() if cp else None,
                "cosigned_by": list(self.cosigned_by), "detail": self.detail or self.problem}


def read_outside_note(source: str, kind: Kind, note: bytes, verifier: Ed25519Verifier | None,
                      origin: str) -> OutsideView:
    """A checkpoint note from outside the bundle, opened with the log key and origin."""
    view = OutsideView(source, kind, note=note)
    if verifier is None:
        view.problem = "there is no usable log key to check it with"
        return view
    try:
        view.checkpoint = open_checkpoint(note, verifier, origin=origin)
    except (NoteError, CheckpointError) as exc:
        view.problem = (f"not a checkpoint of log {origin!r} signed by the log key ({exc}): "
                        "check the file, and --log-key")
    return view


def read_mirror(location: str, verifier: Ed25519Verifier | None, origin: str,
                source: Source | None = None) -> OutsideView:
    """A mirror's (or the log's own public) checkpoint and tiles, checked: the checkpoint
    verifies with the log key and the tiles rebuild its root. Tiles are read as they are
    needed, and each at most once."""
    src = source if source is not None else source_for(location)
    view = OutsideView(f"mirror {location}", "mirror")
    try:
        note = src.get(CHECKPOINT, MAX_CHECKPOINT_BYTES)
    except FieldproofError as exc:
        view.problem = f"its checkpoint cannot be read: {exc}"
        return view
    got = read_outside_note(view.source, "mirror", note, verifier, origin)
    if got.checkpoint is None:
        return got
    cp = got.checkpoint
    tiles = TileHashes(cp.size, lambda t: src.get(tile_path(*t), t[2] * merkle.HASH_SIZE))
    try:
        rebuilt = tiles.root()
    except (TileError, FieldproofError) as exc:
        got.problem = f"its tiles cannot be read: {exc}"
        got.checkpoint = None
        return got
    if rebuilt != cp.root_hash:
        got.problem = (f"its tiles do not rebuild the root its checkpoint signs for {cp.size} "
                       "entries: the tiles were altered or are not this log's")
        got.checkpoint = None
        return got
    got.tiles = tiles
    return got


def outside_views(
    mirrors: Sequence[str], witness_checkpoints: Sequence[tuple[str, bytes]],
    verifier: Ed25519Verifier | None, origin: str, policy: Policy | None = None,
) -> list[OutsideView]:
    """Read every ``--mirror`` and ``--witness-checkpoint`` (at most
    :data:`MAX_OUTSIDE_VIEWS`); with a policy, name the policy witnesses that cosigned each."""
    views = [read_mirror(m, verifier, origin) for m in mirrors[:MAX_OUTSIDE_VIEWS]]
    views += [read_outside_note(f"witness checkpoint {name}", "witness", note, verifier, origin)
              for name, note in witness_checkpoints[:MAX_OUTSIDE_VIEWS]]
    if policy is not None:
        for v in views:
            note = v.note
            if v.checkpoint is not None and note:
                v.cosigned_by = policy.evaluate(note).signed
    return views


def opened_known(known: Sequence[tuple[int, bytes]], verifier: Ed25519Verifier | None,
                 origin: str) -> list[tuple[int, Checkpoint | None]]:
    """The known checkpoints that open with the log key (the others are reported by
    :func:`inspector.checkpoint_check.link_known`)."""
    out: list[tuple[int, Checkpoint | None]] = []
    for n, note in known:
        cp = None
        if verifier is not None:
            try:
                cp = open_checkpoint(note, verifier, origin=origin)
            except (NoteError, CheckpointError):
                cp = None
        out.append((n, cp))
    return out


@dataclass
class TreeViews:
    """Every signed (size, root) known in one verification, and the mirrors' tiles: what the
    anchors found on chain are compared with (:mod:`inspector.anchor_scan`)."""

    sightings: list[Sighting] = field(default_factory=list)
    views: list[OutsideView] = field(default_factory=list)

    def roots_for(self, size: int) -> list[tuple[str, bytes]]:
        """(source, root) of every view that knows the log's root at ``size``: a signed
        checkpoint of that size, or a mirror at least that large (from its tiles)."""
        out = [(s.source, s.root) for s in self.sightings if s.size == size]
        for v in self.views:
            cp = v.checkpoint
            if v.tiles is not None and cp is not None and size < cp.size:
                try:
                    out.append((f"{v.source} (its tiles)", v.tiles.root_of(size)))
                except (TileError, FieldproofError):
                    continue
        return out


def check_split_views(
    bundle_checkpoints: Sequence[tuple[int, Checkpoint | None]],
    known: Sequence[tuple[int, Checkpoint | None]],
    views: Sequence[OutsideView],
    out: Findings,
) -> TreeViews:
    """Compare the bundle's valid checkpoints (position, checkpoint), the known checkpoints
    (number, checkpoint when it opened) and the outside views; each view's ``status`` and
    ``detail`` say what came of it. Returns every sighting, for the anchors' check."""
    sightings = [Sighting(f"bundle checkpoint {pos}", "bundle", cp.size, cp.root_hash)
                 for pos, cp in bundle_checkpoints if cp is not None]
    sightings += [Sighting(f"known checkpoint #{n}", "known", cp.size, cp.root_hash)
                  for n, cp in known if cp is not None]
    usable: list[OutsideView] = []
    for v in views:
        if v.checkpoint is None:
            v.status = "invalid"
            out.add(FindingCode.OUTSIDE_CHECKPOINT_INVALID,
                    f"{v.source} cannot be used to look for a split view: {v.problem}")
            continue
        usable.append(v)
        sightings.append(Sighting(v.label(), v.kind, v.checkpoint.size, v.checkpoint.root_hash))
    compared: dict[str, int] = {}
    forked: set[str] = set()
    broken: set[str] = set()

    # 1. one size, two roots
    by_size: dict[int, dict[bytes, list[Sighting]]] = {}
    for s in sightings:
        by_size.setdefault(s.size, {}).setdefault(s.root, []).append(s)
    for size, roots in sorted(by_size.items()):
        every = [s for group in roots.values() for s in group]
        outside = [s for s in every if s.kind in ("mirror", "witness")]
        for s in outside:
            compared[s.source] = compared.get(s.source, 0) + len(every) - 1
        if len(roots) < 2 or not outside:
            continue
        forked.update(s.source for s in outside)
        named = "; ".join(
            f"root {root.hex()} by {', '.join(s.source for s in group)}"
            for root, group in roots.items())
        out.add(FindingCode.LOG_FORK,
                f"the log key signed two different trees of {size} entries — {named}. The "
                "operator showed different histories to different readers (a split view): "
                "keep both checkpoints as evidence")

    # 2. a mirror's tree must extend every smaller signed tree
    for v in usable:
        cp, tiles = v.checkpoint, v.tiles
        if cp is None or tiles is None:
            continue
        for s in sightings:
            if s.size >= cp.size or s.source == v.label() or s.size == 0:
                continue
            try:
                proof = merkle.stored_consistency_proof(s.size, cp.size, tiles)
            except (TileError, FieldproofError, LookupError) as exc:
                v.problem = f"its tiles cannot give a consistency proof: {exc}"
                out.add(FindingCode.OUTSIDE_CHECKPOINT_INVALID,
                        f"{v.source} cannot be used to look for a split view: {v.problem}")
                broken.add(v.label())
                break
            for who in (v.label(), s.source):
                compared[who] = compared.get(who, 0) + 1
            try:
                merkle.verify_consistency(s.size, cp.size, proof, s.root, cp.root_hash)
            except merkle.ProofError:
                forked.update((v.label(), s.source))
                out.add(FindingCode.LOG_FORK,
                        f"{v.label()} holds a signed tree of {cp.size} entries that does not "
                        f"extend the tree of {s.size} entries signed in {s.source} (root "
                        f"{s.root.hex()}; the mirror's tiles give "
                        f"{_root_of(tiles, s.size)} for that size): the log key signed two "
                        "histories (a split view, or a rewrite)")

    for v in usable:
        cp = v.checkpoint
        assert cp is not None
        if v.label() in broken:
            v.status, v.detail = "invalid", v.problem
        elif v.label() in forked:
            v.status, v.detail = "fork", "two different histories signed (see log_fork)"
        elif compared.get(v.label()):
            v.status = "consistent"
            v.detail = f"compared with {compared[v.label()]} other signed checkpoint(s)"
        else:
            v.status = "unlinked"
            v.detail = "nothing to compare it with"
            out.add(FindingCode.OUTSIDE_CHECKPOINT_UNLINKED,
                    f"{v.label()} (size {cp.size}) could not be compared with the bundle: the "
                    f"bundle holds no checkpoint of {cp.size} entries and "
                    + ("nothing smaller" if v.tiles is not None else
                       "a lone checkpoint cannot prove a tree of another size")
                    + ". Pass a mirror at least as large (--mirror), or ask for a bundle made "
                    "with 'fieldproof export --since-checkpoint FILE' with this checkpoint")
    # 3. the bundle's checkpoints above a view's size are linked to it only through one of
    # exactly its size: else both may extend a smaller common tree and differ after it
    bundle_sizes = {s.size for s in sightings if s.kind == "bundle"}
    for v in usable:
        cp = v.checkpoint
        assert cp is not None
        above = sorted(n for n in bundle_sizes if n > cp.size)
        if v.status != "consistent" or not above or cp.size in bundle_sizes:
            continue
        v.detail += f"; the bundle's checkpoints of {', '.join(map(str, above))} entries are " \
            "not linked to it"
        out.add(FindingCode.OUTSIDE_CHECKPOINT_UNLINKED,
                f"the bundle's checkpoint(s) of {', '.join(map(str, above))} entries could not "
                f"be compared with {v.label()} (size {cp.size}): the bundle holds no checkpoint "
                "of that size to prove they extend it. Ask for a bundle made with 'fieldproof "
                "export --since-checkpoint FILE' with that checkpoint, or use a newer mirror")
    return TreeViews(sightings, list(views))


def _root_of(tiles: TileHashes, size: int) -> str:
    try:
        return tiles.root_of(size).hex()
    except (TileError, FieldproofError):
        return "(unreadable)"
