"""The completeness check (docs/bundle.md §5 step 8): whether the bundle holds every gateway of
its scope and every message of the period, as the exporter's signed claim (§4a) says."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Sequence
from typing import NamedTuple

from fieldproof.formats.bundle import Bundle, BundleError, Entry, in_scope, parse_claim_note
from fieldproof.formats.checkpoint import Checkpoint
from fieldproof.formats.note import Ed25519Verifier, NoteError, open_note
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.wire import open_message
from inspector.batch import _claimed_seq
from inspector.findings import FindingCode
from inspector.results import (
    CompletenessCheck,
    Findings,
    GatewaySummary,
    VerifiedMessage,
    fmt_time,
)

__all__ = ["Held", "check_completeness", "claimed_seq_of"]


class Held(NamedTuple):
    """A message entry the bundle carries, as the completeness check sees it."""

    seq: int
    log_index: int
    #: the verified message, when its signature checked out
    message: VerifiedMessage | None
    #: whether its inclusion proof into a valid checkpoint holds
    proven: bool


def claimed_seq_of(data: bytes) -> int | None:
    """The seq a message claims, unverified (its signature failed or its key is unknown): only
    to count it as present for the completeness check."""
    try:
        return _claimed_seq(open_message(data)[1].payload)
    except Exception:  # hostile bytes: not a message, so nothing to count
        return None


def check_completeness(
    bundle: Bundle,
    verifier: Ed25519Verifier | None,
    opened: Sequence[Checkpoint | None],
    present: dict[str, list[Held]],
    summary_for: Callable[[str], GatewaySummary],
    out: Findings,
    included: Callable[[Entry], bool],
) -> CompletenessCheck:
    """docs/bundle.md §5 step 8: does the bundle hold every gateway of its scope and every
    message of the period, as the exporter's signed completeness claim (§4a) says, or is
    something withheld? Findings: ``completeness_unproven`` (no claim), ``completeness_claim_
    invalid``, ``registry_withheld``, ``gateway_withheld``, ``period_cut``,
    ``messages_withheld``.

    ``present``: per gateway, every message entry the bundle carries; ``included``: whether a
    registry entry's inclusion proof holds. What the bundle carries counts as held (an entry
    whose proof or signature fails is its own error); what it *proves* is held against the
    claim, which it must not exceed."""
    c = bundle.completeness
    check = CompletenessCheck()
    if c is None:
        check.detail = (
            "this bundle is of format version 1, which carries no completeness claim"
            if bundle.version == 1 else "this bundle has no checkpoint, so no completeness claim")
        out.add(FindingCode.COMPLETENESS_UNPROVEN,
                f"{check.detail}: nothing shows that it holds every gateway of the scope and "
                "every message of the period — gateways or messages may have been left out. "
                "Ask the operator for a new export (fieldproof export writes format version 2)")
        return check
    check.size, check.registry_claimed = c.size, c.registry
    check.gateways = [g.gateway for g in c.gateways]

    def invalid(why: str) -> CompletenessCheck:
        check.status, check.detail = "invalid", why
        out.add(FindingCode.COMPLETENESS_CLAIM_INVALID,
                f"the bundle's completeness claim does not hold: {why}. Without it nothing "
                "shows the bundle is complete")
        return check

    if verifier is None:
        return invalid("there is no usable log key to check its signature with")
    try:
        note = parse_claim_note(open_note(c.note, [verifier]).text)
    except (NoteError, BundleError) as exc:
        return invalid(f"its note is not a completeness claim signed by the log key ({exc})")
    if note.origin != bundle.origin:
        return invalid(f"it is signed for log {note.origin!r}, not {bundle.origin!r}")
    if note.claim_hash != hashlib.sha256(c.claim).digest():
        return invalid("the signed note does not commit to the claim the bundle carries "
                       "(its hash differs): the claim was changed after it was signed")
    if note.size != c.size:
        return invalid(f"the note speaks of tree size {note.size}, the claim of {c.size}")
    if c.scope != bundle.scope:
        return invalid("it was made for another scope or period than the bundle says "
                       f"(farm {c.scope.farm!r}, field {c.scope.field!r}, gateway "
                       f"{c.scope.gateway!r}, {fmt_time(c.scope.start)} – "
                       f"{fmt_time(c.scope.end)})")
    head = next((cp for cp in opened if cp is not None and cp.size == c.size), None)
    if head is None:
        return invalid(f"the bundle holds no valid checkpoint of tree size {c.size}, which the "
                       "claim speaks of")
    if head.root_hash != note.root:
        return invalid(f"it names root {note.root.hex()} at tree size {c.size}, the bundle's "
                       f"checkpoint of that size has root {head.root_hash.hex()}")

    withheld: list[str] = []
    # the scope's gateways below the claim's size: those an enroll event below it puts in the
    # scope (§4a); the claim counts their registry events there, and only theirs
    below: list[tuple[Entry, str | None]] = []
    enrolled: dict[str, int] = {}
    for e in bundle.registry:
        if e.index >= c.size:
            continue
        obj = parse_registry_event(e.data)
        gw = obj.get("gw") if obj is not None else None
        below.append((e, gw if isinstance(gw, str) else None))
        if isinstance(gw, str) and obj is not None and in_scope(bundle.scope, gw, obj):
            enrolled.setdefault(gw, e.index)
    # 1. every registry event of the scope's gateways below the claim's size, proven
    held = [e for e, gw in below if gw is not None and gw in enrolled]
    check.registry_held = len(held)
    proven = sum(1 for e in held if included(e))
    if proven > c.registry:
        return invalid(f"the bundle proves {proven} registry events of this scope's gateways "
                       f"below tree size {c.size}, the claim counts {c.registry}: the signed "
                       "claim is false")
    if len(held) < c.registry:
        withheld.append("registry events")
        out.add(FindingCode.REGISTRY_WITHHELD,
                f"the log held {c.registry} registry event(s) of this scope's gateways below "
                f"tree size {c.size} (the exporter's signed claim), the bundle carries "
                f"{len(held)}: {c.registry - len(held)} were left out, so gateways of the "
                "scope, key changes or revocations may be hidden")
    # 2. the scope's gateways: every one enrolled in the scope has a claim
    claims = {g.gateway: g for g in c.gateways}
    for gw, index in sorted(enrolled.items()):
        if gw not in claims:
            withheld.append(gw)
            summary_for(gw).completeness = "withheld"
            out.add(FindingCode.GATEWAY_WITHHELD,
                    f"{gw} is enrolled in this scope (registry event at log index {index}), "
                    "but the exporter's claim says nothing of its messages: its evidence was "
                    "left out", gw)
    for gw in claims:
        if gw not in enrolled and len(held) == c.registry:
            return invalid(f"it lists {gw}, which no registry event below tree size {c.size} "
                           "enrolls in this scope")
    # 3. per gateway: the run from just before to just after the period, all of it
    s = bundle.scope
    for gw, claim in sorted(claims.items()):
        g = summary_for(gw)
        g.claim = claim
        msgs = sorted(x for x in present.get(gw, []) if x.log_index < c.size)
        sure = [x for x in msgs if x.proven]
        if claim.first_seq is None or claim.latest_seq is None or claim.from_seq is None \
                or claim.to_seq is None:
            if sure:
                return invalid(f"it says the log holds no message of {gw} below tree size "
                               f"{c.size}, and the bundle proves {len(sure)}")
            g.completeness = "complete"
            continue
        lo, hi = claim.from_seq, claim.to_seq
        if any(x.seq < claim.first_seq or x.seq > claim.latest_seq for x in sure):
            return invalid(f"it says {gw}'s messages below tree size {c.size} have seq "
                           f"{claim.first_seq}–{claim.latest_seq}, and the bundle proves others")
        run = [x for x in msgs if lo <= x.seq <= hi]
        # the claim counts seqs: a seq the bundle holds twice (duplicate_seq) counts once, so
        # a twin can neither make an honest claim false nor stand in for a withheld message
        shown = len({x.seq for x in run if x.proven})
        if shown > claim.count:
            return invalid(f"it counts {claim.count} message(s) of {gw} in seq {lo}–{hi}, the "
                           f"bundle proves {shown}")
        what = f"{claim.count} message(s) of {gw} in seq {lo}–{hi}"
        if not run:
            withheld.append(gw)
            g.completeness = "withheld"
            out.add(FindingCode.GATEWAY_WITHHELD,
                    f"the log holds {what} (the exporter's signed claim), the bundle none: the "
                    "gateway's evidence for the period was left out", gw)
            continue
        cuts: dict[str, str] = {}
        first_seq, first = run[0].seq, run[0].message
        last_seq, last = run[-1].seq, run[-1].message
        # the ends must lie outside the period, unless nothing comes before / after them; a
        # message whose signature failed says nothing about time (and is its own finding)
        if first_seq > lo:
            cuts["start"] = (f"its messages start at seq {first_seq}"
                             + (f" ({fmt_time(first.first_time)})" if first else "")
                             + f", the log's run at seq {lo}")
        elif lo != claim.first_seq and first is not None and first.last_time >= s.start:
            cuts["start"] = (f"its run starts at seq {lo}, sampled {fmt_time(first.first_time)} "
                             "inside the period, while the log holds earlier messages (from seq "
                             f"{claim.first_seq})")
        if last_seq < hi:
            cuts["end"] = (f"its messages end at seq {last_seq}"
                           + (f" ({fmt_time(last.last_time)})" if last else "")
                           + f", the log's run at seq {hi}")
        elif hi != claim.latest_seq and last is not None and last.first_time <= s.end:
            cuts["end"] = (f"its run ends at seq {hi}, sampled {fmt_time(last.last_time)} "
                           "inside the period, while the log holds later messages (to seq "
                           f"{claim.latest_seq})")
        seqs = len({x.seq for x in run})
        missing = max(0, claim.count - seqs)
        if cuts:
            withheld.append(gw)
            g.completeness = {"start": "head cut", "end": "tail cut"}.get(
                next(iter(cuts)) if len(cuts) == 1 else "", "head and tail cut")
            out.add(FindingCode.PERIOD_CUT,
                    f"{gw}'s evidence does not reach the period's {' and '.join(cuts)}: "
                    + "; ".join(cuts.values())
                    + (f"; {missing} of the {what} are not in the bundle" if missing else "")
                    + ". What happened there is withheld", gw)
        elif missing:
            withheld.append(gw)
            g.completeness = "messages withheld"
            gaps = [f"{a.seq + 1}–{b.seq - 1}" for a, b in itertools.pairwise(run)
                    if b.seq > a.seq + 1]
            out.add(FindingCode.MESSAGES_WITHHELD,
                    f"the log holds {what} (the exporter's signed claim), the bundle {seqs}: "
                    f"{missing} were left out"
                    + (f" (among the missing seq {', '.join(gaps[:5])}"
                       + (", …" if len(gaps) > 5 else "") + ")" if gaps else ""), gw)
        else:
            g.completeness = "complete"
    if withheld:
        check.status = "withheld"
        check.detail = ("evidence was left out: " + ", ".join(dict.fromkeys(withheld))
                        + " (see the findings)")
    else:
        check.status = "complete"
    return check
