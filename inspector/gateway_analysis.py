"""Step 5 of the verification, per gateway: counts, sequence gaps with their time spans,
messages outside the anchored range, and clock anomalies (samples later than the block that
anchors them, implausibly old, going backwards within a boot)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

from fieldproof.formats.bundle import Bundle
from inspector.findings import FindingCode
from inspector.results import (
    Findings,
    GatewaySummary,
    SeqGap,
    VerifiedMessage,
    VerifyOptions,
    count_noun,
    fmt_time,
)

__all__ = ["PLAUSIBLE_EPOCH", "MessageCounts", "analyse_gateway", "clock_steps_back",
           "count_messages"]

#: sample times before this (2020-01-01) mean a clock that was never set (a Pi without RTC)
PLAUSIBLE_EPOCH = 1_577_836_800.0


class MessageCounts(Protocol):
    """What a per-gateway summary counts over its verified messages (one bundle's
    :class:`GatewaySummary`, or the union's in inspector.combine)."""

    verified_messages: int
    readings: int
    missing_values: int
    first_seq: int | None
    last_seq: int | None
    first_time: float | None
    last_time: float | None
    gaps: list[SeqGap]


def count_messages(target: MessageCounts, msgs: Sequence[VerifiedMessage]) -> None:
    """Fill ``target``'s counts, seq and time span and sequence gaps from one gateway's
    verified messages (``msgs`` in seq order, each seq once)."""
    target.verified_messages = len(msgs)
    if not msgs:
        return
    target.readings = sum(len(m.readings) for m in msgs)
    target.missing_values = sum(1 for m in msgs for r in m.readings if r.value is None)
    target.first_seq, target.last_seq = msgs[0].seq, msgs[-1].seq
    target.first_time = min(m.first_time for m in msgs)
    target.last_time = max(m.last_time for m in msgs)
    target.gaps = [SeqGap(a.seq + 1, b.seq - 1, a.last_time, b.first_time)
                   for a, b in itertools.pairwise(msgs) if b.seq > a.seq + 1]


def clock_steps_back(msgs: Sequence[VerifiedMessage], tolerance_s: float,
                     ) -> tuple[list[tuple[VerifiedMessage, VerifiedMessage]],
                                list[tuple[VerifiedMessage, VerifiedMessage]]]:
    """Consecutive messages of one gateway (``msgs`` in seq order) where its clock went back
    more than ``tolerance_s`` within a boot, and where its boot counter went down."""
    backwards: list[tuple[VerifiedMessage, VerifiedMessage]] = []
    boots: list[tuple[VerifiedMessage, VerifiedMessage]] = []
    for a, b in itertools.pairwise(msgs):
        if b.boot < a.boot:
            boots.append((a, b))
        elif b.boot == a.boot and b.first_time < a.first_time - tolerance_s:
            backwards.append((a, b))
    return backwards, boots


def analyse_gateway(
    g: GatewaySummary,
    msgs: list[VerifiedMessage],
    bundle: Bundle,
    out: Findings,
    opts: VerifyOptions,
    now: float,
    unproven: int,
    enrolled_here: bool = False,
) -> None:
    gw = g.gateway
    s = bundle.scope
    if not enrolled_here and ((s.farm and g.farm not in (None, s.farm))
                              or (s.field and g.field not in (None, s.field))):
        out.add(FindingCode.OUT_OF_SCOPE,
                f"{gw} is enrolled for farm {g.farm!r} field {g.field!r}, outside the bundle's "
                f"scope (farm {s.farm!r} field {s.field!r})", gw)
    # the same sequence number twice: two different messages claiming one slot
    dedup: list[VerifiedMessage] = []
    for m in msgs:
        if dedup and dedup[-1].seq == m.seq:
            out.add(FindingCode.DUPLICATE_SEQ,
                    f"{gw} seq {m.seq} appears twice (log indices {dedup[-1].index} and "
                    f"{m.index}): sequence numbers never repeat, one of them is a replay or "
                    "forgery",
                    gw)
            continue
        dedup.append(m)
    msgs = dedup
    count_messages(g, msgs)
    if not msgs:
        return
    claimed = g.completeness == "complete" and g.claim is not None
    for gap in g.gaps:
        inside = (claimed and g.claim is not None and g.claim.from_seq is not None
                  and g.claim.to_seq is not None
                  and g.claim.from_seq < gap.first_missing <= gap.last_missing < g.claim.to_seq)
        why = ("the log itself lacks them (the exporter's signed claim counts every message of "
               "this run, and the bundle holds them all): lost or never sent, not withheld "
               "from this bundle" if inside else
               "lost, never sent, or withheld — the evidence cannot tell which")
        out.add(FindingCode.SEQUENCE_GAP,
                f"{gw} is missing seq {gap.first_missing}–{gap.last_missing} ({gap.size} "
                f"message(s)) between {fmt_time(gap.after_time)} and "
                f"{fmt_time(gap.before_time)}: {why}", gw)
    outside = [m for m in msgs if not m.anchored]
    g.outside_anchored = len(outside)
    if outside:
        first, last = min(m.first_time for m in outside), max(m.last_time for m in outside)
        out.add(FindingCode.OUTSIDE_ANCHORED_RANGE,
                f"{count_noun(len(outside), 'message')} of {gw} ({fmt_time(first)} – "
                f"{fmt_time(last)}) {'is' if len(outside) == 1 else 'are'} not covered by a "
                "verified anchor"
                + (f"; {unproven} {'is' if unproven == 1 else 'are'} in no checkpoint at all"
                   if unproven else "")
                + ": their time and existence are not fixed on chain yet",
                gw)
    # clocks
    future: list[VerifiedMessage] = []
    past: list[VerifiedMessage] = []
    late: list[VerifiedMessage] = []
    floor = PLAUSIBLE_EPOCH
    if g.enrolled_time is not None:
        floor = max(floor, g.enrolled_time - opts.enrollment_slack_s)
    for m in msgs:
        bound = m.anchor_time if m.anchor_time is not None else now
        if m.last_time > bound + opts.future_tolerance_s:
            future.append(m)
        if m.first_time < floor:
            past.append(m)
        elif m.anchor_time is not None and m.anchor_time - m.first_time > opts.late_after_s:
            late.append(m)
    backwards, boots = clock_steps_back(msgs, opts.backwards_tolerance_s)
    if future:
        m = future[0]
        g.clock["future"] = len(future)
        out.add(FindingCode.CLOCK_FUTURE,
                f"{len(future)} message(s) of {gw} carry sample times later than the block that "
                f"anchors them (or than now), e.g. seq {m.seq} sampled {fmt_time(m.last_time)} "
                f"but anchored by {fmt_time(m.anchor_time or now)}: the gateway clock ran ahead",
                gw)
    if past:
        m = past[0]
        g.clock["past"] = len(past)
        out.add(FindingCode.CLOCK_PAST, f"{len(past)} message(s) of {gw} carry sample times before "
                f"{fmt_time(floor)} (its enrollment, or 2020), e.g. seq {m.seq} at "
                f"{fmt_time(m.first_time)}: the gateway clock was not set", gw)
    if late:
        m = late[0]
        g.clock["late"] = len(late)
        out.add(FindingCode.DELIVERED_LATE,
                f"{len(late)} message(s) of {gw} were anchored more than "
                f"{opts.late_after_s / 86400:.0f} days after sampling, e.g. seq {m.seq}", gw)
    if backwards:
        a, b = backwards[0]
        g.clock["backwards"] = len(backwards)
        out.add(FindingCode.CLOCK_BACKWARDS,
                f"{gw}'s clock went backwards {len(backwards)} time(s) within a boot, e.g. seq "
                f"{b.seq} at {fmt_time(b.first_time)} after seq {a.seq} at "
                f"{fmt_time(a.first_time)} (boot {a.boot})", gw)
    if boots:
        a, b = boots[0]
        g.clock["boot_backwards"] = len(boots)
        out.add(FindingCode.BOOT_BACKWARDS,
                f"{gw}'s boot counter went down {len(boots)} time(s) while its sequence went up,"
                f" e.g. boot {a.boot} → {b.boot} at seq {b.seq}: its state was reset or copied",
                gw)
