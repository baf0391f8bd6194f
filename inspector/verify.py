"""The independent verifier: checks an evidence bundle and says what it proves, as findings.

Trusts nothing in the bundle. What it checks (docs/bundle.md §Verification):

1. the bundle's structure and limits (:func:`fieldproof.formats.bundle.decode_bundle`);
2. every checkpoint's signature with the log key (pinned with ``log_key``, else the bundle's own,
   which is then a warning), and the consistency proof between each pair of successive
   checkpoints (a failure means history was rewritten behind a checkpoint); checkpoints the
   inspector already trusts (``known_checkpoints``) must be among them and consistent with all;
3. every anchor on chain through every node given (Thor: :func:`anchor.thor_reader.verify_anchor`;
   EVM: :func:`anchor.evm.read_anchor`, plus the genesis block when the anchor names it),
   finality required, the record matching the checkpoint's origin, size and root; the nodes'
   answers are compared and any disagreement is an error, never averaged away;
4. every registry event's and message's inclusion proof into the first bundle checkpoint above
   it, the gateway-signed requests registry events embed (:mod:`inspector.enrollment_checks`), each
   message's COSE signature against the key enrolled for its gateway at that log position
   (enroll, rotate and revoke events in log order; :mod:`inspector.batch`);
5. per gateway: sequence gaps with their time spans, messages outside the anchored range, clock
   anomalies (samples later than the block that anchors them, implausibly old, going backwards
   within a boot).

The result is a :class:`VerificationResult`: findings (error / warning / info), per-gateway and
per-checkpoint summaries and the verified readings; ``passed`` is True when no finding is an
error. Signature checks are the cost: large bundles spread them over all cores, and nothing
else is allowed to cost much beside them (benchmarks/bench_verify.py).
"""

from __future__ import annotations

import bisect
import gc
import hashlib
import itertools
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal, NamedTuple, Protocol

from fieldproof.errors import ConfigError
from fieldproof.formats import merkle
from fieldproof.formats.anchor_record import AnchorRecord
from fieldproof.formats.bundle import (
    AnchorRef,
    Bundle,
    BundleError,
    Entry,
    GatewayClaim,
    Limits,
    decode_bundle,
    in_scope,
    parse_claim_note,
)
from fieldproof.formats.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
)
from fieldproof.formats.note import Ed25519Verifier, NoteError, open_note
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.wire import gateway_id_for, open_message
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
    _claimed_seq,
    inclusion_problem,
)
from inspector.enrollment_checks import enrollment_problem, rotation_problem

__all__ = [
    "AnchorCheck",
    "CheckpointSummary",
    "CompletenessCheck",
    "Finding",
    "GatewaySummary",
    "InfluxAuth",
    "KnownCheckpoint",
    "NodeAnswer",
    "SeqGap",
    "UsageError",
    "VerificationResult",
    "VerifiedMessage",
    "VerifiedReading",
    "VerifyOptions",
    "verify_bundle",
]

Severity = Literal["error", "warning", "info"]

#: sample times before this (2020-01-01) mean a clock that was never set (a Pi without RTC)
PLAUSIBLE_EPOCH = 1_577_836_800.0
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

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"severity": self.severity, "code": self.code,
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
    messages: list[VerifiedMessage] = dc_field(default_factory=list)
    total_messages: int = 0
    registry_events: int = 0
    elapsed_s: float = 0.0
    verified_at: float = 0.0
    bundle_notes: list[str] = dc_field(default_factory=list)
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
        anchored = sum(1 for c in self.checkpoints if c.anchored)
        where = ("anchors not checked (offline)" if self.offline else
                 f"{anchored}/{len(self.checkpoints)} checkpoints anchored on "
                 f"{self.chain or 'no chain'} ({len(self.nodes)} node(s))")
        gaps = sum(len(g.gaps) for g in self.gateways)
        complete = {"complete": "complete", "withheld": "EVIDENCE WITHHELD",
                    "invalid": "completeness claim INVALID",
                    "unproven": "completeness UNPROVEN"}[self.completeness.status]
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
            "influx": None if self.influx is None else self.influx.to_json(),
            "bundle_notes": self.bundle_notes,
            "verified_at": self.verified_at,
            "elapsed_s": round(self.elapsed_s, 3),
        }


class _Findings:
    """Collects findings, folding repeats of one (code, gateway) past a limit into a count."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self._seen: Counter[tuple[str, str | None]] = Counter()
        self._overflow: dict[tuple[str, str | None], Finding] = {}

    def add(self, severity: Severity, code: str, message: str, gateway: str | None = None,
            count: int = 1) -> None:
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


# ----------------------------------------------------------------------------- chain


def _thor_answer(client: Any, url: str, ref: AnchorRef, cp: Checkpoint) -> NodeAnswer:
    from anchor.thor_client import NodeUnreachable, ThorClientError
    from anchor.thor_reader import AnchorVerificationError, verify_anchor

    try:
        v = verify_anchor(client, ref.tx, cp.origin, cp.size, cp.root_hash,
                          genesis_id=ref.network, require_finalized=True)
    except AnchorVerificationError as exc:
        return NodeAnswer(url, False, str(exc))
    except NodeUnreachable as exc:
        return NodeAnswer(url, False, f"unreachable: {exc.detail}", reachable=False)
    except ThorClientError as exc:
        return NodeAnswer(url, False, f"bad answer: {str(exc)[:300]}")
    except Exception as exc:  # a hostile node must not crash the verifier
        return NodeAnswer(url, False, f"bad answer: {type(exc).__name__}: {str(exc)[:300]}")
    return NodeAnswer(url, True, "", v.block_number, v.block_id.lower(), v.block_timestamp,
                      v.finalized, v.sender)


def _evm_answer(url: str, ref: AnchorRef, cp: Checkpoint, timeout: float) -> NodeAnswer:
    from anchor.evm_reader import (
        AnchorNotFoundError,
        ChainIdMismatchError,
        NodeUnavailableError,
        NotAnAnchorError,
        connect,
        genesis_hash,
        read_anchor,
    )

    try:
        w3 = connect(url, timeout)
        if ref.genesis is not None:
            # the chain id alone does not tell a network from a copy reusing its id
            genesis = genesis_hash(w3, url)
            if genesis != ref.genesis.lower():
                return NodeAnswer(
                    url, False, f"node {url} is on the chain whose genesis block is {genesis}, "
                    f"the anchor claims genesis {ref.genesis}: ask a node of that network")
        got = read_anchor(w3, ref.tx, chain_id=int(ref.network))
    except NodeUnavailableError as exc:
        return NodeAnswer(url, False, f"unreachable: {exc}", reachable=False)
    except (AnchorNotFoundError, NotAnAnchorError, ChainIdMismatchError) as exc:
        return NodeAnswer(url, False, str(exc))
    except Exception as exc:  # a hostile node must not crash the verifier
        return NodeAnswer(url, False, f"bad answer: {type(exc).__name__}: {str(exc)[:300]}")
    want = AnchorRecord.for_checkpoint(cp.origin, cp.size, cp.root_hash)
    if got.record != want:
        return NodeAnswer(
            url, False,
            f"tx {ref.tx} carries the record for size {got.record.tree_size} root "
            f"{got.record.root_hash.hex()}, not this checkpoint (size {cp.size} root "
            f"{cp.root_hash.hex()}{'' if got.record.matches(cp.origin) else ', another log'})")
    if not got.finalized:
        return NodeAnswer(url, False, f"block {got.block_number} holding tx {ref.tx} is not "
                          "finalized yet (or left the canonical chain); check again later")
    return NodeAnswer(url, True, "", got.block_number, got.block_hash.lower(), got.timestamp,
                      True, str(got.sender))


class _Chain:
    """Asks every node about every anchor of one chain kind; compares the answers."""

    def __init__(self, chain: str, nodes: Sequence[str], timeout: float) -> None:
        self.chain = chain
        self.nodes = list(nodes)
        self.timeout = timeout
        self._thor: dict[str, Any] = {}

    def close(self) -> None:
        for c in self._thor.values():
            c.close()

    def ask(self, url: str, ref: AnchorRef, cp: Checkpoint) -> NodeAnswer:
        if self.chain == "thor":
            from anchor.thor_client import ThorClient

            client = self._thor.get(url)
            if client is None:
                client = self._thor[url] = ThorClient(url, timeout=self.timeout, retries=1)
            return _thor_answer(client, url, ref, cp)
        return _evm_answer(url, ref, cp, self.timeout)

    def check(self, ref: AnchorRef, cp: Checkpoint, pos: int, out: _Findings) -> AnchorCheck:
        check = AnchorCheck(ref, checked=True)
        check.answers = [self.ask(url, ref, cp) for url in self.nodes]
        what = f"anchor of checkpoint {pos} (size {cp.size}) in {self.chain} tx {ref.tx}"
        good = [a for a in check.answers if a.ok]
        bad = [a for a in check.answers if not a.ok]
        for a in bad:
            if not a.reachable:
                out.add("error", "node_unreachable",
                        f"{what}: node {a.node} could not be asked ({a.detail}); the cross-check "
                        "is incomplete")
        facts = {a.facts() for a in good}
        if good and (len(facts) > 1 or any(a.reachable for a in bad)):
            lines = "; ".join(
                f"{a.node}: " + (f"block {a.block_number} {a.block_id} time {a.block_time}"
                                 if a.ok else a.detail)
                for a in check.answers
            )
            out.add("error", "node_disagreement",
                    f"{what}: the nodes disagree, so no answer is trusted — {lines}")
            return check
        if not good:
            reasons = "; ".join(f"{a.node}: {a.detail}" for a in bad if a.reachable)
            if reasons:
                out.add("error", "anchor_invalid", f"{what} does not check out: {reasons}")
            return check
        a = good[0]
        check.verified = True
        check.block_time = a.block_time
        claims = (ref.block_number, ref.block_id, ref.block_time)
        if claims != a.facts():
            out.add("error", "anchor_claim_mismatch",
                    f"{what}: the bundle claims block {ref.block_number} {ref.block_id} time "
                    f"{ref.block_time}, the chain says block {a.block_number} {a.block_id} time "
                    f"{a.block_time}")
        return check


# ----------------------------------------------------------------------------- helpers


def _claimed_checkpoint(note: bytes) -> Checkpoint | None:
    """The checkpoint body a note claims, unverified (only to report and place entries)."""
    try:
        text = note.decode("utf-8")
        split = text.rfind("\n\n")
        return parse_checkpoint(text[: split + 1]) if split >= 0 else None
    except (UnicodeDecodeError, CheckpointError, ValueError):
        return None


def _inclusion(entry: Entry, size: int, root: bytes, hashes: Any) -> str | None:
    """None if ``entry`` is leaf ``entry.index`` of the tree (size, root), else why not."""
    return inclusion_problem(entry.index, entry.data, size, root, hashes)


def _link_known(number: int, note: bytes, verifier: Ed25519Verifier | None, origin: str,
                cps: Sequence[CheckpointSummary], opened: Sequence[Checkpoint | None],
                out: _Findings) -> KnownCheckpoint:
    """How the bundle relates to a checkpoint the inspector trusts (docs/bundle.md §5 step 3).

    Linked only through the bundle's own chain of consistency proofs: the bundle must hold a
    checkpoint of the same size and root, and every valid checkpoint of the bundle must be in
    that checkpoint's segment (linked to it by consistency proofs, earlier or later)."""
    claimed = _claimed_checkpoint(note)
    k = KnownCheckpoint(number, claimed.size if claimed else None,
                        claimed.root_hash.hex() if claimed else None)
    what = f"known checkpoint #{number}"
    if verifier is None:
        k.detail = "there is no usable log key to check it with"
        out.add("error", "known_checkpoint_invalid", f"{what} cannot be checked: {k.detail}")
        return k
    try:
        cp = open_checkpoint(note, verifier, origin=origin)
    except (NoteError, CheckpointError) as exc:
        k.detail = str(exc)
        out.add("error", "known_checkpoint_invalid",
                f"{what} is not a checkpoint of log {origin!r} signed by the log key "
                f"({exc}): check you passed the right file, and the right --log-key")
        return k
    k.size, k.root = cp.size, cp.root_hash.hex()
    what = f"known checkpoint #{number} (size {cp.size}, root {cp.root_hash.hex()[:16]}…)"
    pos = next((p for p, c in enumerate(opened) if c is not None and c.size == cp.size), None)
    if pos is None:
        k.status = "unlinked"
        k.detail = "the bundle holds no checkpoint of this size"
        out.add("error", "known_checkpoint_unlinked",
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
        out.add("error", "known_checkpoint_conflict",
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
        out.add("error", "known_checkpoint_conflict",
                f"checkpoint(s) {', '.join(f'{c.position} (size {c.size})' for c in apart)} of "
                f"the bundle are not proven consistent with {what}: the history they sign "
                "differs from the one you trust (rewritten or forked)")
        return k
    k.status = "linked"
    k.detail = f"checkpoint {pos} of the bundle"
    return k


def _fmt_time(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "?"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
    except (OverflowError, OSError, ValueError):
        return f"{t:.0f}"


#: registry events a verifier understands: enroll and revoke (anchor.evidence), and rotate
#: (collector.enrollment: the gateway keeps its id, ``pk`` signs from seq ``from_seq`` on)
KEY_EVENTS = ("enroll", "revoke", "rotate")


_KeyEvent = KeyEvent


def _registry_event(entry: Entry) -> _KeyEvent | str:
    """A registry event's content, or why it is not a usable one."""
    obj = parse_registry_event(entry.data)
    if obj is None:
        return "not a registry event (fieldproof/registry/v1, deterministic CBOR)"
    gw, event, when = obj.get("gw"), obj.get("event"), obj.get("time")
    if event not in KEY_EVENTS or not isinstance(gw, str) or not gw:
        return "registry event lacks a known event type or gateway id"
    t = float(when) if isinstance(when, int | float) and math.isfinite(when) else None
    if event == "revoke":
        return _KeyEvent(entry.index, "revoke", time=t)
    pk = obj.get("pk")
    if not isinstance(pk, bytes) or len(pk) != 32:
        return f"{event} event of {gw} carries no 32-byte Ed25519 public key"
    if event == "rotate":
        prev, from_seq = obj.get("prev_pk"), obj.get("from_seq")
        if not isinstance(prev, bytes) or len(prev) != 32:
            return f"rotation of {gw} does not name the key it replaces (prev_pk)"
        if type(from_seq) is not int or from_seq < 1:
            return f"rotation of {gw} has no positive from_seq"
        return _KeyEvent(entry.index, "rotate", pk, time=t, from_seq=from_seq, prev_key=prev)
    farm, fld, loc = obj.get("farm"), obj.get("field"), obj.get("location", "")
    if gateway_id_for(pk) != gw:
        return (f"enrollment of {gw} carries a public key whose id is {gateway_id_for(pk)}: "
                "the key does not belong to this gateway")
    if not isinstance(farm, str) or not isinstance(fld, str) or not isinstance(loc, str):
        return f"enrollment of {gw} has non-text farm, field or location"
    return _KeyEvent(entry.index, "enroll", pk, farm, fld, loc, t)


# ----------------------------------------------------------------------------- the verifier


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while decoding a bundle and checking its messages. A
    large bundle makes a few hundred thousand small objects (entries, messages, readings) that
    all live to the end and form no cycles; the collector would walk them again and again as
    they pile up: ~0.9 s of a 100,000-message verification.
    Reference counting still frees everything else; the collector resumes afterwards (only if
    this call paused it, so concurrent verifications in threads leave it as they found it)."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def verify_bundle(
    data: bytes,
    *,
    nodes: list[str],
    chain: str | None,
    offline: bool,
    log_key: str | None,
    options: VerifyOptions | None = None,
    now: float | None = None,
    known_checkpoints: Sequence[bytes] = (),
    keep_entries: bool = False,
) -> VerificationResult:
    """Verify a bundle; see the module docstring. Raises :class:`UsageError` only for bad
    arguments, never for bad bundles or nodes: those are findings.

    ``known_checkpoints``: signed checkpoints (notes) of this log the inspector already trusts,
    e.g. from an earlier audit; the bundle must be provably consistent with each.
    ``keep_entries``: keep the message entries on the result (``entries``), for
    :func:`verify_bundles`."""
    pinned = parse_log_key(log_key) if log_key is not None else None
    known = list(enumerate(known_checkpoints, 1))
    return verify_one(data, nodes=nodes, chain=chain, offline=offline,
                      pinned_for=lambda origin: pinned, known_for=lambda origin: known,
                      options=options, now=now, keep_entries=keep_entries)


def parse_log_key(text: str) -> Ed25519Verifier:
    """A ``--log-key`` string as a verifier, or :class:`UsageError` saying what is wrong."""
    try:
        return Ed25519Verifier.from_vkey(text.strip())
    except NoteError as exc:
        raise UsageError(f"--log-key is not a verifier key (name+id+base64): {exc}") from None


def verify_one(
    data: bytes,
    *,
    nodes: Sequence[str],
    chain: str | None,
    offline: bool,
    pinned_for: Callable[[str], Ed25519Verifier | None],
    known_for: Callable[[str], Sequence[tuple[int, bytes]]],
    options: VerifyOptions | None = None,
    now: float | None = None,
    keep_entries: bool = False,
) -> VerificationResult:
    """:func:`verify_bundle` with the pinned key and the known checkpoints chosen by the log
    origin the bundle names (``pinned_for``, ``known_for``: numbered as the inspector gave
    them), which is known only once the bundle is read: what a verification of several
    bundles, each of another log, needs."""
    opts = options or VerifyOptions()
    started = time.perf_counter()
    now = time.time() if now is None else now
    if chain not in (None, "thor", "evm"):
        raise UsageError(f"--chain must be thor or evm, not {chain!r}")

    result = VerificationResult(offline=offline, nodes=list(nodes), verified_at=now)
    out = _Findings()
    try:
        with _no_cyclic_gc():
            bundle = decode_bundle(data, opts.limits)
    except BundleError as exc:
        out.add("error", "malformed_bundle", f"the bundle cannot be read: {exc}")
        result.completeness.detail = "the bundle cannot be read"
        result.findings = out.items
        result.verdict = "fail"
        result.elapsed_s = time.perf_counter() - started
        return result

    kinds = sorted({a.chain for c in bundle.checkpoints for a in c.anchors})
    if chain is None and not offline:
        if len(kinds) > 1:
            raise UsageError(f"the bundle has anchors on {' and '.join(kinds)}: say which to "
                             "check with --chain")
        chain = kinds[0] if kinds else None
    if not offline and chain in kinds and not nodes:
        raise UsageError(f"the bundle is anchored on {chain}: give at least one --node URL to "
                         "ask (several independent ones are better), or --offline")
    result.chain = chain
    if keep_entries:
        result.entries = bundle.messages
    try:
        _verify(bundle, result, out, pinned_for(bundle.origin), chain, nodes, offline, opts,
                now, known_for(bundle.origin), keep_entries)
    finally:
        result.findings = sorted(out.items, key=lambda f: ("error", "warning", "info").index(
            f.severity))
    errors = any(f.severity == "error" for f in result.findings)
    warnings = any(f.severity == "warning" for f in result.findings)
    result.verdict = "fail" if errors else "warn" if warnings else "pass"
    result.elapsed_s = time.perf_counter() - started
    return result


def _verify(
    bundle: Bundle,
    result: VerificationResult,
    out: _Findings,
    pinned: Ed25519Verifier | None,
    chain: str | None,
    nodes: Sequence[str],
    offline: bool,
    opts: VerifyOptions,
    now: float,
    known: Sequence[tuple[int, bytes]] = (),
    keep_entries: bool = False,
) -> None:
    s = bundle.scope
    result.scope = {"farm": s.farm, "field": s.field, "gateway": s.gateway,
                    "from": s.start, "to": s.end}
    result.origin = bundle.origin
    result.bundle_notes = list(bundle.notes)
    result.total_messages = len(bundle.messages)
    result.registry_events = len(bundle.registry)

    # -- the log key
    verifier: Ed25519Verifier | None = pinned
    if pinned is None:
        try:
            verifier = Ed25519Verifier.from_vkey(bundle.vkey)
        except NoteError as exc:
            out.add("error", "log_key_invalid", f"the bundle's log key is unusable: {exc}")
            verifier = None
        else:
            out.add("warning", "log_key_not_pinned",
                    "the log key was taken from the bundle itself: get the operator's published "
                    "key another way and pass it with --log-key, or a forger could have made "
                    "the whole log")
    elif bundle.vkey != pinned.vkey:
        out.add("info", "log_key_differs",
                f"the bundle names log key {bundle.vkey!r}; checked with the pinned key instead")
    result.log_key = verifier.vkey if verifier is not None else bundle.vkey
    result.log_key_pinned = pinned is not None
    if verifier is not None and verifier.name != bundle.origin:
        out.add("error", "log_key_invalid",
                f"the log key is for {verifier.name!r} but the bundle is for log "
                f"{bundle.origin!r}")

    # -- checkpoints, consistency, segments
    cps: list[CheckpointSummary] = []
    opened: list[Checkpoint | None] = []
    last_size = -1
    for pos, c in enumerate(bundle.checkpoints):
        claimed = _claimed_checkpoint(c.note)
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
                out.add("error", "checkpoint_invalid",
                        f"checkpoint {pos} (claims size {summary.size}) is not a valid signed "
                        f"checkpoint of this log: {exc}")
        if cp is not None and cp.size <= last_size:
            summary.problem = f"size {cp.size} does not grow past {last_size}"
            out.add("error", "checkpoint_order",
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
                    out.add("error", "consistency_failed",
                            f"checkpoint {pos} (size {b.size}) does not extend checkpoint "
                            f"{pos - 1} (size {a.size}): {exc}. The log was rewritten or "
                            "forked between them")
            cps[pos - 1].consistent_with_next = linked
            if not linked:
                segment += 1
        cps[pos].segment = segment
    result.checkpoints = cps
    result.known_checkpoints = [
        _link_known(n, note, verifier, bundle.origin, cps, opened, out)
        for n, note in known
    ]

    # where each entry is proven, and which anchor bounds it
    sizes = [c.size if c.size is not None else -1 for c in cps]
    # a placed entry needs a strictly growing list; a bad order is already an error
    monotone = all(b > a for a, b in itertools.pairwise(sizes))

    def place(index: int) -> int | None:
        if monotone:
            pos = bisect.bisect_right(sizes, index)
            return pos if pos < len(sizes) else None
        return next((p for p, sz in enumerate(sizes) if sz > index), None)

    def _quietly_included(entry: Entry) -> bool:
        pos = place(entry.index)
        cp = opened[pos] if pos is not None else None
        return cp is not None and _inclusion(entry, cp.size, cp.root_hash, bundle.hashes) is None

    # registry findings are reported after the anchors' (the order of docs/bundle.md §5), but
    # made first: the message checks need the key history, and run while nodes are asked
    early: list[tuple[Any, ...]] = []

    def later(*finding: Any) -> None:
        early.append(finding)

    def prove(entry: Entry, what: str, gateway: str | None) -> bool:
        """Whether an entry is included; an unprovable entry is a finding here."""
        pos = place(entry.index)
        if pos is None:
            return False
        cp = opened[pos]
        if cp is None:
            later("error", "inclusion_failed",
                  f"{what} at log index {entry.index} is proven into checkpoint {pos}, which "
                  "is not valid", gateway)
            return False
        why = _inclusion(entry, cp.size, cp.root_hash, bundle.hashes)
        if why is not None:
            later("error", "inclusion_failed",
                  f"{what} at log index {entry.index} is not in the log at checkpoint {pos} "
                  f"(size {cp.size}): {why}", gateway)
            return False
        return True

    # -- registry
    # the scope's gateways: a bundle carries only their registry events (a version 2 bundle
    # each one's whole key history, §4a), and a gateway is in the scope when any of its
    # enrollments is. An event of another scope's gateway has no business in a version 2
    # bundle and counts for nothing; what is wrong with it (a bad request, a broken rotation)
    # is that scope's business, not a finding here; that it is in the log is proven all the same.
    enrolled_here: set[str] = set()
    for entry in bundle.registry:
        obj = parse_registry_event(entry.data)
        gw = obj.get("gw") if obj is not None else None
        if isinstance(gw, str) and obj is not None and in_scope(s, gw, obj):
            enrolled_here.add(gw)

    def elsewhere(gw: str | None) -> bool:
        return bundle.version >= 2 and gw is not None and gw not in enrolled_here

    timeline: dict[str, list[_KeyEvent]] = defaultdict(list)
    for entry in bundle.registry:
        ev = _registry_event(entry)
        obj = parse_registry_event(entry.data)
        gw = obj.get("gw") if obj is not None and isinstance(obj.get("gw"), str) else None
        if isinstance(ev, str):
            if not elsewhere(gw):
                later("error", "registry_invalid",
                      f"registry entry at log index {entry.index}: {ev}", gw)
            continue
        assert gw is not None and obj is not None
        if ev.event == "enroll":
            problem = enrollment_problem(obj, gw, ev.public_key)
            if problem is not None and not elsewhere(gw):
                later("error", "enrollment_request_invalid",
                      f"enrollment of {gw} at log index {entry.index}: {problem}. The "
                      "operator's record of what the gateway declared cannot be trusted", gw)
        elif ev.event == "rotate":
            problem = rotation_problem(obj, gw, ev.public_key, ev.prev_key, ev.from_seq)
            if problem is not None:
                if not elsewhere(gw):
                    later("error", "registry_invalid",
                          f"rotation of {gw} at log index {entry.index}: {problem}; ignored", gw)
                continue
        included = prove(entry, f"registry event ({ev.event} {gw})", gw)
        if place(entry.index) is None:
            # only messages logged after it (so themselves unproven) can depend on it
            later("warning", "outside_anchored_range",
                  f"registry event ({ev.event} {gw}) at log index {entry.index} is in no "
                  "checkpoint of the bundle yet: it is not proven", gw)
            included = True
        if included:
            timeline[gw].append(ev)

    for gw, events in timeline.items():
        current: bytes | None = None
        last_from = 0
        for ev in events:
            if ev.event == "enroll":
                current, last_from = ev.public_key, 0
            elif ev.event == "rotate":
                if current is None or ev.prev_key != current or ev.from_seq <= last_from:
                    if elsewhere(gw):
                        continue
                    later("error", "registry_invalid",
                          f"rotation of {gw} at log index {ev.index} does not follow from its "
                          "key at that point (wrong previous key or from_seq): ignored", gw)
                else:
                    current, last_from = ev.public_key, ev.from_seq

    gateways: dict[str, GatewaySummary] = {}

    def summary_for(gw: str) -> GatewaySummary:
        g = gateways.get(gw)
        if g is None:
            g = gateways[gw] = GatewaySummary(gw)
            for ev in timeline.get(gw, []):
                if ev.event == "enroll" and g.enrolled_index is None:
                    g.enrolled_index, g.enrolled_time = ev.index, ev.time
                    g.farm, g.field, g.location = ev.farm, ev.field, ev.location
                    g.public_key = ev.public_key.hex()
                elif ev.event == "revoke" and g.revoked_index is None:
                    g.revoked_index = ev.index
            g.keys = tuple(dict.fromkeys(ev.public_key.hex() for ev in timeline.get(gw, [])
                                         if ev.event in ("enroll", "rotate")))
        return g

    for gw in timeline:
        if bundle.version == 1 or gw in enrolled_here:
            summary_for(gw)

    # -- messages: kid, key, inclusion and signature in inspector.batch, over all cores for
    # large bundles, starting now: the workers check while the chain nodes are asked below.
    # Answers arrive in log order and the common case (everything checks out) becomes a result
    # at once; anything else is kept and reported afterwards in the order of docs/bundle.md §5.
    heads = [(cp.size, cp.root_hash) if cp is not None else None for cp in opened]
    jobs: list[Job] = []
    places: list[int | None] = []
    for entry in bundle.messages:
        at = place(entry.index)
        places.append(at)
        jobs.append((entry.index, entry.data, at if at is not None and heads[at] else -1))
    checks = MessageChecks(jobs, Context(bundle.hashes, heads, timeline), opts.workers)
    try:
        # -- anchors
        checker = _Chain(chain, nodes, opts.node_timeout_s) if chain and not offline else None
        try:
            unchecked = 0
            for pos, (summary, cp) in enumerate(zip(cps, opened, strict=True)):
                if cp is None:
                    continue
                for ac in summary.anchors:
                    if offline:
                        unchecked += 1
                        summary.anchored = True
                        t = ac.ref.block_time
                        summary.anchor_time = t if summary.anchor_time is None else min(
                            summary.anchor_time, t)
                    elif checker is not None and ac.ref.chain == chain:
                        done = checker.check(ac.ref, cp, pos, out)
                        ac.checked, ac.verified = done.checked, done.verified
                        ac.answers = done.answers
                        ac.block_time = done.block_time
                        if done.verified and done.block_time is not None:
                            summary.anchored = True
                            summary.anchor_time = (done.block_time if summary.anchor_time is None
                                                   else min(summary.anchor_time, done.block_time))
                    else:
                        unchecked += 1
        finally:
            if checker is not None:
                checker.close()
        if offline and unchecked:
            out.add("warning", "anchors_not_checked",
                    f"--offline: {unchecked} anchor(s) were not checked on chain; anchored "
                    "ranges and time bounds below rest on the bundle's claims")
        elif unchecked:
            out.add("info", "anchors_not_checked",
                    f"{unchecked} anchor(s) on other chains than {chain or 'the one checked'} were "
                    "not checked")

        anchored_after: list[int | None] = [None] * len(cps)
        nxt: int | None = None
        for pos in range(len(cps) - 1, -1, -1):
            if nxt is not None and cps[nxt].segment != cps[pos].segment:
                nxt = None
            if cps[pos].anchored:
                nxt = pos
            anchored_after[pos] = nxt
        anchor_at = [cps[a].anchor_time if a is not None else None for a in anchored_after]
        for finding in early:
            out.add(*finding)

        with _no_cyclic_gc():  # see there: the objects made from here on are many
            verified: list[VerifiedMessage] = []
            odd: list[tuple[Entry, int | None, Result]] = []
            counts: Counter[str] = Counter()
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
            for gw, count in counts.items():
                summary_for(gw).messages += count
            unproven: Counter[str] = Counter()
            for entry, at, (kind, gw, value, _, revoked) in odd:
                if kind == NOT_A_MESSAGE:
                    out.add("error", "message_malformed",
                            f"message at log index {entry.index} is not a fieldproof message: "
                            f"{value}")
                    continue
                if at is not None and heads[at] is None:
                    out.add("error", "inclusion_failed",
                            f"message of {gw} at log index {entry.index} is proven into checkpoint "
                            f"{at}, which is not valid", gw)
                if kind == UNKNOWN_KEY:
                    enrolled = [ev.index for ev in timeline.get(gw or "", [])
                                if ev.event == "enroll"]
                    out.add("error", "unknown_key",
                            f"message at log index {entry.index} is from {gw}, which has no "
                            "enrollment in the evidence before it"
                            + (f" (enrolled only at log index {enrolled[0]})" if enrolled
                               else ""), gw)
                elif revoked is not None:
                    out.add("error", "revoked_key",
                            f"message at log index {entry.index} was logged after {gw} was revoked "
                            f"(log index {revoked})", gw)
            late = False
            for entry, at, (kind, gw, value, why, revoked) in odd:
                if kind in (NOT_A_MESSAGE, UNKNOWN_KEY):
                    continue
                assert gw is not None
                ok = at is not None and heads[at] is not None and revoked is None
                if why is not None:
                    out.add("error", "inclusion_failed",
                            f"message of {gw} at log index {entry.index} is not in the log at "
                            f"checkpoint {at}: {why}", gw)
                    ok = False
                if kind == BAD_SIGNATURE:
                    out.add("error", "bad_signature",
                            f"message at log index {entry.index} does not verify with {gw}'s "
                            f"enrolled key: {value}. Its content was changed or it was signed by "
                            "another key", gw)
                    continue
                if kind == MALFORMED:
                    out.add("error", "message_malformed",
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
            result.messages = verified

            # -- per gateway: counts, scope, gaps, anchoring, clocks
            by_gw: dict[str, list[VerifiedMessage]] = defaultdict(list)
            for m in verified:
                by_gw[m.gateway].append(m)
            # what the bundle holds of each gateway, whether its signature or its proof checks
            # out or not (either is its own finding, not a withheld message), and whether the
            # entry is proven into a valid checkpoint
            present: dict[str, list[Held]] = defaultdict(list)
            for m in verified:
                present[m.gateway].append(Held(m.seq, m.index, m, place(m.index) is not None))
            seen = {m.index for m in verified}
            for entry, at, (kind, gw, value, why, _) in odd:
                if gw is None or entry.index in seen:
                    continue
                seq = value[0] if kind == OK else _claimed_seq_of(entry.data)
                if seq is not None:
                    present[gw].append(Held(seq, entry.index, None, why is None and at is not None
                                            and heads[at] is not None))
            result.completeness = _check_completeness(
                bundle, verifier, opened, present, summary_for, out,
                lambda e: place(e.index) is not None and _quietly_included(e))
            if keep_entries:
                proven_events = []
                for e in bundle.registry:
                    if place(e.index) is not None and _quietly_included(e):
                        obj = parse_registry_event(e.data)
                        gw = obj.get("gw") if obj is not None else None
                        proven_events.append(ProvenRegistryEvent(
                            e.index, gw if isinstance(gw, str) else None, obj))
                result.registry_proven_events = tuple(proven_events)
                result.registry_proven = tuple(e.log_index for e in proven_events)
            for gw, g in sorted(gateways.items()):
                msgs = sorted(by_gw.get(gw, []), key=lambda m: (m.seq, m.index))
                _analyse_gateway(g, msgs, bundle, out, opts, now, unproven[gw],
                                 gw in enrolled_here)
            if not verified:
                out.add("warning", "no_readings",
                        "the bundle proves no readings for this scope and period")
            result.gateways = [gateways[k] for k in sorted(gateways)]
    finally:
        checks.close()


class Held(NamedTuple):
    """A message entry the bundle carries, as the completeness check sees it."""

    seq: int
    log_index: int
    #: the verified message, when its signature checked out
    message: VerifiedMessage | None
    #: whether its inclusion proof into a valid checkpoint holds
    proven: bool


def _claimed_seq_of(data: bytes) -> int | None:
    """The seq a message claims, unverified (its signature failed or its key is unknown): only
    to count it as present for the completeness check."""
    try:
        return _claimed_seq(open_message(data)[1].payload)
    except Exception:  # hostile bytes: not a message, so nothing to count
        return None


def _check_completeness(
    bundle: Bundle,
    verifier: Ed25519Verifier | None,
    opened: Sequence[Checkpoint | None],
    present: dict[str, list[Held]],
    summary_for: Callable[[str], GatewaySummary],
    out: _Findings,
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
        out.add("warning", "completeness_unproven",
                f"{check.detail}: nothing shows that it holds every gateway of the scope and "
                "every message of the period — gateways or messages may have been left out. "
                "Ask the operator for a new export (fieldproof export writes format version 2)")
        return check
    check.size, check.registry_claimed = c.size, c.registry
    check.gateways = [g.gateway for g in c.gateways]

    def invalid(why: str) -> CompletenessCheck:
        check.status, check.detail = "invalid", why
        out.add("error", "completeness_claim_invalid",
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
                       f"{c.scope.gateway!r}, {_fmt_time(c.scope.start)} – "
                       f"{_fmt_time(c.scope.end)})")
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
        out.add("error", "registry_withheld",
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
            out.add("error", "gateway_withheld",
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
        if sum(1 for x in run if x.proven) > claim.count:
            return invalid(f"it counts {claim.count} message(s) of {gw} in seq {lo}–{hi}, the "
                           f"bundle proves {sum(1 for x in run if x.proven)}")
        what = f"{claim.count} message(s) of {gw} in seq {lo}–{hi}"
        if not run:
            withheld.append(gw)
            g.completeness = "withheld"
            out.add("error", "gateway_withheld",
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
                             + (f" ({_fmt_time(first.first_time)})" if first else "")
                             + f", the log's run at seq {lo}")
        elif lo != claim.first_seq and first is not None and first.last_time >= s.start:
            cuts["start"] = (f"its run starts at seq {lo}, sampled {_fmt_time(first.first_time)} "
                             "inside the period, while the log holds earlier messages (from seq "
                             f"{claim.first_seq})")
        if last_seq < hi:
            cuts["end"] = (f"its messages end at seq {last_seq}"
                           + (f" ({_fmt_time(last.last_time)})" if last else "")
                           + f", the log's run at seq {hi}")
        elif hi != claim.latest_seq and last is not None and last.first_time <= s.end:
            cuts["end"] = (f"its run ends at seq {hi}, sampled {_fmt_time(last.last_time)} "
                           "inside the period, while the log holds later messages (to seq "
                           f"{claim.latest_seq})")
        missing = max(0, claim.count - len(run))
        if cuts:
            withheld.append(gw)
            g.completeness = {"start": "head cut", "end": "tail cut"}.get(
                next(iter(cuts)) if len(cuts) == 1 else "", "head and tail cut")
            out.add("error", "period_cut",
                    f"{gw}'s evidence does not reach the period's {' and '.join(cuts)}: "
                    + "; ".join(cuts.values())
                    + (f"; {missing} of the {what} are not in the bundle" if missing else "")
                    + ". What happened there is withheld", gw)
        elif missing:
            withheld.append(gw)
            g.completeness = "messages withheld"
            gaps = [f"{a.seq + 1}–{b.seq - 1}" for a, b in itertools.pairwise(run)
                    if b.seq > a.seq + 1]
            out.add("error", "messages_withheld",
                    f"the log holds {what} (the exporter's signed claim), the bundle {len(run)}: "
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


def _analyse_gateway(
    g: GatewaySummary,
    msgs: list[VerifiedMessage],
    bundle: Bundle,
    out: _Findings,
    opts: VerifyOptions,
    now: float,
    unproven: int,
    enrolled_here: bool = False,
) -> None:
    gw = g.gateway
    s = bundle.scope
    if not enrolled_here and ((s.farm and g.farm not in (None, s.farm))
                              or (s.field and g.field not in (None, s.field))):
        out.add("warning", "out_of_scope",
                f"{gw} is enrolled for farm {g.farm!r} field {g.field!r}, outside the bundle's "
                f"scope (farm {s.farm!r} field {s.field!r})", gw)
    # the same sequence number twice: two different messages claiming one slot
    dedup: list[VerifiedMessage] = []
    for m in msgs:
        if dedup and dedup[-1].seq == m.seq:
            out.add("error", "duplicate_seq",
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
        out.add("warning", "sequence_gap",
                f"{gw} is missing seq {gap.first_missing}–{gap.last_missing} ({gap.size} "
                f"message(s)) between {_fmt_time(gap.after_time)} and "
                f"{_fmt_time(gap.before_time)}: {why}", gw)
    outside = [m for m in msgs if not m.anchored]
    g.outside_anchored = len(outside)
    if outside:
        first, last = min(m.first_time for m in outside), max(m.last_time for m in outside)
        out.add("warning", "outside_anchored_range",
                f"{_count(len(outside), 'message')} of {gw} ({_fmt_time(first)} – "
                f"{_fmt_time(last)}) {'is' if len(outside) == 1 else 'are'} not covered by a "
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
        out.add("warning", "clock_future",
                f"{len(future)} message(s) of {gw} carry sample times later than the block that "
                f"anchors them (or than now), e.g. seq {m.seq} sampled {_fmt_time(m.last_time)} "
                f"but anchored by {_fmt_time(m.anchor_time or now)}: the gateway clock ran ahead",
                gw)
    if past:
        m = past[0]
        g.clock["past"] = len(past)
        out.add("warning", "clock_past",
                f"{len(past)} message(s) of {gw} carry sample times before "
                f"{_fmt_time(floor)} (its enrollment, or 2020), e.g. seq {m.seq} at "
                f"{_fmt_time(m.first_time)}: the gateway clock was not set", gw)
    if late:
        m = late[0]
        g.clock["late"] = len(late)
        out.add("info", "delivered_late",
                f"{len(late)} message(s) of {gw} were anchored more than "
                f"{opts.late_after_s / 86400:.0f} days after sampling, e.g. seq {m.seq}", gw)
    if backwards:
        a, b = backwards[0]
        g.clock["backwards"] = len(backwards)
        out.add("warning", "clock_backwards",
                f"{gw}'s clock went backwards {len(backwards)} time(s) within a boot, e.g. seq "
                f"{b.seq} at {_fmt_time(b.first_time)} after seq {a.seq} at "
                f"{_fmt_time(a.first_time)} (boot {a.boot})", gw)
    if boots:
        a, b = boots[0]
        g.clock["boot_backwards"] = len(boots)
        out.add("warning", "boot_backwards",
                f"{gw}'s boot counter went down {len(boots)} time(s) while its sequence went up,"
                f" e.g. boot {a.boot} → {b.boot} at seq {b.seq}: its state was reset or copied",
                gw)


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


# ----------------------------------------------------------------------------- InfluxDB


MAX_LISTED_DIFFS = 1000
#: measurements the collector writes beside readings; not evidence, so not compared
_NOT_READINGS = frozenset({"gateway_status", "collector_stats", "quarantine", "anchor_state",
                           "dew_point", "vapour_pressure_deficit", "frost_risk",
                           "growing_degree_days", "chilling_hours", "soil_water_deficit"})


@dataclass(frozen=True)
class PointDiff:
    kind: Literal["changed", "added", "deleted"]
    measurement: str
    gateway: str
    sensor: str
    time_ns: int
    fields: tuple[str, ...]
    evidence: dict[str, Any] | None
    database: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "measurement": self.measurement, "gateway": self.gateway,
                "sensor": self.sensor, "time_ns": self.time_ns, "fields": list(self.fields),
                "evidence": self.evidence, "database": self.database}


@dataclass
class InfluxComparison:
    url: str
    database: str
    evidence_points: int = 0
    database_points: int = 0
    matched: int = 0
    changed: int = 0
    added: int = 0
    deleted: int = 0
    diffs: list[PointDiff] = dc_field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "diffs"}
        d["diffs"] = [x.to_json() for x in self.diffs]
        return d


def _influx_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _evidence_points(
    result: VerificationResult, start_ns: int, end_ns: int
) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """What the evidence says InfluxDB must hold, in the collector's schema (collector/ingest)."""
    info = {g.gateway: g for g in result.gateways}
    out: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for m in result.messages:
        g = info.get(m.gateway)
        for r in m.readings:
            t_ns = round(r.time * 1e9)
            if not start_ns <= t_ns <= end_ns:
                continue
            point: dict[str, Any] = {"seq": m.seq, "unit": r.unit,
                                     "farm": g.farm if g else None,
                                     "field": g.field if g else None}
            if r.value is None:
                point["missing"] = r.missing_reason
            else:
                point["value"] = r.value
            out[(r.quantity, m.gateway, r.sensor, t_ns)] = point
    return out


@dataclass(frozen=True)
class InfluxAuth:
    """Credentials for ``--against-influx``: an InfluxDB 1.x user and password (sent as HTTP
    Basic authentication, which every 1.x accepts, so they never appear in a URL or a server
    log) or an InfluxDB 2.x/3.x API token (``Authorization: Token …``). The secrets are kept
    out of ``repr`` and scrubbed from every message the comparison produces."""

    username: str | None = None
    password: str | None = dc_field(default=None, repr=False)
    token: str | None = dc_field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and self.username is not None:
            raise UsageError("give an InfluxDB 1.x user and password, or a 2.x token "
                             "(FIELDPROOF_INFLUX_TOKEN), not both")
        if (self.username is None) != (self.password is None):
            raise UsageError("an InfluxDB user needs a password (FIELDPROOF_INFLUX_PASSWORD or "
                             "--influx-password-file) and a password needs --influx-user")

    def secrets(self) -> tuple[str, ...]:
        return tuple(x for x in (self.password, self.token) if x)

    def request_kwargs(self) -> dict[str, Any]:
        import httpx

        if self.token is not None:
            return {"headers": {"Authorization": f"Token {self.token}"}}
        if self.username is not None and self.password is not None:
            return {"auth": httpx.BasicAuth(self.username, self.password)}
        return {}


def _userinfo(url: str) -> str:
    """Whatever stands between ``scheme://`` and the last ``@`` of ``url``: credentials, even
    when they hold characters (``#``, ``/``, ``?``) that make the URL itself unparsable."""
    start, at = url.find("://"), url.rfind("@")
    return url[start + 3:at] if 0 <= start < at else ""


def _redact_url(url: str) -> str:
    """``url`` without user info (``http://user:pass@host``) or credential parameters."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    info = _userinfo(url)
    if info:
        url = url.replace(info + "@", "", 1)
    try:
        parts = urlsplit(url)
        query = urlencode([(k, "***" if k.lower() in ("p", "u", "password", "token") else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)])
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(an unparsable URL)"


def _scrub(text: str, url: str, auth: InfluxAuth | None) -> str:
    """``text`` with the URL's credentials and the secrets blanked, for messages and JSON."""
    from urllib.parse import unquote

    secrets = list(auth.secrets() if auth else ())
    info = _userinfo(url)
    if info:
        password = info.split(":", 1)[-1]
        # and the pieces a URL parser may quote back when the credentials break the URL
        pieces = [p for p in re.split(r"[:#/?@\[\]]", info) if len(p) >= 3]
        secrets += [info, unquote(info), password, unquote(password), *pieces]
    text = text.replace(url, _redact_url(url))
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _influx_rows(url: str, database: str, query: str, timeout: float,
                 auth: InfluxAuth | None = None) -> Iterable[tuple[str, dict[str, Any]]]:
    """(measurement, row) for every row of a chunked InfluxQL answer (any InfluxDB with /query)."""
    import json

    import httpx

    params = {"db": database, "q": query, "epoch": "ns", "chunked": "true",
              "chunk_size": "20000"}
    extra = auth.request_kwargs() if auth is not None else {}
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        # not echoed: the parser's complaint may quote a piece of the credentials
        raise ValueError("the --against-influx URL is not a valid URL (credentials in it must "
                         "be percent-encoded; better, use --influx-user)") from None
    with httpx.stream("GET", f"{url.rstrip('/')}/query", params=params, timeout=timeout,
                      **extra) as r:
        if r.status_code in (401, 403):
            raise ValueError(
                f"InfluxDB refused the query (HTTP {r.status_code}): "
                + ("check --influx-user and its password, or FIELDPROOF_INFLUX_TOKEN"
                   if auth is not None and (auth.username or auth.token) else
                   "it needs credentials: --influx-user with FIELDPROOF_INFLUX_PASSWORD or "
                   "--influx-password-file (1.x), or FIELDPROOF_INFLUX_TOKEN (2.x)"))
        if r.status_code != 200:
            raise ValueError(f"InfluxDB answered HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.strip():
                continue
            doc = json.loads(line)
            if "error" in doc:
                raise ValueError(f"InfluxDB error: {doc['error']}")
            for res in doc.get("results", []):
                if "error" in res:
                    raise ValueError(f"InfluxQL error: {res['error']}")
                for series in res.get("series", []):
                    cols = series.get("columns", [])
                    for values in series.get("values", []):
                        yield str(series.get("name")), dict(zip(cols, values, strict=False))


def check_against_influx(
    result: VerificationResult, url: str, database: str, *, timeout: float = 60.0,
    auth: InfluxAuth | None = None,
) -> InfluxComparison:
    """Compare the operator's InfluxDB with what the evidence proves; every changed, added or
    deleted reading point becomes part of the result (and an error finding). ``auth``: the
    database's credentials; they never appear in the result, its messages or its JSON."""
    cmp = InfluxComparison(_redact_url(url), database)
    result.influx = cmp
    out = _Findings()
    start, end = result.scope.get("from"), result.scope.get("to")
    if start is None or end is None:
        cmp.error = "the bundle could not be read, so there is nothing to compare"
        return cmp
    start_ns, end_ns = math.ceil(start * 1e9), math.floor(end * 1e9)
    expected = _evidence_points(result, start_ns, end_ns)
    cmp.evidence_points = len(expected)
    conds = [f'"gateway" = {_influx_literal(g.gateway)}' for g in result.gateways]
    farm, fld = result.scope.get("farm"), result.scope.get("field")
    if farm:
        conds.append(f'"farm" = {_influx_literal(farm)}' +
                     (f' AND "field" = {_influx_literal(fld)}' if fld else ""))
    if not conds:
        cmp.error = "no gateway in scope to compare"
        return cmp
    query = (f"SELECT * FROM /.*/ WHERE ({' OR '.join(f'({c})' for c in conds)}) "  # noqa: S608
             f"AND time >= {start_ns} AND time <= {end_ns}")
    gateway_filter = result.scope.get("gateway")
    seen: set[tuple[str, str, str, int]] = set()

    def note(d: PointDiff) -> None:
        if len(cmp.diffs) < MAX_LISTED_DIFFS:
            cmp.diffs.append(d)

    try:
        for measurement, row in _influx_rows(url, database, query, timeout, auth):
            if measurement in _NOT_READINGS:
                continue
            gw, sensor, t_ns = row.get("gateway"), row.get("sensor"), row.get("time")
            if not isinstance(gw, str) or type(t_ns) is not int:
                continue
            if gateway_filter and gw != gateway_filter:
                continue
            cmp.database_points += 1
            key = (measurement, gw, str(sensor), t_ns)
            got = {k: row.get(k) for k in ("seq", "unit", "farm", "field", "value", "missing")}
            got = {k: v for k, v in got.items() if v is not None}
            want = expected.get(key)
            if want is None or key in seen:
                cmp.added += 1
                note(PointDiff("added", measurement, gw, str(sensor), t_ns, tuple(sorted(got)),
                               None, got))
                continue
            seen.add(key)
            norm = {k: v for k, v in want.items() if v not in (None, "")}
            differ = tuple(sorted(
                k for k in set(norm) | set(got)
                if not _same(norm.get(k), got.get(k))
            ))
            if differ:
                cmp.changed += 1
                note(PointDiff("changed", measurement, gw, str(sensor), t_ns, differ, norm, got))
            else:
                cmp.matched += 1
    except Exception as exc:  # unreachable, not InfluxDB, garbage: report, never crash
        cmp.error = _scrub(f"could not read InfluxDB at {url}: {type(exc).__name__}: {exc}",
                           url, auth)
        out.add("error", "influx_unreadable", cmp.error)
    else:
        for key, want in expected.items():
            if key not in seen:
                cmp.deleted += 1
                note(PointDiff("deleted", key[0], key[1], key[2], key[3], tuple(sorted(want)),
                               want, None))
        for kind, n in (("changed", cmp.changed), ("added", cmp.added),
                        ("deleted", cmp.deleted)):
            if n:
                example = next(d for d in cmp.diffs if d.kind == kind)
                out.add("error", f"influx_{kind}",
                        f"{n:,} reading point(s) in InfluxDB {database} were {kind} compared "
                        f"with the evidence, e.g. {example.measurement} of {example.gateway}/"
                        f"{example.sensor} at {_fmt_time(example.time_ns / 1e9)}"
                        + (f" ({', '.join(example.fields)})" if kind == "changed" else ""))
    result.findings = sorted(result.findings + out.items,
                             key=lambda f: ("error", "warning", "info").index(f.severity))
    if any(f.severity == "error" for f in out.items):
        result.verdict = "fail"
    return cmp


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)


def _count(n: int, noun: str) -> str:
    """``1 message``, ``3 messages``: the words an inspector reads."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
