"""Step 4, second half: every message's kid, key, inclusion proof and COSE signature
(checked in :mod:`inspector.batch`, over all cores for large bundles), turned into verified
messages and, for whatever did not check out, findings in the order of docs/bundle.md §5."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from fieldproof.formats.bundle import Bundle, Entry
from inspector.batch import (
    BAD_SIGNATURE,
    MALFORMED,
    NOT_A_MESSAGE,
    OK,
    UNKNOWN_KEY,
    Context,
    Job,
    KeyEvent,
    MessageChecks,
    Result,
)
from inspector.checkpoint_check import Placement
from inspector.completeness import Held, claimed_seq_of
from inspector.findings import FindingCode
from inspector.results import MAX_FINDINGS_PER_CODE, Findings, VerifiedMessage, VerifiedReading

__all__ = ["Checked", "Odd", "collect_messages", "held_messages", "report_messages",
           "start_message_checks"]

#: a message that did not simply check out: its entry, the checkpoint it is placed in, the answer
Odd = tuple[Entry, int | None, Result]


class Checked:
    """What the message checks gave: the verified messages (log order), the others, and how
    many messages each gateway has in the bundle."""

    def __init__(self) -> None:
        self.verified: list[VerifiedMessage] = []
        self.odd: list[Odd] = []
        self.counts: Counter[str] = Counter()


def start_message_checks(bundle: Bundle, where: Placement,
                         timeline: dict[str, list[KeyEvent]],
                         workers: int | None) -> tuple[MessageChecks, list[int | None]]:
    """Start checking every message (the workers run while the chain nodes are asked);
    returns the running checks and the checkpoint each message is placed in."""
    jobs: list[Job] = []
    places: list[int | None] = []
    heads = where.heads
    for entry in bundle.messages:
        at = where.place(entry.index)
        places.append(at)
        jobs.append((entry.index, entry.data, at if at is not None and heads[at] else -1))
    return MessageChecks(jobs, Context(bundle.hashes, heads, timeline), workers), places


def collect_messages(bundle: Bundle, checks: MessageChecks, places: Sequence[int | None],
                     where: Placement, anchor_at: Sequence[int | None]) -> Checked:
    """The answers, in log order: the common case (everything checks out) becomes a verified
    message at once; anything else is kept for :func:`report_messages`."""
    heads = where.heads
    got = Checked()
    verified, odd, counts = got.verified, got.odd, got.counts
    failed: Counter[tuple[int, str | None]] = Counter()
    make = VerifiedReading._make
    n = 0
    for chunk in checks:
        for res in chunk:
            entry, at = bundle.messages[n], places[n]
            n += 1
            kind, gw, value, why, revoked = res
            if gw is not None:
                counts[gw] += 1
            if kind == OK and why is None and revoked is None and at is not None \
                    and heads[at] is not None:
                seq, boot, raw = value
                bound = anchor_at[at]
                verified.append(VerifiedMessage(
                    entry.index, gw, seq, boot,  # type: ignore[arg-type]
                    tuple(map(make, raw)), bound is not None, bound))
            else:
                # past the findings kept in full, only the count of a failure matters:
                # drop its text, so a bundle of 10^6 bad messages does not keep 10^6
                # error strings (a hostile bundle's cost stays a multiple of its size)
                if kind in (NOT_A_MESSAGE, BAD_SIGNATURE, MALFORMED):
                    failed[(kind, gw)] += 1
                    if failed[(kind, gw)] > MAX_FINDINGS_PER_CODE:
                        res = (kind, gw, "", why, revoked)
                if why is not None:
                    failed[(-1, gw)] += 1
                    if failed[(-1, gw)] > MAX_FINDINGS_PER_CODE:
                        res = (res[0], gw, res[2], "", revoked)
                odd.append((entry, at, res))
    return got


def report_messages(got: Checked, where: Placement, timeline: dict[str, list[KeyEvent]],
                    out: Findings) -> Counter[str]:
    """Findings for the messages that did not check out; those signed by their enrolled key
    but in no checkpoint yet join the verified ones (not anchored). Returns how many of those
    each gateway has."""
    heads = where.heads
    verified = got.verified
    make = VerifiedReading._make
    unproven: Counter[str] = Counter()
    for entry, at, (kind, gw, value, _, revoked) in got.odd:
        if kind == NOT_A_MESSAGE:
            out.add(FindingCode.MESSAGE_MALFORMED,
                    f"message at log index {entry.index} is not a fieldproof message: "
                    f"{value}")
            continue
        if at is not None and heads[at] is None:
            out.add(FindingCode.INCLUSION_FAILED,
                    f"message of {gw} at log index {entry.index} is proven into checkpoint "
                    f"{at}, which is not valid", gw)
        if kind == UNKNOWN_KEY:
            enrolled = [ev.index for ev in timeline.get(gw or "", [])
                        if ev.event == "enroll"]
            out.add(FindingCode.UNKNOWN_KEY,
                    f"message at log index {entry.index} is from {gw}, which has no "
                    "enrollment in the evidence before it"
                    + (f" (enrolled only at log index {enrolled[0]})" if enrolled
                       else ""), gw)
        elif revoked is not None:
            out.add(FindingCode.REVOKED_KEY,
                    f"message at log index {entry.index} was logged after {gw} was revoked "
                    f"(log index {revoked})", gw)
    late = False
    for entry, at, (kind, gw, value, why, revoked) in got.odd:
        if kind in (NOT_A_MESSAGE, UNKNOWN_KEY):
            continue
        assert gw is not None
        ok = at is not None and heads[at] is not None and revoked is None
        if why is not None:
            out.add(FindingCode.INCLUSION_FAILED,
                    f"message of {gw} at log index {entry.index} is not in the log at "
                    f"checkpoint {at}: {why}", gw)
            ok = False
        if kind == BAD_SIGNATURE:
            out.add(FindingCode.BAD_SIGNATURE,
                    f"message at log index {entry.index} does not verify with {gw}'s "
                    f"enrolled key: {value}. Its content was changed or it was signed by "
                    "another key", gw)
            continue
        if kind == MALFORMED:
            out.add(FindingCode.MESSAGE_MALFORMED,
                    f"message at log index {entry.index} from {gw} is malformed: "
                    f"{value}", gw)
            continue
        if ok or at is not None or revoked is not None:  # not ok: no verified message
            continue
        # signed by its enrolled key, but in no checkpoint yet: verified, not anchored
        seq, boot, raw = value
        unproven[gw] += 1
        late = True
        verified.append(VerifiedMessage(entry.index, gw, seq, boot, tuple(map(make, raw)),
                                        False, None))
    if late:
        verified.sort(key=lambda m: m.index)
    return unproven


def held_messages(got: Checked, where: Placement) -> dict[str, list[Held]]:
    """What the bundle holds of each gateway, whether its signature or its proof checks out or
    not (either is its own finding, not a withheld message), and whether the entry is proven
    into a valid checkpoint: what the completeness check counts."""
    heads = where.heads
    present: dict[str, list[Held]] = defaultdict(list)
    for m in got.verified:
        present[m.gateway].append(Held(m.seq, m.index, m, where.place(m.index) is not None))
    seen = {m.index for m in got.verified}
    for entry, at, (kind, gw, value, why, _) in got.odd:
        if gw is None or entry.index in seen:
            continue
        seq = value[0] if kind == OK else claimed_seq_of(entry.data)
        if seq is not None:
            present[gw].append(Held(seq, entry.index, None, why is None and at is not None
                                    and heads[at] is not None))
    return present
