"""What a verification says: findings, the per-checkpoint and per-gateway summaries, the
verified messages, and the tolerances that shape them. Shared by every step of the verifier
(:mod:`inspector.verify`), the multi-bundle analysis and the report, so it holds data only."""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from fieldproof.errors import ConfigError
from fieldproof.formats.bundle import AnchorRef, Entry, GatewayClaim, Limits
from inspector.findings import FindingCode, Severity, SeverityError

if TYPE_CHECKING:
    from inspector.anchor_scan import ScanRange
    from inspector.policy import Policy

__all__ = [
    "MAX_FINDINGS_PER_CODE", "AnchorCheck", "CheckpointSummary", "CompletenessCheck", "Finding",
    "Findings", "GatewaySummary", "KnownCheckpoint", "NodeAnswer", "ProvenRegistryEvent",
    "SeqGap", "Severity", "UsageError", "VerificationResult", "VerifiedMessage",
    "VerifiedReading", "VerifyOptions", "count_noun", "fmt_time", "gateway_of",
    "readings_in_scope",
]

#: findings of one code kept in full; further ones are only counted
MAX_FINDINGS_PER_CODE = 20


class UsageError(ConfigError):
    """The verifier was called wrongly (bad key string, no node to ask...): exit code 2."""


# ----------------------------------------------------------------------------- results


@dataclass
class Finding:
    """One thing the inspector should know. ``count`` > 1 folds repeats of the same kind."""

    severity: Severity
    code: str
    message: str
    gateway: str | None = None
    count: int = 1
    #: which input bundle(s) it comes from, in a verification of several (empty for one)
    bundles: tuple[str, ...] = ()

    @classmethod
    def of(cls, code: FindingCode, message: str, gateway: str | None = None,
           bundles: tuple[str, ...] = ()) -> Finding:
        """A finding of ``code`` at its own severity."""
        return cls(code.severity, code, message, gateway, bundles=bundles)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"severity": self.severity, "code": str(self.code),
                             "message": self.message, "gateway": self.gateway,
                             "count": self.count}
        if self.bundles:  # only in a verification of several: one bundle's JSON is unchanged
            d["bundles"] = list(self.bundles)
        return d


@dataclass(frozen=True)
class NodeAnswer:
    """What one chain node said about one anchor."""

    node: str
    ok: bool
    detail: str = ""
    block_number: int | None = None
    block_id: str | None = None
    block_time: int | None = None
    finalized: bool = False
    sender: str | None = None
    reachable: bool = True

    def facts(self) -> tuple[Any, ...]:
        return (self.block_number, self.block_id, self.block_time)


@dataclass
class AnchorCheck:
    ref: AnchorRef
    checked: bool = False
    verified: bool = False
    answers: list[NodeAnswer] = dc_field(default_factory=list)
    block_time: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"claim": self.ref.to_obj(), "checked": self.checked, "verified": self.verified,
                "block_time": self.block_time,
                "nodes": [a.__dict__ for a in self.answers]}


@dataclass
class CheckpointSummary:
    position: int
    size: int | None
    root: str | None
    valid: bool
    problem: str = ""
    anchors: list[AnchorCheck] = dc_field(default_factory=list)
    anchored: bool = False
    anchor_time: int | None = None
    consistent_with_next: bool | None = None
    segment: int = 0
    note: bytes = b""  # the signed note as carried (not in to_json: --save-checkpoint writes it)

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "size": self.size, "root": self.root,
                "valid": self.valid, "problem": self.problem, "anchored": self.anchored,
                "anchor_time": self.anchor_time,
                "consistent_with_next": self.consistent_with_next,
                "anchors": [a.to_json() for a in self.anchors]}


@dataclass
class KnownCheckpoint:
    """A checkpoint the inspector already trusted (``--known-checkpoint``) and how the bundle
    relates to it: ``linked`` (the bundle holds it and every checkpoint of the bundle is
    consistent with it), ``conflict`` (the bundle's history differs from it), ``unlinked``
    (nothing in the bundle proves either) or ``invalid`` (not this log's checkpoint)."""

    number: int
    size: int | None
    root: str | None
    status: Literal["linked", "conflict", "unlinked", "invalid"] = "invalid"
    position: int | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class SeqGap:
    first_missing: int
    last_missing: int
    after_time: float
    before_time: float

    @property
    def size(self) -> int:
        return self.last_missing - self.first_missing + 1


class VerifiedReading(NamedTuple):
    """One reading of a verified message (the fields of :class:`fieldproof.wire.Reading`)."""

    sensor: str
    quantity: str
    unit: str
    value: float | None
    time: float
    missing_reason: str


@dataclass(slots=True)
class VerifiedMessage:
    """A message whose key and signature checked out (and, unless ``anchored`` is False
    because it is newer than every checkpoint, its inclusion proof)."""

    index: int
    gateway: str
    seq: int
    boot: int
    readings: tuple[VerifiedReading, ...]
    anchored: bool
    anchor_time: int | None
    first_time: float = 0.0
    last_time: float = 0.0

    def __post_init__(self) -> None:
        times = [r.time for r in self.readings]
        self.first_time, self.last_time = min(times), max(times)


@dataclass
class GatewaySummary:
    gateway: str
    farm: str | None = None
    field: str | None = None
    location: str = ""
    public_key: str = ""
    enrolled_index: int | None = None
    enrolled_time: float | None = None
    revoked_index: int | None = None
    messages: int = 0
    verified_messages: int = 0
    readings: int = 0
    missing_values: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_time: float | None = None
    last_time: float | None = None
    gaps: list[SeqGap] = dc_field(default_factory=list)
    outside_anchored: int = 0
    clock: Counter[str] = dc_field(default_factory=Counter)
    #: every key (hex) the proven registry gives the gateway (enrollments, valid rotations):
    #: compared across logs in a verification of several bundles; not in the JSON
    keys: tuple[str, ...] = ()
    #: what the completeness check says of this gateway (docs/bundle.md §5 step 8):
    #: "complete", "head cut", "tail cut", "head and tail cut", "messages withheld",
    #: "withheld" (nothing of it), or "" (no claim to check against)
    completeness: str = ""
    #: the exporter's signed claim about it (first, latest, from, to, count), when there is one
    claim: GatewayClaim | None = None

    @property
    def missing_messages(self) -> int:
        return sum(g.size for g in self.gaps)

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items()
             if k not in ("gaps", "clock", "keys", "claim")}
        c = self.claim
        d["claim"] = None if c is None else {
            "first_seq": c.first_seq, "latest_seq": c.latest_seq, "from_seq": c.from_seq,
            "to_seq": c.to_seq, "count": c.count}
        d["gaps"] = [g.__dict__ for g in self.gaps]
        d["missing_messages"] = self.missing_messages
        d["clock_anomalies"] = dict(self.clock)
        return d


@dataclass
class CompletenessCheck:
    """Whether the bundle shows it holds every gateway of its scope and every message of the
    period (docs/bundle.md §4a, §5 step 8).

    ``status``: ``complete`` (the exporter's claim, signed with the log key, checks out against
    the bundle), ``withheld`` (the claim shows evidence was left out), ``invalid`` (the claim
    does not check out: not signed by the log key, another scope or checkpoint, or contradicted
    by the bundle), ``unproven`` (no claim: a version 1 bundle, or no checkpoint)."""

    status: Literal["complete", "withheld", "invalid", "unproven"] = "unproven"
    size: int | None = None
    registry_claimed: int | None = None
    registry_held: int | None = None
    gateways: list[str] = dc_field(default_factory=list)
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def line(self) -> str:
        """One line for terminals and the report."""
        if self.status == "complete":
            return (f"complete: the log key signs that the bundle holds all "
                    f"{self.registry_claimed} registry event(s) of this scope's gateways below "
                    f"tree size {self.size} and every message of the scope's "
                    f"{len(self.gateways)} "
                    "gateway(s) from just before to just after the period; the bundle agrees")
        return f"{self.status.upper()}: {self.detail}"


class ProvenRegistryEvent(NamedTuple):
    """A registry entry whose inclusion proof holds, as bundles verified together compare them
    (:mod:`inspector.combine`)."""

    log_index: int
    #: its gateway id, None when it names none
    gateway: str | None
    #: the event as parsed (None when it is not one): unverified, only to tell the scope
    event: Mapping[str, Any] | None


@dataclass
class VerificationResult:
    verdict: Literal["pass", "warn", "fail"] = "fail"
    scope: dict[str, Any] = dc_field(default_factory=dict)
    origin: str = ""
    log_key: str = ""
    log_key_pinned: bool = False
    offline: bool = False
    chain: str | None = None
    nodes: list[str] = dc_field(default_factory=list)
    findings: list[Finding] = dc_field(default_factory=list)
    gateways: list[GatewaySummary] = dc_field(default_factory=list)
    checkpoints: list[CheckpointSummary] = dc_field(default_factory=list)
    known_checkpoints: list[KnownCheckpoint] = dc_field(default_factory=list)
    completeness: CompletenessCheck = dc_field(default_factory=CompletenessCheck)
    #: what the log's completeness seal showed (docs/bundle.md §5 step 9,
    #: :meth:`inspector.seal_check.SealCheck.to_json`); None before that step ran
    seal: dict[str, Any] | None = None
    #: ``--policy``: what the policy made of each checkpoint
    #: (:meth:`inspector.policy_check.PolicyCheck.to_json`); None without a policy
    policy: dict[str, Any] | None = None
    #: ``--mirror`` / ``--witness-checkpoint``: each outside view and how it compared
    #: (:meth:`inspector.split_view.OutsideView.to_json`)
    outside_checkpoints: list[dict[str, Any]] = dc_field(default_factory=list)
    #: ``--all-anchors``: the scan and every anchor found
    #: (:meth:`inspector.anchor_scan.AllAnchorsCheck.to_json`); None without it
    all_anchors: dict[str, Any] | None = None
    messages: list[VerifiedMessage] = dc_field(default_factory=list)
    total_messages: int = 0
    registry_events: int = 0
    elapsed_s: float = 0.0
    verified_at: float = 0.0
    bundle_notes: list[str] = dc_field(default_factory=list)
    #: why the bundle could not be read at all ("" when it was): then it is all the summary says
    unreadable: str = ""
    influx: Any = None  # inspector.report.InfluxComparison when --against-influx was used
    #: the bundle's message entries (log index order), kept only when asked
    #: (``keep_entries``): a verification of several bundles compares the bytes of messages
    #: two logs both hold. Not in the JSON.
    entries: Sequence[Entry] = ()
    #: log indices of the registry entries whose inclusion proof holds, also kept only with
    #: ``keep_entries``: bundles of one log verified together check each other's completeness
    #: claims against them. Not in the JSON.
    registry_proven: tuple[int, ...] = ()
    #: the same entries with their gateway and parsed event (unverified fields, only to tell
    #: which scope's gateways they belong to), kept only with ``keep_entries``. Not in the JSON.
    registry_proven_events: tuple[ProvenRegistryEvent, ...] = ()

    @property
    def passed(self) -> bool:
        return self.verdict != "fail"

    def count(self, severity: Severity) -> int:
        return sum(f.count for f in self.findings if f.severity == severity)

    def codes(self, severity: Severity | None = None) -> set[str]:
        return {f.code for f in self.findings if severity is None or f.severity == severity}

    @property
    def verified_readings(self) -> int:
        return sum(len(m.readings) for m in self.messages)

    def summary_line(self) -> str:
        """One line for logs and terminals: verdict and what was verified."""
        label = {"pass": "PASS", "warn": "PASS WITH WARNINGS", "fail": "FAIL"}[self.verdict]
        return f"{label}: {self.summary()}"

    def summary(self) -> str:
        if self.unreadable:
            return f"the bundle cannot be read: {self.unreadable}"
        anchored = sum(1 for c in self.checkpoints if c.anchored)
        where = ("anchors not checked (offline)" if self.offline else
                 f"{anchored}/{len(self.checkpoints)} checkpoints anchored on "
                 f"{self.chain or 'no chain'} ({len(self.nodes)} node(s))")
        gaps = sum(len(g.gaps) for g in self.gateways)
        complete = {"complete": "complete", "withheld": "EVIDENCE WITHHELD",
                    "invalid": "completeness claim INVALID",
                    "unproven": "completeness UNPROVEN"}[self.completeness.status]
        if self.seal is not None:
            complete += {"sealed": " and sealed", "absent": " (NO SEAL)",
                         "withheld": "; the log's seal shows EVIDENCE WITHHELD",
                         "invalid": "; the log's seal is INVALID or contradicted"
                         }[self.seal["status"]]
        return (
            f"{len(self.messages):,}/{self.total_messages:,} messages "
            f"({self.verified_readings:,} readings) from {len(self.gateways)} gateway(s) "
            f"verified; {where}; {complete}; {gaps} sequence gap(s); "
            f"{self.count('error')} error(s), {self.count('warning')} warning(s)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "passed": self.passed,
            "summary": self.summary_line(),
            "scope": self.scope,
            "log": {"origin": self.origin, "vkey": self.log_key, "pinned": self.log_key_pinned},
            "offline": self.offline,
            "chain": self.chain,
            "nodes": self.nodes,
            "messages": {"total": self.total_messages, "verified": len(self.messages),
                         "readings_verified": self.verified_readings},
            "registry_events": self.registry_events,
            "findings": [f.to_json() for f in self.findings],
            "gateways": [g.to_json() for g in self.gateways],
            "checkpoints": [c.to_json() for c in self.checkpoints],
            "known_checkpoints": [k.to_json() for k in self.known_checkpoints],
            "completeness": self.completeness.to_json(),
            "seal": self.seal,
            "policy": self.policy,
            "outside_checkpoints": self.outside_checkpoints,
            "all_anchors": self.all_anchors,
            "influx": None if self.influx is None else self.influx.to_json(),
            "bundle_notes": self.bundle_notes,
            "verified_at": self.verified_at,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class Findings:
    """Collects findings, folding repeats of one (code, gateway) past a limit into a count."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._seen: Counter[tuple[str, str | None]] = Counter()
        self._overflow: dict[tuple[str, str | None], Finding] = {}

    def add(self, code: FindingCode, message: str, gateway: str | None = None,
            count: int = 1, *, severity: Severity | None = None) -> None:
        """Record a finding of ``code`` (at its own severity unless ``severity``, one the code
        allows, says otherwise)."""
        if severity is None:
            severity = code.severity
        elif severity not in code.severities:
            raise SeverityError(f"{code} is never reported as {severity} (docs/bundle.md §7 "
                                f"says {' or '.join(code.severities)})")
        key = (code, gateway)
        self._seen[key] += 1
        if self._seen[key] <= MAX_FINDINGS_PER_CODE:
            self.items.append(Finding(severity, code, message, gateway, count))
            return
        more = self._overflow.get(key)
        if more is None:
            more = Finding(severity, code, "", gateway, 0)
            self._overflow[key] = more
            self.items.append(more)
        more.count += count
        more.message = f"… and {more.count:,} more like the above"

    def extend(self, other: Findings) -> None:
        """Add what ``other`` collected, in its order (a step's findings held back until it
        is known whether they are worth reporting)."""
        for f in other.items:
            self.add(FindingCode(f.code), f.message, f.gateway, f.count, severity=f.severity)


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class VerifyOptions:
    """Tolerances. Clock checks are warnings: they flag a gateway's clock, not forgery."""

    future_tolerance_s: float = 300.0
    enrollment_slack_s: float = 86_400.0
    late_after_s: float = 30 * 86_400.0
    backwards_tolerance_s: float = 1.0
    workers: int | None = None
    node_timeout_s: float = 15.0
    limits: Limits = dc_field(default_factory=Limits)
    #: ``--require-complete``: a bundle whose completeness no log seal proves fails
    require_complete: bool = False
    #: ``--policy``: the trust policy checkpoints are judged by (docs/bundle.md §5 step 4a);
    #: ``--require-quorum``: only witness cosignatures count under it, not anchors
    policy: Policy | None = None
    require_quorum: bool = False
    #: ``--mirror`` (directories or URLs) and ``--witness-checkpoint`` (name, note): views of
    #: the log from outside the bundle, for split views (§5 step 3a)
    mirrors: tuple[str, ...] = ()
    witness_checkpoints: tuple[tuple[str, bytes], ...] = ()
    #: ``--all-anchors``: scan the chain for every anchor of the log (§5 step 4b)
    all_anchors: ScanRange | None = None



def fmt_time(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "?"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return f"{t:.0f}"


def readings_in_scope(
    result: VerificationResult,
) -> Iterable[tuple[VerifiedMessage, VerifiedReading]]:
    """Verified readings whose sample time lies in the bundle's period."""
    start, end = result.scope.get("from", -math.inf), result.scope.get("to", math.inf)
    for m in result.messages:
        for r in m.readings:
            if start <= r.time <= end:
                yield m, r


def gateway_of(result: VerificationResult) -> Callable[[str], GatewaySummary | None]:
    by = {g.gateway: g for g in result.gateways}
    return by.get


def count_noun(n: int, noun: str) -> str:
    """``1 message``, ``3 messages``: the words an inspector reads."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
