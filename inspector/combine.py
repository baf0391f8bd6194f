"""Several bundles, one history: the analysis across the verified results of bundles from
different evidence logs (docs/bundle.md §11).

At scale several collectors share one MQTT subscription and each keeps its own log, so one
gateway's messages are spread over several logs. Each bundle is verified completely on its own
first (:func:`inspector.verify.verify_bundle`); this module only combines what those results say:
no message is decoded or checked again here, so combining costs a pass over the verified
messages, nothing per signature. Everything here is a pure function of the results (and of the
message bytes they kept), so it is tested on generated message sets without services.

What it finds, per gateway, over the union of every bundle:

* sequence gaps (a seq one log lacks but another holds is no gap);
* the same message in two logs (``logged_twice``, info: a redelivery two collectors both
  logged) and two *different* messages with one seq (``conflicting_message``, error: a
  gateway's sequence never repeats, so one is forged or replayed, or the gateway is broken);
* a gateway enrolled with unrelated keys in two logs (``gateway_key_mismatch``, error);

and across bundles: different scopes (``scope_mismatch``, warning), two bundles of one log
whose checkpoints of one size have different roots (``log_fork``, error), and a bundle whose
signed completeness claim another bundle of the same log proves false: a registry event or a
message of the claimed run below the claim's tree size that the claimant left out
(``registry_withheld`` / ``messages_withheld``, error, naming both bundles; docs/bundle.md
§4a). The exporter's claim is signed by the operator's log key, so this is how a false one is
caught: the farmer's own gateway bundle against the inspector's farm bundle, say.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

from fieldproof.formats.bundle import Scope, in_scope
from inspector.findings import FindingCode
from inspector.verify import (
    MAX_FINDINGS_PER_CODE,
    Finding,
    GatewaySummary,
    SeqGap,
    Severity,
    VerificationResult,
    VerifiedMessage,
    VerifyOptions,
    clock_steps_back,
    count_messages,
    fmt_time,
)

__all__ = [
    "BundleOutcome",
    "Combined",
    "CombinedGateway",
    "MultiResult",
    "combine",
    "entry_bytes",
    "local_findings",
    "worst",
]

Verdict = Literal["pass", "warn", "fail"]
_ORDER = ("error", "warning", "info")
#: findings a bundle makes alone that only the union can judge: dropped from each bundle's
#: findings in a verification of several, and judged again over the union
UNION_CODES = frozenset({"sequence_gap"})
#: the scope fields compared between bundles
SCOPE_KEYS = ("farm", "field", "gateway", "from", "to")


def worst(verdicts: Sequence[str]) -> Verdict:
    """The worst of several verdicts: one failing bundle fails the whole verification."""
    if "fail" in verdicts:
        return "fail"
    return "warn" if "warn" in verdicts else "pass"


def verdict_of(findings: Sequence[Finding]) -> Verdict:
    severities = {f.severity for f in findings}
    return "fail" if "error" in severities else "warn" if "warning" in severities else "pass"


def local_findings(result: VerificationResult) -> list[Finding]:
    """A bundle's findings without those only the union can judge (its own sequence gaps: in
    a verification of several logs, another log may hold the missing messages)."""
    return [f for f in result.findings if f.code not in UNION_CODES]


def entry_bytes(result: VerificationResult) -> Callable[[int], bytes | None]:
    """The exact bytes of the message at a log index, from the entries the result kept
    (``keep_entries``), or None when they were not kept."""
    entries = result.entries
    indices = [e.index for e in entries]

    def get(index: int) -> bytes | None:
        pos = bisect.bisect_left(indices, index)
        if pos < len(indices) and indices[pos] == index:
            return entries[pos].data
        return None

    return get


# ----------------------------------------------------------------------------- results


@dataclass
class CombinedGateway:
    """One gateway over the union of the bundles: each seq counted once."""

    gateway: str
    farm: str | None = None
    field: str | None = None
    #: bundle label -> distinct verified messages of this gateway that bundle holds
    bundles: dict[str, int] = dc_field(default_factory=dict)
    verified_messages: int = 0
    readings: int = 0
    missing_values: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_time: float | None = None
    last_time: float | None = None
    gaps: list[SeqGap] = dc_field(default_factory=list)
    logged_twice: int = 0
    conflicts: int = 0

    @property
    def missing_messages(self) -> int:
        return sum(g.size for g in self.gaps)

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "gaps"}
        d["gaps"] = [g.__dict__ for g in self.gaps]
        d["missing_messages"] = self.missing_messages
        return d


@dataclass
class Combined:
    """What the union of the bundles says: per-gateway summaries, findings (each naming the
    bundles it comes from) and the union of the verified messages (each seq once)."""

    gateways: list[CombinedGateway]
    findings: list[Finding]
    messages: list[VerifiedMessage]
    scope: dict[str, Any]


class _Out:
    """Findings with the verifier's folding: past a limit, repeats of one (code, gateway) are
    only counted."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._seen: Counter[tuple[str, str | None]] = Counter()
        self._more: dict[tuple[str, str | None], Finding] = {}

    def add(self, code: FindingCode, message: str, gateway: str | None,
            bundles: Sequence[str]) -> None:
        severity = code.severity
        key = (code, gateway)
        self._seen[key] += 1
        if self._seen[key] <= MAX_FINDINGS_PER_CODE:
            self.items.append(Finding(severity, code, message, gateway, 1, tuple(bundles)))
            return
        more = self._more.get(key)
        if more is None:
            more = self._more[key] = Finding(severity, code, "", gateway, 0, ())
            self.items.append(more)
        more.count += 1
        more.bundles = tuple(dict.fromkeys((*more.bundles, *bundles)))
        more.message = f"… and {more.count:,} more like the above"


def _scope_text(scope: dict[str, Any]) -> str:
    where = ", ".join(f"{k} {scope[k]}" for k in ("farm", "field", "gateway")
                      if scope.get(k)) or "all gateways"
    return f"{where}, {fmt_time(scope.get('from'))} – {fmt_time(scope.get('to'))}"


def union_scope(scopes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One scope covering them all: a place field stays only where every bundle names the same,
    the period is the hull of the periods."""
    if not scopes:
        return {}
    out: dict[str, Any] = {}
    for k in ("farm", "field", "gateway"):
        values = {s.get(k) for s in scopes}
        out[k] = values.pop() if len(values) == 1 else None
    out["from"] = min(s.get("from", math.inf) for s in scopes)
    out["to"] = max(s.get("to", -math.inf) for s in scopes)
    return out


def _payload_of(m: VerifiedMessage) -> tuple[Any, ...]:
    return (m.boot, m.readings)


def combine(labels: Sequence[str], results: Sequence[VerificationResult],
            content: Sequence[Callable[[int], bytes | None]] | None = None,
            backwards_tolerance_s: float = VerifyOptions().backwards_tolerance_s) -> Combined:
    """The analysis across bundles (module docstring). ``labels`` name the bundles in findings
    (the file names); ``content[i](index)`` gives bundle *i*'s message bytes at a log index
    (default: :func:`entry_bytes`), to tell a message logged twice from two messages with one
    seq; without bytes the signed payloads (boot, readings) are compared instead."""
    if len(labels) != len(results):
        raise ValueError("one label per result")
    getters = list(content) if content is not None else [entry_bytes(r) for r in results]
    out = _Out()
    readable = [i for i, r in enumerate(results) if r.origin]
    _compare_scopes(labels, results, readable, out)
    _compare_same_logs(labels, results, readable, out)
    _compare_claims(labels, results, readable, out)
    _compare_keys(labels, results, readable, out)

    # gateway -> seq -> [(bundle, message)], each bundle's first message of a seq (its own
    # duplicates are its own error already)
    seen: dict[str, dict[int, list[tuple[int, VerifiedMessage]]]] = defaultdict(dict)
    for i in readable:
        for m in results[i].messages:
            holders = seen[m.gateway].setdefault(m.seq, [])
            if holders and holders[-1][0] == i:
                continue
            holders.append((i, m))

    info: dict[str, GatewaySummary] = {}
    for i in readable:
        for g in results[i].gateways:
            if g.gateway not in info or (info[g.gateway].farm is None and g.farm is not None):
                info[g.gateway] = g
    union: list[VerifiedMessage] = []
    gateways: list[CombinedGateway] = []
    for gw in sorted(set(seen) | set(info)):
        g0 = info.get(gw)
        cg = CombinedGateway(gw, g0.farm if g0 else None, g0.field if g0 else None)
        gateways.append(cg)
        per_bundle: Counter[int] = Counter()
        chosen: list[VerifiedMessage] = []
        source: dict[int, int] = {}  # seq -> the bundle the chosen copy comes from
        for seq in sorted(seen.get(gw, {})):
            holders = seen[gw][seq]
            for i, _ in holders:
                per_bundle[i] += 1
            chosen.append(holders[0][1])
            source[seq] = holders[0][0]
            if len(holders) > 1:
                _compare_copies(labels, results, getters, gw, seq, holders, cg, out)
        cg.bundles = {labels[i]: per_bundle[i] for i in readable
                      if any(g.gateway == gw for g in results[i].gateways) or per_bundle[i]}
        union.extend(chosen)
        _summarise(cg, chosen, labels, out)
        _clock_across_logs(cg.gateway, chosen, source, labels, backwards_tolerance_s, out)
    scope = union_scope([results[i].scope for i in readable])
    return Combined(gateways, out.items, union, scope)


def _compare_scopes(labels: Sequence[str], results: Sequence[VerificationResult],
                    readable: Sequence[int], out: _Out) -> None:
    """Bundles asked for different farms, fields, gateways or periods cover different things:
    gaps and comparisons over their union are then partly one-sided."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i in readable:
        key = tuple(results[i].scope.get(k) for k in SCOPE_KEYS)
        groups.setdefault(key, []).append(i)
    if len(groups) <= 1:
        return
    parts = "; ".join(
        f"{', '.join(labels[i] for i in members)}: {_scope_text(results[members[0]].scope)}"
        for members in groups.values())
    out.add(FindingCode.SCOPE_MISMATCH,
            f"the bundles were exported for different scopes ({parts}): what one covers and "
            "another does not shows up as gaps or one-sided data. Ask for every log's bundle "
            "with the same farm, field, gateway and period",
            None, [labels[i] for i in readable])


def _compare_same_logs(labels: Sequence[str], results: Sequence[VerificationResult],
                       readable: Sequence[int], out: _Out) -> None:
    """Two bundles of one log must show one history: valid checkpoints of one size must have
    one root, or the log was forked (each bundle alone may look fine)."""
    by_origin: dict[str, list[int]] = defaultdict(list)
    for i in readable:
        by_origin[results[i].origin].append(i)
    for origin, members in by_origin.items():
        roots: dict[int, tuple[str, int]] = {}
        for i in members:
            for c in results[i].checkpoints:
                if not c.valid or c.size is None or c.root is None:
                    continue
                first = roots.setdefault(c.size, (c.root, i))
                if first[0] != c.root:
                    j = first[1]
                    out.add(FindingCode.LOG_FORK,
                            f"{labels[j]} and {labels[i]} are both of log {origin!r} and hold "
                            f"validly signed checkpoints of size {c.size} with different roots "
                            f"({first[0][:16]}… and {c.root[:16]}…): the log was forked or "
                            "rewritten; they cannot both be its history",
                            None, [labels[j], labels[i]])


def _shares_tree(result: VerificationResult, size: int, root: str) -> bool:
    """Whether ``result``'s valid checkpoints are all linked by consistency proofs and one of
    them is (size, root): then every entry it proves below ``size`` is that tree's entry."""
    valid = [c for c in result.checkpoints if c.valid]
    return (len({c.segment for c in valid}) == 1
            and any(c.size == size and c.root == root for c in valid))


def _compare_claims(labels: Sequence[str], results: Sequence[VerificationResult],
                    readable: Sequence[int], out: _Out) -> None:
    """A completeness claim (docs/bundle.md §4a) says what the log holds below its tree size for
    its scope's gateways; another bundle of the same log that proves more there shows the claim
    false. Compared only when both bundles hold the claim's checkpoint (and nothing in either is
    forked), so their log indices name the same entries. A registry event the other bundle
    proves counts only when its gateway is in the claimant's scope (an ``enroll`` below the
    claim's size, in either bundle, puts it there): another farm's gateway is not withheld from
    this farm's bundle, which never carries it."""
    for i in readable:
        c = results[i].completeness
        if c.status not in ("complete", "withheld") or c.size is None:
            continue
        head = next((x for x in results[i].checkpoints if x.valid and x.size == c.size), None)
        if head is None or head.root is None:
            continue
        mine_registry = set(results[i].registry_proven)
        mine_events = [r for r in results[i].registry_proven_events if r.log_index < c.size]
        scope = _scope_of(results[i])
        mine_messages = {m.index for m in results[i].messages}
        mine_messages.update(e.index for e in results[i].entries)
        claims = {g.gateway: g.claim for g in results[i].gateways if g.claim is not None}
        for j in readable:
            if j == i or results[j].origin != results[i].origin \
                    or not _shares_tree(results[j], c.size, head.root):
                continue
            pair = [labels[i], labels[j]]
            theirs = [r for r in results[j].registry_proven_events if r.log_index < c.size]
            members = {r.gateway for r in (*mine_events, *theirs)
                       if r.gateway is not None and r.event is not None
                       and in_scope(scope, r.gateway, r.event)}
            extra = sorted(r.log_index for r in theirs
                           if r.log_index not in mine_registry and r.gateway in members)
            if extra:
                out.add(FindingCode.REGISTRY_WITHHELD,
                        f"{labels[j]} proves {len(extra)} registry event(s) of gateways in "
                        f"{labels[i]}'s scope, of log {results[i].origin!r} below tree size "
                        f"{c.size} (log index "
                        f"{', '.join(map(str, extra[:5]))}{', …' if len(extra) > 5 else ''}) "
                        f"that {labels[i]} does not carry, though its completeness claim, "
                        "signed with the log key, says it carries them all: the claim is false",
                        None, pair)
            missing: Counter[str] = Counter()
            for m in results[j].messages:
                claim = claims.get(m.gateway)
                if (claim is None or claim.from_seq is None or claim.to_seq is None
                        or m.index >= c.size or m.index in mine_messages):
                    continue
                if claim.from_seq <= m.seq <= claim.to_seq:
                    missing[m.gateway] += 1
            for gw, n in sorted(missing.items()):
                out.add(FindingCode.MESSAGES_WITHHELD,
                        f"{labels[j]} proves {n} message(s) of {gw} in the run its "
                        f"completeness claim in {labels[i]} lists as complete (below tree size "
                        f"{c.size}), which {labels[i]} does not carry: the claim is false",
                        gw, pair)


def _scope_of(result: VerificationResult) -> Scope:
    """A verified bundle's scope (its farm, field and gateway are what membership needs)."""
    s = result.scope
    farm, fld, gw = s.get("farm"), s.get("field"), s.get("gateway")
    return Scope(farm if isinstance(farm, str) else None, fld if isinstance(fld, str) else None,
                 gw if isinstance(gw, str) else None, float(s.get("from") or 0.0),
                 float(s.get("to") or 0.0))


def _compare_keys(labels: Sequence[str], results: Sequence[VerificationResult],
                  readable: Sequence[int], out: _Out) -> None:
    """A gateway has one key history. Two logs may enroll it at different points (a collector
    added after a rotation enrolls the newer key), so two enrollments agree when either key is
    in the other log's history; unrelated keys mean one log trusts a key the gateway never
    had."""
    first: dict[str, tuple[int, GatewaySummary]] = {}
    for i in readable:
        for g in results[i].gateways:
            if not g.public_key:
                continue
            ref = first.setdefault(g.gateway, (i, g))
            j, h = ref
            if j == i or g.public_key == h.public_key:
                continue
            if g.public_key in h.keys or h.public_key in g.keys:
                continue
            out.add(FindingCode.GATEWAY_KEY_MISMATCH,
                    f"{g.gateway} is enrolled with key {h.public_key[:16]}… in {labels[j]} "
                    f"(log {results[j].origin!r}) but with key {g.public_key[:16]}… in "
                    f"{labels[i]} (log {results[i].origin!r}), and neither log's history has "
                    "the other key: one log trusts a key the gateway never had. Ask the "
                    "operator which enrollment is genuine",
                    g.gateway, [labels[j], labels[i]])


def _compare_copies(labels: Sequence[str], results: Sequence[VerificationResult],
                    getters: Sequence[Callable[[int], bytes | None]], gw: str, seq: int,
                    holders: Sequence[tuple[int, VerifiedMessage]], cg: CombinedGateway,
                    out: _Out) -> None:
    """One seq held by several bundles: the same message logged by two logs (a redelivery),
    the same entry of one log in two bundles (nothing to say), or different messages."""
    i0, m0 = holders[0]
    b0 = getters[i0](m0.index)
    twice: list[int] = []
    for i, m in holders[1:]:
        if results[i].origin == results[i0].origin and m.index == m0.index:
            continue  # one log's entry in two of its bundles
        b = getters[i](m.index)
        same = (b == b0) if (b is not None and b0 is not None) else (
            _payload_of(m) == _payload_of(m0))
        if same:
            twice.append(i)
            continue
        cg.conflicts += 1
        out.add(FindingCode.CONFLICTING_MESSAGE,
                f"{gw} seq {seq} is a different signed message in {labels[i0]} (log index "
                f"{m0.index}) and in {labels[i]} (log index {m.index}), both valid with the "
                "gateway's key: a gateway never reuses a sequence number, so one is a forged "
                "or replayed message, or the gateway (its key or state) was copied",
                gw, [labels[i0], labels[i]])
    if twice:
        cg.logged_twice += 1
        names = [labels[i0], *(labels[i] for i in twice)]
        out.add(FindingCode.LOGGED_TWICE,
                f"{gw} seq {seq} (the identical signed message) is in {' and '.join(names)}: "
                "MQTT redelivered it and two collectors both logged it; it counts once", gw,
                names)


def _summarise(cg: CombinedGateway, msgs: Sequence[VerifiedMessage], labels: Sequence[str],
               out: _Out) -> None:
    """Counts and sequence gaps of one gateway over the union (``msgs`` in seq order)."""
    count_messages(cg, msgs)
    holders = list(cg.bundles)
    for gap in cg.gaps:
        out.add(FindingCode.SEQUENCE_GAP,
                f"{cg.gateway} is missing seq {gap.first_missing}–{gap.last_missing} "
                f"({gap.size} message(s)) between {fmt_time(gap.after_time)} and "
                f"{fmt_time(gap.before_time)}, in none of the {len(labels)} bundles: "
                "lost, never sent, or withheld — the evidence cannot tell which",
                cg.gateway, holders)


def _clock_across_logs(gw: str, msgs: Sequence[VerifiedMessage], source: dict[int, int],
                       labels: Sequence[str], tolerance_s: float, out: _Out) -> None:
    """Clock and boot steps back between consecutive messages that sit in different logs:
    each bundle alone sees only its own share, so a step across two logs is seen only here
    (steps within one bundle are that bundle's own findings already)."""
    backwards, boots = clock_steps_back(msgs, tolerance_s)
    for code, pairs, what in (
        (FindingCode.CLOCK_BACKWARDS, backwards, "its clock went backwards within a boot"),
        (FindingCode.BOOT_BACKWARDS, boots,
         "its boot counter went down while its sequence went up"),
    ):
        for a, b in pairs:
            ia, ib = source[a.seq], source[b.seq]
            if ia == ib:
                continue
            out.add(code,
                    f"{gw}: {what} between seq {a.seq} (boot {a.boot}, "
                    f"{fmt_time(a.first_time)}, in {labels[ia]}) and seq {b.seq} (boot "
                    f"{b.boot}, {fmt_time(b.first_time)}, in {labels[ib]}) — two logs, so "
                    "neither bundle alone shows it", gw, (labels[ia], labels[ib]))


# ----------------------------------------------------------------------------- the result


@dataclass
class BundleOutcome:
    """One input bundle: its label (the file name) and its own, complete verification."""

    label: str
    result: VerificationResult
    #: the bundle's findings in this verification (its own sequence gaps are judged over
    #: the union instead) and the verdict they give
    findings: list[Finding] = dc_field(default_factory=list)
    verdict: Verdict = "fail"

    def to_json(self) -> dict[str, Any]:
        d = self.result.to_json()
        d["label"] = self.label
        d["verdict"] = self.verdict
        d["passed"] = self.verdict != "fail"
        d["findings"] = [f.to_json() for f in self.findings]
        return d


@dataclass
class MultiResult:
    """A verification of several bundles: each bundle's own result, the combined analysis and
    the findings of matching keys and checkpoints to bundles; the verdict is the worst."""

    bundles: list[BundleOutcome]
    combined: Combined
    #: findings of the whole run (combined analysis, keys and known checkpoints matched to no
    #: bundle, the database comparison), each naming its bundles
    findings: list[Finding]
    #: the union as one result (messages each seq once, gateways with the union's gaps), for
    #: the report's charts and the database comparison
    union: VerificationResult
    offline: bool = False
    chain: str | None = None
    nodes: list[str] = dc_field(default_factory=list)
    verified_at: float = 0.0
    elapsed_s: float = 0.0
    influx: Any = None

    @property
    def verdict(self) -> Verdict:
        return worst([*(b.verdict for b in self.bundles), verdict_of(self.findings)])

    @property
    def passed(self) -> bool:
        return self.verdict != "fail"

    def all_findings(self) -> list[Finding]:
        """Every finding, worst first, each naming the bundle(s) it comes from."""
        found = list(self.findings)
        for b in self.bundles:
            found += [Finding(f.severity, f.code, f.message, f.gateway, f.count, (b.label,))
                      for f in b.findings]
        return sorted(found, key=lambda f: _ORDER.index(f.severity))

    def count(self, severity: Severity) -> int:
        return sum(f.count for f in self.all_findings() if f.severity == severity)

    def codes(self, severity: Severity | None = None) -> set[str]:
        return {f.code for f in self.all_findings() if severity is None or f.severity == severity}

    def summary(self) -> str:
        total = sum(b.result.total_messages for b in self.bundles)
        gws = self.combined.gateways
        failed = [b.label for b in self.bundles if b.verdict == "fail"]
        return (
            f"{len(self.bundles)} bundles of {len({b.result.origin for b in self.bundles})} "
            f"log(s): {len(self.combined.messages):,} distinct messages "
            f"({sum(g.readings for g in gws):,} readings) from {len(gws)} gateway(s) verified "
            f"of {total:,} in the bundles; {sum(len(g.gaps) for g in gws)} sequence gap(s) "
            f"over the union; {sum(g.logged_twice for g in gws)} logged twice, "
            f"{sum(g.conflicts for g in gws)} conflicting; "
            + (f"failed: {', '.join(failed)}; " if failed else "")
            + f"{self.count('error')} error(s), {self.count('warning')} warning(s)")

    def summary_line(self) -> str:
        label = {"pass": "PASS", "warn": "PASS WITH WARNINGS", "fail": "FAIL"}[self.verdict]
        return f"{label}: {self.summary()}"

    def to_json(self) -> dict[str, Any]:
        gws = self.combined.gateways
        return {
            "verdict": self.verdict,
            "passed": self.passed,
            "summary": self.summary_line(),
            "bundles": [b.to_json() for b in self.bundles],
            "combined": {
                "scope": self.combined.scope,
                "messages": {
                    "total": sum(b.result.total_messages for b in self.bundles),
                    "verified": len(self.combined.messages),
                    "readings_verified": sum(g.readings for g in gws),
                    "logged_twice": sum(g.logged_twice for g in gws),
                    "conflicting": sum(g.conflicts for g in gws),
                },
                "gateways": [g.to_json() for g in gws],
                "findings": [f.to_json() for f in self.findings],
            },
            "findings": [f.to_json() for f in self.all_findings()],
            "offline": self.offline,
            "chain": self.chain,
            "nodes": self.nodes,
            "influx": None if self.influx is None else self.influx.to_json(),
            "verified_at": self.verified_at,
            "elapsed_s": round(self.elapsed_s, 3),
        }
