"""The independent verifier: checks an evidence bundle and says what it proves, as findings.

Trusts nothing in the bundle. What it checks (docs/bundle.md §Verification):

1. the bundle's structure and limits (:func:`anchor.bundle.decode_bundle`);
2. every checkpoint's signature with the log key (pinned with ``log_key``, else the bundle's own,
   which is then a warning), and the consistency proof between each pair of successive
   checkpoints (a failure means history was rewritten behind a checkpoint);
3. every anchor on chain through every node given (Thor: :func:`anchor.anchoring.verify_anchor`;
   EVM: :func:`anchor.evm.read_anchor`), finality required, the record matching the
   checkpoint's origin, size and root; the nodes' answers are compared and any disagreement is
   an error, never averaged away;
4. every registry event's and message's inclusion proof into the first bundle checkpoint above
   it, each message's COSE signature against the key enrolled for its gateway at that log
   position (enroll and revoke events in log order);
5. per gateway: sequence gaps with their time spans, messages outside the anchored range, clock
   anomalies (samples later than the block that anchors them, implausibly old, going backwards
   within a boot).

The result is a :class:`VerificationResult`: findings (error / warning / info), per-gateway and
per-checkpoint summaries and the verified readings; ``passed`` is True when no finding is an
error. Signature checks are the cost: large bundles spread them over all cores.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
import time
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from dataclasses import field as dc_field
from multiprocessing import get_context
from typing import Any, Literal, NamedTuple

import cbor2

from anchor import merkle
from anchor.bundle import AnchorRef, Bundle, BundleError, Entry, Limits, decode_bundle
from anchor.checkpoint import Checkpoint, CheckpointError, open_checkpoint, parse_checkpoint
from anchor.evidence import parse_registry_event
from anchor.note import Ed25519Verifier, NoteError
from anchor.record import AnchorRecord
from fieldproof.wire import (
    BadSignature,
    WireError,
    decode_message,
    gateway_id_for,
    message_kid,
    parse_sign1,
)

__all__ = [
    "AnchorCheck",
    "CheckpointSummary",
    "Finding",
    "GatewaySummary",
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
_PARALLEL_MIN = 4000
_CHUNK = 2000


class UsageError(ValueError):
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

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "gateway": self.gateway, "count": self.count}


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

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "size": self.size, "root": self.root,
                "valid": self.valid, "problem": self.problem, "anchored": self.anchored,
                "anchor_time": self.anchor_time,
                "consistent_with_next": self.consistent_with_next,
                "anchors": [a.to_json() for a in self.anchors]}


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

    @property
    def missing_messages(self) -> int:
        return sum(g.size for g in self.gaps)

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k not in ("gaps", "clock")}
        d["gaps"] = [g.__dict__ for g in self.gaps]
        d["missing_messages"] = self.missing_messages
        d["clock_anomalies"] = dict(self.clock)
        return d


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
    messages: list[VerifiedMessage] = dc_field(default_factory=list)
    total_messages: int = 0
    registry_events: int = 0
    elapsed_s: float = 0.0
    verified_at: float = 0.0
    bundle_notes: list[str] = dc_field(default_factory=list)
    influx: Any = None  # anchor.report.InfluxComparison when --against-influx was used

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
        return (
            f"{len(self.messages):,}/{self.total_messages:,} messages "
            f"({self.verified_readings:,} readings) from {len(self.gateways)} gateway(s) "
            f"verified; {where}; {gaps} sequence gap(s); "
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


# ----------------------------------------------------------------------------- signatures


#: one job: (log index, message bytes, key, checkpoint size, root); size 0 = no proof to check
_Job = tuple[int, bytes, bytes, int, bytes]
_WORKER_HASHES: Mapping[tuple[int, int], bytes] = {}


def _check_chunk(jobs: Sequence[_Job], hashes: Mapping[tuple[int, int], bytes],
                 ) -> list[tuple[int, Any, str | None]]:
    """Inclusion proof and signature of each message: (status, value, inclusion problem) with
    status 0 and (seq, boot, readings), 1 and why the signature fails, or 2 and why it is
    malformed."""
    out: list[tuple[int, Any, str | None]] = []
    for index, message, key, size, root in jobs:
        why = _inclusion(Entry(index, message), size, root, hashes) if size else None
        try:
            p = decode_message(message, key)
            # plain tuples: they cross the process boundary several times faster than objects
            readings = tuple((r.sensor, r.quantity, r.unit, r.value, r.time, r.missing_reason)
                             for r in p.readings)
            out.append((0, (p.seq, p.boot, readings), why))
        except BadSignature as exc:
            out.append((1, str(exc), why))
        except WireError as exc:
            out.append((2, str(exc), why))
        except Exception as exc:  # a verifier never crashes on hostile bytes
            out.append((2, f"{type(exc).__name__}: {exc}", why))
    return out


def _pack_hashes(hashes: Mapping[tuple[int, int], bytes]) -> tuple[bytes, bytes]:
    """The subtree table as two flat byte strings: pickles in milliseconds, not seconds."""
    bounds = array("Q", [x for k in hashes for x in k]).tobytes()
    return bounds, b"".join(hashes.values())


def _init_worker(bounds: bytes, blob: bytes) -> None:
    global _WORKER_HASHES
    b = array("Q")
    b.frombytes(bounds)
    _WORKER_HASHES = {(b[2 * i], b[2 * i + 1]): blob[32 * i:32 * i + 32]
                      for i in range(len(b) // 2)}


def _pool_chunk(jobs: Sequence[_Job]) -> list[tuple[int, Any, str | None]]:
    return _check_chunk(jobs, _WORKER_HASHES)


def _check_messages(jobs: Sequence[_Job], hashes: Mapping[tuple[int, int], bytes],
                    workers: int | None) -> list[tuple[int, Any, str | None]]:
    """Proofs and signatures are the cost: past a few thousand messages, over all cores."""
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n <= 1 or len(jobs) < _PARALLEL_MIN:
        return _check_chunk(jobs, hashes)
    chunks = [jobs[i:i + _CHUNK] for i in range(0, len(jobs), _CHUNK)]
    # forkserver: the caller may have threads (the collector's API), which fork does not mix with
    with ProcessPoolExecutor(max_workers=n, mp_context=get_context("forkserver"),
                             initializer=_init_worker, initargs=_pack_hashes(hashes)) as pool:
        out: list[tuple[int, Any, str | None]] = []
        for part in pool.map(_pool_chunk, chunks):
            out.extend(part)
    return out


# ----------------------------------------------------------------------------- chain


def _thor_answer(client: Any, url: str, ref: AnchorRef, cp: Checkpoint) -> NodeAnswer:
    from anchor.anchoring import AnchorVerificationError, verify_anchor
    from anchor.thor_client import NodeUnreachable, ThorClientError

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
    from anchor.evm import (
        AnchorNotFoundError,
        ChainIdMismatchError,
        NodeUnavailableError,
        NotAnAnchorError,
        connect,
        read_anchor,
    )

    try:
        got = read_anchor(connect(url, timeout), ref.tx, chain_id=int(ref.network))
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
    try:
        ranges = merkle.inclusion_proof_ranges(entry.index, size)
        proof = [hashes[r] for r in ranges]
    except KeyError as exc:
        return f"the bundle lacks the subtree hash {exc.args[0]} its proof needs"
    except ValueError as exc:
        return str(exc)
    try:
        merkle.verify_inclusion(merkle.leaf_hash(entry.data), entry.index, size, proof, root)
    except merkle.ProofError as exc:
        return str(exc)
    return None


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


@dataclass
class _KeyEvent:
    index: int
    event: str
    public_key: bytes = b""
    farm: str = ""
    field: str = ""
    location: str = ""
    time: float | None = None
    from_seq: int = 0
    prev_key: bytes = b""


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


def _claimed_seq(message: bytes) -> int | None:
    """The seq a message claims, unverified: only to pick among a gateway's rotated keys (the
    signature then covers it, so a lie here only makes the check fail)."""
    try:
        seq = cbor2.loads(parse_sign1(message).payload).get("seq")
    except (WireError, ValueError, TypeError, AttributeError, cbor2.CBORDecodeError,
            OverflowError, RecursionError):
        return None
    return seq if type(seq) is int else None


def _key_at(events: Sequence[_KeyEvent], index: int, message: bytes,
            ) -> tuple[bytes | None, int | None, str]:
    """(key, revoked at, problem) for a message at log ``index``, from the events before it."""
    keys: list[tuple[int, bytes]] = []
    revoked: int | None = None
    for ev in events:
        if ev.index > index:
            break
        if ev.event == "enroll":
            keys, revoked = [(0, ev.public_key)], None
        elif ev.event == "rotate":
            if keys and keys[-1][1] == ev.prev_key and ev.from_seq > keys[-1][0]:
                keys.append((ev.from_seq, ev.public_key))
        else:
            revoked = ev.index
    if not keys:
        return None, revoked, "no enrollment"
    if len(keys) == 1:
        return keys[0][1], revoked, ""
    seq = _claimed_seq(message)
    if seq is None:
        return keys[0][1], revoked, ""
    return [k for start, k in keys if start <= seq][-1], revoked, ""


# ----------------------------------------------------------------------------- the verifier


def verify_bundle(
    data: bytes,
    *,
    nodes: list[str],
    chain: str | None,
    offline: bool,
    log_key: str | None,
    options: VerifyOptions | None = None,
    now: float | None = None,
) -> VerificationResult:
    """Verify a bundle; see the module docstring. Raises :class:`UsageError` only for bad
    arguments, never for bad bundles or nodes: those are findings."""
    opts = options or VerifyOptions()
    started = time.perf_counter()
    now = time.time() if now is None else now
    if chain not in (None, "thor", "evm"):
        raise UsageError(f"--chain must be thor or evm, not {chain!r}")
    pinned: Ed25519Verifier | None = None
    if log_key is not None:
        try:
            pinned = Ed25519Verifier.from_vkey(log_key.strip())
        except NoteError as exc:
            raise UsageError(f"--log-key is not a verifier key (name+id+base64): {exc}") from None

    result = VerificationResult(offline=offline, nodes=list(nodes), verified_at=now)
    out = _Findings()
    try:
        bundle = decode_bundle(data, opts.limits)
    except BundleError as exc:
        out.add("error", "malformed_bundle", f"the bundle cannot be read: {exc}")
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
    try:
        _verify(bundle, result, out, pinned, chain, nodes, offline, opts, now)
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
            anchors=[AnchorCheck(a) for a in c.anchors])
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
                    ac.checked, ac.verified, ac.answers = done.checked, done.verified, done.answers
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
                f"--offline: {unchecked} anchor(s) were not checked on chain; anchored ranges and "
                "time bounds below rest on the bundle's claims")
    elif unchecked:
        out.add("info", "anchors_not_checked",
                f"{unchecked} anchor(s) on other chains than {chain or 'the one checked'} were "
                "not checked")

    # where each entry is proven, and which anchor bounds it
    sizes = [c.size if c.size is not None else -1 for c in cps]
    # a placed entry needs a strictly growing list; a bad order is already an error
    monotone = all(b > a for a, b in itertools.pairwise(sizes))

    def place(index: int) -> int | None:
        if monotone:
            pos = bisect.bisect_right(sizes, index)
            return pos if pos < len(sizes) else None
        return next((p for p, sz in enumerate(sizes) if sz > index), None)

    anchored_after: list[int | None] = [None] * len(cps)
    nxt: int | None = None
    for pos in range(len(cps) - 1, -1, -1):
        if nxt is not None and cps[nxt].segment != cps[pos].segment:
            nxt = None
        if cps[pos].anchored:
            nxt = pos
        anchored_after[pos] = nxt

    def prove(entry: Entry, what: str, gateway: str | None) -> tuple[bool, int | None]:
        """(included, anchor time) for an entry; an unprovable entry is a finding here."""
        pos = place(entry.index)
        if pos is None:
            return False, None
        cp = opened[pos]
        if cp is None:
            out.add("error", "inclusion_failed",
                    f"{what} at log index {entry.index} is proven into checkpoint {pos}, which "
                    "is not valid", gateway)
            return False, None
        why = _inclusion(entry, cp.size, cp.root_hash, bundle.hashes)
        if why is not None:
            out.add("error", "inclusion_failed",
                    f"{what} at log index {entry.index} is not in the log at checkpoint {pos} "
                    f"(size {cp.size}): {why}", gateway)
            return False, None
        a = anchored_after[pos]
        return True, (cps[a].anchor_time if a is not None else None)

    # -- registry
    timeline: dict[str, list[_KeyEvent]] = defaultdict(list)
    for entry in bundle.registry:
        ev = _registry_event(entry)
        obj = parse_registry_event(entry.data)
        gw = obj.get("gw") if obj is not None and isinstance(obj.get("gw"), str) else None
        if isinstance(ev, str):
            out.add("error", "registry_invalid", f"registry entry at log index {entry.index}: {ev}",
                    gw)
            continue
        assert gw is not None
        included, _ = prove(entry, f"registry event ({ev.event} {gw})", gw)
        if place(entry.index) is None:
            # only messages logged after it (so themselves unproven) can depend on it
            out.add("warning", "outside_anchored_range",
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
                    out.add("error", "registry_invalid",
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
        return g

    for gw in timeline:
        summary_for(gw)

    # -- messages: kid and key at that position here; inclusion and signature in _check_messages
    jobs: list[_Job] = []
    pending: list[tuple[Entry, str, int | None, bool]] = []
    for entry in bundle.messages:
        try:
            gw = message_kid(entry.data)
        except WireError as exc:
            out.add("error", "message_malformed",
                    f"message at log index {entry.index} is not a fieldproof message: {exc}")
            continue
        g = summary_for(gw)
        g.messages += 1
        at = place(entry.index)
        cp = opened[at] if at is not None else None
        if at is not None and cp is None:
            out.add("error", "inclusion_failed",
                    f"message of {gw} at log index {entry.index} is proven into checkpoint "
                    f"{at}, which is not valid", gw)
        key, revoked_at, _ = _key_at(timeline.get(gw, []), entry.index, entry.data)
        if key is None:
            later = [ev.index for ev in timeline.get(gw, []) if ev.event == "enroll"]
            out.add("error", "unknown_key",
                    f"message at log index {entry.index} is from {gw}, which has no enrollment "
                    "in the evidence before it" + (f" (enrolled only at log index {later[0]})"
                                                   if later else ""), gw)
            continue
        if revoked_at is not None:
            out.add("error", "revoked_key",
                    f"message at log index {entry.index} was logged after {gw} was revoked "
                    f"(log index {revoked_at})", gw)
        anchor = anchored_after[at] if at is not None else None
        jobs.append((entry.index, entry.data, key, cp.size if cp else 0,
                     cp.root_hash if cp else b""))
        pending.append((entry, gw, cps[anchor].anchor_time if anchor is not None else None,
                        at is not None and cp is not None and revoked_at is None))

    results = _check_messages(jobs, bundle.hashes, opts.workers)
    verified: list[VerifiedMessage] = []
    unproven: Counter[str] = Counter()
    for (entry, gw, anchor_time, ok), (status, value, why) in zip(pending, results, strict=True):
        if why is not None:
            at = place(entry.index)
            out.add("error", "inclusion_failed",
                    f"message of {gw} at log index {entry.index} is not in the log at "
                    f"checkpoint {at}: {why}", gw)
            ok = False
        if status == 1:
            out.add("error", "bad_signature",
                    f"message at log index {entry.index} does not verify with {gw}'s enrolled "
                    f"key: {value}. Its content was changed or it was signed by another key", gw)
            continue
        if status == 2:
            out.add("error", "message_malformed",
                    f"message at log index {entry.index} from {gw} is malformed: {value}", gw)
            continue
        seq, boot, raw = value
        readings = tuple(map(VerifiedReading._make, raw))
        if not ok:
            if place(entry.index) is None:  # signed and enrolled, but in no checkpoint yet
                unproven[gw] += 1
                verified.append(VerifiedMessage(entry.index, gw, seq, boot, readings,
                                                False, None))
            continue
        verified.append(VerifiedMessage(entry.index, gw, seq, boot, readings,
                                        anchor_time is not None, anchor_time))
    result.messages = verified

    # -- per gateway: counts, scope, gaps, anchoring, clocks
    by_gw: dict[str, list[VerifiedMessage]] = defaultdict(list)
    for m in verified:
        by_gw[m.gateway].append(m)
    for gw, g in sorted(gateways.items()):
        msgs = sorted(by_gw.get(gw, []), key=lambda m: (m.seq, m.index))
        _analyse_gateway(g, msgs, bundle, out, opts, now, unproven[gw])
    if not verified:
        out.add("warning", "no_readings", "the bundle proves no readings for this scope and period")
    result.gateways = [gateways[k] for k in sorted(gateways)]


def _analyse_gateway(
    g: GatewaySummary,
    msgs: list[VerifiedMessage],
    bundle: Bundle,
    out: _Findings,
    opts: VerifyOptions,
    now: float,
    unproven: int,
) -> None:
    gw = g.gateway
    s = bundle.scope
    if (s.farm and g.farm not in (None, s.farm)) or (s.field and g.field not in (None, s.field)):
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
    g.verified_messages = len(msgs)
    if not msgs:
        return
    g.readings = sum(len(m.readings) for m in msgs)
    g.missing_values = sum(1 for m in msgs for r in m.readings if r.value is None)
    g.first_seq, g.last_seq = msgs[0].seq, msgs[-1].seq
    g.first_time = min(m.first_time for m in msgs)
    g.last_time = max(m.last_time for m in msgs)
    for a, b in itertools.pairwise(msgs):
        if b.seq > a.seq + 1:
            gap = SeqGap(a.seq + 1, b.seq - 1, a.last_time, b.first_time)
            g.gaps.append(gap)
            out.add("warning", "sequence_gap",
                    f"{gw} is missing seq {gap.first_missing}–{gap.last_missing} ({gap.size} "
                    f"message(s)) between {_fmt_time(gap.after_time)} and "
                    f"{_fmt_time(gap.before_time)}: lost, never sent, or withheld — the evidence "
                    "cannot tell which", gw)
    outside = [m for m in msgs if not m.anchored]
    g.outside_anchored = len(outside)
    if outside:
        first, last = min(m.first_time for m in outside), max(m.last_time for m in outside)
        out.add("warning", "outside_anchored_range",
                f"{len(outside)} message(s) of {gw} ({_fmt_time(first)} – {_fmt_time(last)}) "
                "are not covered by a "
                "verified anchor" + (f"; {unproven} are in no checkpoint at all" if unproven else
                                     "") + ": their time and existence are not fixed on chain yet",
                gw)
    # clocks
    future: list[VerifiedMessage] = []
    past: list[VerifiedMessage] = []
    late: list[VerifiedMessage] = []
    backwards: list[tuple[VerifiedMessage, VerifiedMessage]] = []
    boots: list[tuple[VerifiedMessage, VerifiedMessage]] = []
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
    for a, b in itertools.pairwise(msgs):
        if b.boot < a.boot:
            boots.append((a, b))
        elif b.boot == a.boot and b.first_time < a.first_time - opts.backwards_tolerance_s:
            backwards.append((a, b))
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


def _influx_rows(url: str, database: str, query: str, timeout: float) -> Iterable[
        tuple[str, dict[str, Any]]]:
    """(measurement, row) for every row of a chunked InfluxQL answer (any InfluxDB with /query)."""
    import json

    import httpx

    params = {"db": database, "q": query, "epoch": "ns", "chunked": "true",
              "chunk_size": "20000"}
    with httpx.stream("GET", f"{url.rstrip('/')}/query", params=params, timeout=timeout) as r:
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
    result: VerificationResult, url: str, database: str, *, timeout: float = 60.0
) -> InfluxComparison:
    """Compare the operator's InfluxDB with what the evidence proves; every changed, added or
    deleted reading point becomes part of the result (and an error finding)."""
    cmp = InfluxComparison(url, database)
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
        for measurement, row in _influx_rows(url, database, query, timeout):
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
        cmp.error = f"could not read InfluxDB at {url}: {type(exc).__name__}: {exc}"
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
