"""Step 2 of the verification: every checkpoint's signature with the log key, the consistency
proof between each pair of successive checkpoints (a failure means history was rewritten
behind a checkpoint), and the checkpoints the inspector already trusts (``--known-checkpoint``),
which must be among them and consistent with all."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from fieldproof.formats import merkle
from fieldproof.formats.bundle import Bundle, Entry
from fieldproof.formats.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
)
from fieldproof.formats.note import Ed25519Verifier, NoteError
from inspector.batch import inclusion_problem
from inspector.findings import FindingCode
from inspector.results import AnchorCheck, CheckpointSummary, Findings, KnownCheckpoint

__all__ = ["Placement", "check_checkpoints", "claimed_checkpoint", "inclusion", "link_known"]


def claimed_checkpoint(note: bytes) -> Checkpoint | None:
    """The checkpoint body a note claims, unverified (only to report and place entries)."""
    try:
        text = note.decode("utf-8")
        split = text.rfind("\n\n")
        return parse_checkpoint(text[: split + 1]) if split >= 0 else None
    except (UnicodeDecodeError, CheckpointError, ValueError):
        return None


def inclusion(entry: Entry, size: int, root: bytes, hashes: Any) -> str | None:
    """None if ``entry`` is leaf ``entry.index`` of the tree (size, root), else why not."""
    return inclusion_problem(entry.index, entry.data, size, root, hashes)


def link_known(number: int, note: bytes, verifier: Ed25519Verifier | None, origin: str,
               cps: Sequence[CheckpointSummary], opened: Sequence[Checkpoint | None],
               out: Findings) -> KnownCheckpoint:
    """How the bundle relates to a checkpoint the inspector trusts (docs/bundle.md §5 step 3).

    Linked only through the bundle's own chain of consistency proofs: the bundle must hold a
    checkpoint of the same size and root, and every valid checkpoint of the bundle must be in
    that checkpoint's segment (linked to it by consistency proofs, earlier or later)."""
    claimed = claimed_checkpoint(note)
    k = KnownCheckpoint(number, claimed.size if claimed else None,
                        claimed.root_hash.hex() if claimed else None)
    what = f"known checkpoint #{number}"
    if verifier is None:
        k.detail = "there is no usable log key to check it with"
        out.add(FindingCode.KNOWN_CHECKPOINT_INVALID, f"{what} cannot be checked: {k.detail}")
        return k
    try:
        cp = open_checkpoint(note, verifier, origin=origin)
    except (NoteError, CheckpointError) as exc:
        k.detail = str(exc)
        out.add(FindingCode.KNOWN_CHECKPOINT_INVALID,
                f"{what} is not a checkpoint of log {origin!r} signed by the log key "
                f"({exc}): check you passed the right file, and the right --log-key")
        return k
    k.size, k.root = cp.size, cp.root_hash.hex()
    what = f"known checkpoint #{number} (size {cp.size}, root {cp.root_hash.hex()[:16]}…)"
    pos = next((p for p, c in enumerate(opened) if c is not None and c.size == cp.size), None)
    if pos is None:
        k.status = "unlinked"
        k.detail = "the bundle holds no checkpoint of this size"
        out.add(FindingCode.KNOWN_CHECKPOINT_UNLINKED,
                f"the bundle cannot be linked to {what}: it holds no checkpoint of that size, "
                "so no consistency proof shows its history extends the one you trust (it may "
                "rest on a rewritten log). Ask the operator for a bundle made with "
                "'fieldproof export --since-checkpoint FILE'")
        return k
    k.position = pos
    mine = opened[pos]
    assert mine is not None
    if mine.root_hash != cp.root_hash:
        k.status = "conflict"
        k.detail = f"checkpoint {pos} of the bundle has root {mine.root_hash.hex()}"
        out.add(FindingCode.KNOWN_CHECKPOINT_CONFLICT,
                f"checkpoint {pos} of the bundle has size {cp.size} like {what}, but root "
                f"{mine.root_hash.hex()} instead of {cp.root_hash.hex()}: both are signed by "
                "the log key, so the log was rewritten or forked behind the checkpoint you "
                "trust")
        return k
    apart = [c for c, o in zip(cps, opened, strict=True)
             if o is not None and c.segment != cps[pos].segment]
    if apart:
        k.status = "conflict"
        k.detail = "checkpoint(s) " + ", ".join(str(c.position) for c in apart) + \
            " of the bundle are not consistent with it"
        out.add(FindingCode.KNOWN_CHECKPOINT_CONFLICT,
                f"checkpoint(s) {', '.join(f'{c.position} (size {c.size})' for c in apart)} of "
                f"the bundle are not proven consistent with {what}: the history they sign "
                "differs from the one you trust (rewritten or forked)")
        return k
    k.status = "linked"
    k.detail = f"checkpoint {pos} of the bundle"
    return k


def check_checkpoints(
    bundle: Bundle, verifier: Ed25519Verifier | None, out: Findings,
) -> tuple[list[CheckpointSummary], list[Checkpoint | None]]:
    """Each checkpoint's signature and order, then the consistency proofs between successive
    ones, which cut the list into segments (a break means history was rewritten between them).
    Returns the summaries and, beside each, the checkpoint when it is valid (else None)."""
    cps: list[CheckpointSummary] = []
    opened: list[Checkpoint | None] = []
    last_size = -1
    for pos, c in enumerate(bundle.checkpoints):
        claimed = claimed_checkpoint(c.note)
        summary = CheckpointSummary(
            pos, claimed.size if claimed else None,
            claimed.root_hash.hex() if claimed else None, False,
            anchors=[AnchorCheck(a) for a in c.anchors], note=c.note)
        cp: Checkpoint | None = None
        if verifier is None:
            summary.problem = "no usable log key"
        else:
            try:
                cp = open_checkpoint(c.note, verifier, origin=bundle.origin)
            except (NoteError, CheckpointError) as exc:
                summary.problem = str(exc)
                out.add(FindingCode.CHECKPOINT_INVALID,
                        f"checkpoint {pos} (claims size {summary.size}) is not a valid signed "
                        f"checkpoint of this log: {exc}")
        if cp is not None and cp.size <= last_size:
            summary.problem = f"size {cp.size} does not grow past {last_size}"
            out.add(FindingCode.CHECKPOINT_ORDER,
                    f"checkpoint {pos} has size {cp.size} after size {last_size}: checkpoints "
                    "must be listed with strictly growing sizes")
            cp = None
        if cp is not None:
            last_size = cp.size
            summary.valid = True
        opened.append(cp)
        cps.append(summary)
    segment = 0
    for pos in range(len(cps)):
        if pos:
            a, b = opened[pos - 1], opened[pos]
            linked = False
            if a is not None and b is not None:
                try:
                    merkle.verify_consistency(a.size, b.size, list(bundle.consistency[pos - 1]),
                                              a.root_hash, b.root_hash)
                    linked = True
                except merkle.ProofError as exc:
                    out.add(FindingCode.CONSISTENCY_FAILED,
                            f"checkpoint {pos} (size {b.size}) does not extend checkpoint "
                            f"{pos - 1} (size {a.size}): {exc}. The log was rewritten or "
                            "forked between them")
            cps[pos - 1].consistent_with_next = linked
            if not linked:
                segment += 1
        cps[pos].segment = segment
    return cps, opened


class Placement:
    """Where each log entry is proven: into the first checkpoint of the bundle larger than its
    index, the one whose anchor bounds it."""

    def __init__(self, bundle: Bundle, cps: Sequence[CheckpointSummary],
                 opened: Sequence[Checkpoint | None]) -> None:
        self.opened = opened
        self.hashes = bundle.hashes
        #: (size, root) of each valid checkpoint, None for an invalid one
        self.heads = [(cp.size, cp.root_hash) if cp is not None else None for cp in opened]
        self.sizes = [c.size if c.size is not None else -1 for c in cps]
        # a placed entry needs a strictly growing list; a bad order is already an error
        self.monotone = all(b > a for a, b in itertools.pairwise(self.sizes))

    def place(self, index: int) -> int | None:
        """The position of the checkpoint that proves log index ``index``, None if none does."""
        sizes = self.sizes
        if self.monotone:
            pos = bisect.bisect_right(sizes, index)
            return pos if pos < len(sizes) else None
        return next((p for p, sz in enumerate(sizes) if sz > index), None)

    def quietly_included(self, entry: Entry) -> bool:
        """Whether ``entry``'s inclusion proof holds, without a finding either way."""
        pos = self.place(entry.index)
        cp = self.opened[pos] if pos is not None else None
        return cp is not None and inclusion(entry, cp.size, cp.root_hash, self.hashes) is None

    def prove(self, entry: Entry, what: str, gateway: str | None,
              later: Callable[..., None]) -> bool:
        """Whether an entry is included; an unprovable entry is a finding (given to ``later``)."""
        pos = self.place(entry.index)
        if pos is None:
            return False
        cp = self.opened[pos]
        if cp is None:
            later(FindingCode.INCLUSION_FAILED,
                  f"{what} at log index {entry.index} is proven into checkpoint {pos}, which "
                  "is not valid", gateway)
            return False
        why = inclusion(entry, cp.size, cp.root_hash, self.hashes)
        if why is not None:
            later(FindingCode.INCLUSION_FAILED,
                  f"{what} at log index {entry.index} is not in the log at checkpoint {pos} "
                  f"(size {cp.size}): {why}", gateway)
            return False
        return True
