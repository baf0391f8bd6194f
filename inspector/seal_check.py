"""The seal check (docs/bundle.md §4b, §5 step 9): is the bundle complete for its scope as the
log's own completeness seal, anchored with the claim's checkpoint, states it?

The exporter's signed claim (§4a) is written at export time, by someone who knows what an
inspector will look for; the seal was appended by the collector before the checkpoint was
signed, so it fixed each gateway's registry events and latest seq before anyone knew what to
hide. This module proves the seal (the checkpoint's last leaf, and the scope's farm records in
its inner tree), then judges what the bundle carries against it, and the claim against it.

Pure: it gets the decoded bundle, the roots of the bundle's valid checkpoints and what the
verifier learnt about each carried message; it returns findings of its own
(:class:`SealFinding`) for the verifier to report. Codes: ``seal_invalid``,
``seal_claim_mismatch``, ``seal_contradicted``, ``completeness_not_provable`` and the withheld
family shared with the claim check (``gateway_withheld``, ``registry_withheld``, ``period_cut``,
``messages_withheld``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from fieldproof.formats import merkle
from fieldproof.formats.bundle import Bundle, Entry, in_scope
from fieldproof.formats.checkpoint import Checkpoint
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.formats.seal import (
    FarmRecord,
    SealedGateway,
    SealError,
    decode_farm_record,
    decode_seal,
    gateway_covered,
    scope_covered,
    verify_farm_record,
)
from inspector.completeness import Held
from inspector.findings import FindingCode
from inspector.results import CompletenessCheck, Findings, GatewaySummary

__all__ = ["Carried", "SealCheck", "SealFinding", "check_seal", "report_seal", "seal_line"]

NO_SEAL = "completeness not provable: no seal"


class Carried(NamedTuple):
    """A message entry the bundle carries, as the seal check sees it."""

    seq: int
    log_index: int
    #: sample times of a verified message (None: its signature or key did not check out)
    first_time: float | None
    last_time: float | None
    #: whether its inclusion proof into a valid checkpoint holds
    proven: bool


@dataclass(frozen=True)
class SealFinding:
    severity: str
    code: str
    message: str
    gateway: str | None = None


@dataclass
class SealCheck:
    """What the seal showed: ``status`` ``sealed`` (complete as the seal states), ``withheld``,
    ``invalid`` or ``absent``; per gateway of the scope its state (``complete``, ``head cut``,
    ``tail cut``, ``head and tail cut``, ``messages withheld``, ``registry withheld``,
    ``withheld``)."""

    status: str = "absent"
    size: int | None = None
    farms: list[str] = field(default_factory=list)
    gateways: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    findings: list[SealFinding] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {"status": self.status, "size": self.size, "farms": self.farms,
                "gateways": self.gateways, "detail": self.detail}


def _fmt_seqs(seqs: Sequence[int]) -> str:
    """Ascending seqs as ranges: ``3–5, 9``."""
    ranges: list[list[int]] = []
    for q in seqs:
        if ranges and q == ranges[-1][1] + 1:
            ranges[-1][1] = q
        else:
            ranges.append([q, q])
    text = [f"{a}" if a == b else f"{a}–{b}" for a, b in ranges[:5]]
    return ", ".join(text) + (", …" if len(ranges) > 5 else "")


def check_seal(
    bundle: Bundle,
    roots: Mapping[int, bytes],
    carried: Mapping[str, Sequence[Carried]],
    included: Callable[[Entry], bool],
    *,
    require: bool = False,
    claim_checked: bool = True,
) -> SealCheck:
    """Prove the bundle's seal and judge completeness from it.

    ``roots``: tree size → root of every checkpoint in the bundle that opened with the log key;
    ``carried``: per gateway, every message entry the bundle carries; ``included``: whether a
    registry entry's inclusion proof holds. ``require`` (``--require-complete``) makes a
    missing seal an error instead of a warning. ``claim_checked``: the claim's signature and
    checkpoint held (§5 step 8), so what it says is the operator's signed word and is compared
    with the seal; an invalid claim is already an error and says nothing."""
    check = SealCheck()
    out = check.findings
    sp = bundle.seal
    if sp is None:
        why = ("this bundle is of format version "
               f"{bundle.version}, which carries no seal" if bundle.version < 3 else
               "the log's checkpoint it speaks of was signed without a seal (a collector from "
               "before seals)" if bundle.checkpoints else "it has no checkpoint")
        check.detail = NO_SEAL
        out.append(SealFinding(
            "error" if require else "warning", "completeness_not_provable",
            f"{NO_SEAL}: {why}. Without the log's seal, that no gateway, registry event or end "
            "of the period was left out rests on the operator's signed word only"
            + ("" if require else " (--require-complete fails this)")))
        return check

    def invalid(why: str) -> SealCheck:
        check.status, check.detail = "invalid", why
        out.append(SealFinding("error", "seal_invalid",
                               f"the bundle's completeness seal does not hold: {why}. Nothing "
                               "in the log then shows the bundle is complete"))
        return check

    n = sp.size
    check.size = n
    root = roots.get(n)
    if root is None:
        return invalid(f"the bundle holds no valid checkpoint of tree size {n}, which the seal "
                       "ends")
    try:
        proof = [bundle.hashes[r] for r in merkle.inclusion_proof_ranges(n - 1, n)]
        merkle.verify_inclusion(merkle.leaf_hash(sp.entry), n - 1, n, proof, root)
    except KeyError:
        return invalid(f"the subtree hashes to prove it at log index {n - 1} are missing")
    except merkle.ProofError as exc:
        return invalid(f"it is not the last leaf (index {n - 1}) of the checkpoint of size {n} "
                       f"({exc})")
    try:
        seal = decode_seal(sp.entry)
        if seal.size != n - 1:
            raise SealError(f"it says it is at log index {seal.size}, not {n - 1}")
        records: dict[int, FarmRecord] = {}
        sealed: dict[str, SealedGateway] = {}
        for f in sp.farms:
            verify_farm_record(f.record, f.position, seal, f.proof)
            record = records[f.position] = decode_farm_record(f.record)
            if bundle.scope.farm not in (None, record.farm):
                continue  # a neighbour that shows the scope's farm has no record
            for g in record.gateways:
                if (bundle.scope.field in (None, *g.fields)
                        and bundle.scope.gateway in (None, g.gateway)):
                    sealed.setdefault(g.gateway, g)
    except SealError as exc:
        return invalid(str(exc))
    farms = {p: r.farm for p, r in records.items()}
    below = n - 1  # what the seal states is about the entries before it

    # the carried registry events below the seal, per gateway, and the farms the scope's
    # gateway's enrollments among them name (farm → the first one's log index)
    events: dict[str, list[Entry]] = {}
    scoped: list[tuple[Entry, str]] = []
    enrolled: dict[str, int] = {}
    for e in bundle.registry:
        if e.index >= below:
            continue
        obj = parse_registry_event(e.data)
        gw = obj.get("gw") if obj is not None else None
        if not isinstance(gw, str) or obj is None:
            continue
        events.setdefault(gw, []).append(e)
        if gw == bundle.scope.gateway and obj.get("event") == "enroll":
            enrolled.setdefault(str(obj.get("farm", "")), e.index)
        if in_scope(bundle.scope, gw, obj) and gw not in sealed and included(e):
            scoped.append((e, gw))
    gw_only = bundle.scope.gateway if bundle.scope.farm is None else None
    try:
        missing = (gateway_covered(seal.farms, records, gw_only, enrolled) if gw_only is not None
                   else scope_covered(seal.farms, farms, bundle.scope.farm))
    except SealError as exc:
        return invalid(str(exc))
    if missing is not None:
        return invalid(f"the bundle does not carry {missing}, so the scope's gateways are not "
                       "all known")
    if gw_only is not None and len(records) < seal.farms:
        # its registry events must all be here: they are what shows that no record left out
        # lists it (for a sealed gateway of the scope, _judge reports any withheld; one the
        # carried records list only in other fields must show them all here)
        registry = next(g.registry for r in records.values() for g in r.gateways
                        if g.gateway == gw_only)
        held = len(events.get(gw_only, []))
        if gw_only not in sealed and held < registry:
            return invalid(
                f"the bundle carries {held} of the {registry} registry events of {gw_only} the "
                f"seal counts below index {below} and only the farm records listing it, so "
                "nothing shows that no enrollment puts it in this scope")
    check.farms = sorted(set(farms.values()))
    for e, gw in scoped:
        out.append(SealFinding(
            "error", "seal_contradicted",
            f"the bundle proves {gw}'s enrollment in this scope at log index {e.index}, "
            f"which the log's seal at index {below} leaves out: the collector wrote a "
            "false seal", gw))
    withheld: list[str] = []
    for gw, g in sorted(sealed.items()):
        state = _judge(bundle, gw, g, events.get(gw, []), carried.get(gw, ()), below,
                       included, out)
        check.gateways[gw] = state
        if state != "complete":
            withheld.append(gw)
    if bundle.completeness is not None and claim_checked:
        twice = {gw: _duplicates([x for x in carried.get(gw, ()) if x.proven
                                 and x.log_index < below]) for gw in sealed}
        _against_claim(bundle, sealed, twice, below, out)
    if any(f.code in ("seal_contradicted", "seal_claim_mismatch") for f in out):
        check.status = "invalid"
        check.detail = "the seal contradicts the bundle or its claim (see the findings)"
    elif withheld:
        check.status = "withheld"
        check.detail = ("by the log's seal, evidence was left out: " + ", ".join(withheld)
                        + " (see the findings)")
    else:
        check.status = "sealed"
    return check


def _judge(bundle: Bundle, gw: str, g: SealedGateway, events: Sequence[Entry],
           held: Sequence[Carried], below: int, included: Callable[[Entry], bool],
           out: list[SealFinding]) -> str:
    """One sealed gateway of the scope against what the bundle carries of it below the seal."""
    s = bundle.scope
    proven_events = sum(1 for e in events if included(e))
    if proven_events > g.registry:
        out.append(SealFinding(
            "error", "seal_contradicted",
            f"the bundle proves {proven_events} registry events of {gw} below log index "
            f"{below}, the log's seal counts {g.registry}: the collector wrote a false seal", gw))
    msgs = sorted((x for x in held if x.log_index < below), key=lambda x: x.seq)
    proven = [x for x in msgs if x.proven]
    if g.first is None or g.latest is None:
        if proven:
            out.append(SealFinding(
                "error", "seal_contradicted",
                f"the log's seal says the log held no message of {gw} below index {below}, "
                f"the bundle proves {len(proven)}: the collector wrote a false seal", gw))
    elif (any(not g.first <= x.seq <= g.latest for x in proven)
          or len(proven) > g.messages):  # the seal counts entries: a seq held twice, twice
        out.append(SealFinding(
            "error", "seal_contradicted",
            f"the log's seal says {gw}'s messages below index {below} are {g.messages} with seq "
            f"{g.first}–{g.latest}, the bundle proves others: the collector wrote a false "
            "seal", gw))
    if not events and not msgs:
        out.append(SealFinding(
            "error", "gateway_withheld",
            f"{gw} is in this scope by the log's seal (enrolled in farm {s.farm or '(any)'}"
            f"{', field ' + s.field if s.field else ''}), but the bundle holds nothing of it: "
            "the gateway was left out", gw))
        return "withheld"
    state = "complete"
    if len(events) < g.registry:
        state = "registry withheld"
        out.append(SealFinding(
            "error", "registry_withheld",
            f"the log's seal counts {g.registry} registry event(s) of {gw} before index "
            f"{below}, the bundle carries {len(events)}: enrollments, key changes or a "
            "revocation were left out", gw))
    if g.first is None or g.latest is None:
        return state
    if not msgs:
        out.append(SealFinding(
            "error", "gateway_withheld",
            f"the log's seal says {gw} sent messages seq {g.first}–{g.latest} before index "
            f"{below}, the bundle carries none of them: its evidence was left out", gw))
        return "withheld"
    lo, hi = msgs[0], msgs[-1]
    cuts = []
    # an end is reached when it is the gateway's own first/latest message, or a verified
    # message sampled wholly outside the period
    if lo.seq != g.first and not (lo.last_time is not None and lo.last_time < s.start):
        cuts.append(("head", f"its earliest message here is seq {lo.seq}, not one sampled "
                             f"before the period, and the log holds seq {g.first} on"))
    if hi.seq != g.latest and not (hi.first_time is not None and hi.first_time > s.end):
        cuts.append(("tail", f"its latest message here is seq {hi.seq}, not one sampled after "
                             f"the period, and the log's seal says it reached seq {g.latest}"))
    if cuts:
        out.append(SealFinding(
            "error", "period_cut",
            f"{gw}'s evidence stops short of the period's "
            + " and ".join("start" if c == "head" else "end" for c, _ in cuts) + ": "
            + "; ".join(why for _, why in cuts) + ". What happened there is withheld", gw))
        return " and ".join(c for c, _ in cuts) + " cut"
    twice = _duplicates(proven)
    if g.every_seq(twice):
        have = {x.seq for x in msgs}
        gaps = [q for q in range(lo.seq, hi.seq + 1) if q not in have]
        if gaps:
            shown = (f", {twice} more for the seqs the bundle proves twice" if twice else "")
            out.append(SealFinding(
                "error", "messages_withheld",
                f"the log's seal counts {g.messages} entries of {gw} with seq "
                f"{g.first}–{g.latest}: one for every seq{shown}. So the log holds every seq "
                "there (unless, for each one it lacks, it holds another seq twice that this "
                f"bundle does not show), and the bundle lacks {len(gaps)} between seq "
                f"{lo.seq} and {hi.seq} (seq {_fmt_seqs(gaps)}): they were left out", gw))
            return "messages withheld"
    return state


def _duplicates(proven: Sequence[Carried]) -> int:
    """How many proven entries are beyond the first of their seq (each is its own log entry,
    and the seal counts every one): what a seal's ``messages`` holds more than distinct
    seqs, as far as the bundle shows."""
    return len(proven) - len({x.seq for x in proven})


def _against_claim(bundle: Bundle, sealed: Mapping[str, SealedGateway],
                   twice: Mapping[str, int], below: int, out: list[SealFinding]) -> None:
    """The exporter's signed claim must state what the seal fixed; where it does not, the
    operator signed a statement the anchored log contradicts. ``twice``: per gateway, the
    entries the bundle proves beyond one per seq (the seal counts entries, the claim seqs)."""
    c = bundle.completeness
    assert c is not None
    why: list[str] = []
    claimed = {g.gateway: g for g in c.gateways}
    left_out = sorted(set(sealed) - set(claimed))
    if left_out:
        why.append(f"it leaves out {', '.join(left_out)}, which the seal puts in the scope")
    extra = sorted(set(claimed) - set(sealed))
    if extra:
        why.append(f"it lists {', '.join(extra)}, which the seal does not put in the scope")
    registry = sum(g.registry for g in sealed.values())
    if c.registry != registry:
        why.append(f"it counts {c.registry} registry events, the seal {registry}")
    for gw in sorted(set(sealed) & set(claimed)):
        g, k = sealed[gw], claimed[gw]
        if (k.first_seq, k.latest_seq) != (g.first, g.latest):
            why.append(f"it gives {gw} seq {k.first_seq}–{k.latest_seq}, the seal "
                       f"{g.first}–{g.latest}")
        elif (g.every_seq(twice[gw]) and k.from_seq is not None and k.to_seq is not None
              and k.count != k.to_seq - k.from_seq + 1):
            # the claim counts seqs (a seq held twice once), the seal entries
            why.append(f"it counts {k.count} messages of {gw} in seq {k.from_seq}–{k.to_seq}, "
                       "the seal shows every seq there logged")
    if why:
        out.append(SealFinding(
            "error", "seal_claim_mismatch",
            f"the exporter's signed completeness claim contradicts the log's seal at index "
            f"{below}: " + "; ".join(why[:5]) + (" …" if len(why) > 5 else "")
            + ". The claim is false; trust the seal"))


# ----------------------------------------------------------------------------- the verifier's step


def report_seal(
    bundle: Bundle,
    opened: Sequence[Checkpoint | None],
    present: Mapping[str, Sequence[Held]],
    included: Callable[[Entry], bool],
    summary_for: Callable[[str], GatewaySummary],
    completeness: CompletenessCheck,
    out: Findings,
    *,
    require: bool,
) -> SealCheck:
    """docs/bundle.md §5 step 9 inside :func:`inspector.verify.verify_one`: run
    :func:`check_seal` on what the earlier steps learnt and report its findings. A finding the
    claim check already made for the same gateway is not repeated; a gateway the seal shows
    incomplete is marked so even when the (false) claim said it was complete. ``completeness``
    (the claim's check) is left as it is: what the seal shows is the result's ``seal``."""
    roots = {cp.size: cp.root_hash for cp in opened if cp is not None}
    carried = {gw: [Carried(h.seq, h.log_index,
                            h.message.first_time if h.message is not None else None,
                            h.message.last_time if h.message is not None else None, h.proven)
                    for h in held] for gw, held in present.items()}
    check = check_seal(bundle, roots, carried, included, require=require,
                       claim_checked=completeness.status != "invalid")
    already = {(f.code, f.gateway) for f in out.items}
    for f in check.findings:
        if (f.code, f.gateway) not in already:
            out.add(FindingCode(f.code), f.message, f.gateway,
                    severity="error" if f.severity == "error" else "warning")
    for gw, state in check.gateways.items():
        if state != "complete":
            summary_for(gw).completeness = state
    return check


def seal_line(seal: Mapping[str, object] | None) -> str:
    """One line for terminals: what the seal showed (``VerificationResult.seal``)."""
    if seal is None:
        return "not checked"
    status, detail, size = seal.get("status"), seal.get("detail"), seal.get("size")
    if status == "sealed":
        return (f"sealed at tree size {size}: the log's seal, written with that checkpoint, "
                "shows every gateway of the scope and the period's ends in the bundle")
    return f"{str(status).upper()}: {detail}" if detail else str(status).upper()
