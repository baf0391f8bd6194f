"""The independent verifier: checks an evidence bundle and says what it proves, as findings.

Trusts nothing in the bundle. What it checks (docs/bundle.md §Verification):

1. the bundle's structure and limits (:func:`fieldproof.formats.bundle.decode_bundle`);
2. every checkpoint's signature with the log key (pinned with ``log_key``, else the bundle's own,
   which is then a warning), and the consistency proof between each pair of successive
   checkpoints (a failure means history was rewritten behind a checkpoint); checkpoints the
   inspector already trusts (``known_checkpoints``) must be among them and consistent with all;
3. every anchor on chain through every node given (the chain readers' one protocol,
   :func:`anchor.chain_reader.make_reader`, plus the genesis block when the anchor names it),
   finality required, the record matching the checkpoint's origin, size and root; the nodes'
   answers are compared and any disagreement is an error, never averaged away;
4. every registry event's and message's inclusion proof into the first bundle checkpoint above
   it, the gateway-signed requests registry events embed (:mod:`inspector.enrollment_checks`), each
   message's COSE signature against the key enrolled for its gateway at that log position
   (enroll, rotate and revoke events in log order; :mod:`inspector.batch`);
5. per gateway: sequence gaps with their time spans, messages outside the anchored range, clock
   anomalies (samples later than the block that anchors them, implausibly old, going backwards
   within a boot).

Beside them, on request: split views against mirrors and witnesses' checkpoints
(:mod:`inspector.split_view`, after step 2), the trust policy (:mod:`inspector.policy_check`)
and every anchor of the log on chain (:mod:`inspector.anchor_scan`), both after step 3.

Each step has its module: 2 :mod:`inspector.checkpoint_check`, 3 :mod:`inspector.chain_check`,
4 :mod:`inspector.registry_check` and :mod:`inspector.message_check`, 5
:mod:`inspector.gateway_analysis`, the completeness claim :mod:`inspector.completeness`; the
result's types are in :mod:`inspector.results`, the finding codes in :mod:`inspector.findings`
(one per row of docs/bundle.md §7), ``--against-influx`` in
:mod:`inspector.influx_compare`. This module runs the steps in order.

The result is a :class:`VerificationResult`: findings (error / warning / info), per-gateway and
per-checkpoint summaries and the verified readings; ``passed`` is True when no finding is an
error. Signature checks are the cost: large bundles spread them over all cores, and nothing
else is allowed to cost much beside them (benchmarks/bench_verify.py).
"""

from __future__ import annotations

import gc
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from anchor.chain_reader import CHAINS
from fieldproof.formats.bundle import Bundle, BundleError, decode_bundle
from fieldproof.formats.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from fieldproof.formats.note import Ed25519Verifier, NoteError
from fieldproof.formats.registry_event import parse_registry_event
from inspector.anchor_scan import check_all_anchors
from inspector.chain_check import anchored_times, check_anchors
from inspector.checkpoint_check import (
    Placement,
    check_checkpoints,
    claimed_checkpoint,
    link_known,
)
from inspector.completeness import check_completeness
from inspector.findings import FindingCode, Severity
from inspector.gateway_analysis import (
    PLAUSIBLE_EPOCH,
    MessageCounts,
    analyse_gateway,
    clock_steps_back,
    count_messages,
)
from inspector.influx_compare import (
    InfluxAuth,
    InfluxComparison,
    PointDiff,
    check_against_influx,
)
from inspector.message_check import (
    collect_messages,
    held_messages,
    report_messages,
    start_message_checks,
)
from inspector.policy_check import check_policy, policy_log_key
from inspector.registry_check import KEY_EVENTS, KeyHistory, key_history
from inspector.results import (
    MAX_FINDINGS_PER_CODE,
    AnchorCheck,
    CheckpointSummary,
    CompletenessCheck,
    Finding,
    Findings,
    GatewaySummary,
    KnownCheckpoint,
    NodeAnswer,
    ProvenRegistryEvent,
    SeqGap,
    UsageError,
    VerificationResult,
    VerifiedMessage,
    VerifiedReading,
    VerifyOptions,
    fmt_time,
    gateway_of,
    readings_in_scope,
)
from inspector.seal_check import report_seal
from inspector.split_view import check_split_views, opened_known, outside_views

__all__ = [
    "KEY_EVENTS",
    "MAX_FINDINGS_PER_CODE",
    "PLAUSIBLE_EPOCH",
    "AnchorCheck",
    "CheckpointSummary",
    "CompletenessCheck",
    "Finding",
    "GatewaySummary",
    "InfluxAuth",
    "InfluxComparison",
    "KnownCheckpoint",
    "MessageCounts",
    "NodeAnswer",
    "PointDiff",
    "ProvenRegistryEvent",
    "SeqGap",
    "Severity",
    "UsageError",
    "VerificationResult",
    "VerifiedMessage",
    "VerifiedReading",
    "VerifyOptions",
    "check_against_influx",
    "claimed_checkpoint",
    "clock_steps_back",
    "count_messages",
    "fmt_time",
    "gateway_of",
    "parse_log_key",
    "readings_in_scope",
    "verify_bundle",
    "verify_one",
]

#: the names these had when they lived in this module
_fmt_time = fmt_time
_claimed_checkpoint = claimed_checkpoint


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
    policy = options.policy if options is not None else None

    def pinned_for(origin: str) -> Ed25519Verifier | None:
        # without --log-key, a --policy names the log's key (its log line)
        if pinned is None and policy is not None:
            return policy_log_key(policy, origin)
        return pinned

    return verify_one(data, nodes=nodes, chain=chain, offline=offline,
                      pinned_for=pinned_for, known_for=lambda origin: known,
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
    if chain is not None and chain not in CHAINS:
        raise UsageError(f"--chain must be {' or '.join(CHAINS)}, not {chain!r}")

    result = VerificationResult(offline=offline, nodes=list(nodes), verified_at=now)
    out = Findings()
    try:
        with _no_cyclic_gc():
            bundle = decode_bundle(data, opts.limits)
    except BundleError as exc:
        result.unreadable = _why_unreadable(data, exc, opts.limits.max_bytes)
        out.add(FindingCode.MALFORMED_BUNDLE, f"the bundle cannot be read: {result.unreadable}")
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


def _why_unreadable(data: bytes, exc: BundleError, max_bytes: int) -> str:
    """What to tell about a bundle that cannot be decoded: a file cut short (a copy or a
    download stopped early) is said so, with its size, since copying it again is the fix."""
    # a bundle is one CBOR map: anything else was never one, whatever its length
    needs = cbor_size_needed(data) if data and data[0] >> 5 == 5 else None
    if needs is not None and needs <= max_bytes:
        return f"the file is cut short ({len(data):,} of at least {needs:,} bytes): copy it again"
    return str(exc)


def cbor_size_needed(data: bytes) -> int | None:
    """If ``data`` is the beginning of one CBOR item (RFC 8949, definite lengths) that runs
    past its end, a lower bound of the item's whole size; None if it ends within ``data`` or
    is not such an item. Each step reads at least one byte, so the walk is bounded by
    ``len(data)`` whatever the counts claim."""
    n, p, pending = len(data), 0, 1  # pending: items still to read, containers' included
    while pending:
        if p >= n:
            return n + pending  # every item still to read takes at least one byte
        head = data[p]
        p += 1
        pending -= 1
        major, info = head >> 5, head & 31
        if info < 24:
            arg = info
        elif info <= 27:
            width = 1 << (info - 24)
            if p + width > n:
                return p + width + pending
            arg = int.from_bytes(data[p:p + width], "big")
            p += width
        else:
            return None  # indefinite lengths or reserved: no bundle uses them
        if major in (2, 3):  # byte and text strings
            if p + arg > n:
                return p + arg + pending
            p += arg
        elif major == 4:
            pending += arg
        elif major == 5:
            pending += 2 * arg
        elif major == 6:
            pending += 1
    return None


def _verify(
    bundle: Bundle,
    result: VerificationResult,
    out: Findings,
    pinned: Ed25519Verifier | None,
    chain: str | None,
    nodes: Sequence[str],
    offline: bool,
    opts: VerifyOptions,
    now: float,
    known: Sequence[tuple[int, bytes]] = (),
    keep_entries: bool = False,
) -> None:
    """Steps 2 to 5 of the module docstring on a decoded bundle, in that order; findings are
    made in the order of docs/bundle.md §5."""
    _describe(bundle, result)
    # 2. the log key, checkpoints, consistency, segments, known checkpoints; held back until
    # it is known whether the key is this log's at all (else they are all one mistake)
    key_findings, checkpoint_findings = Findings(), Findings()
    verifier = _log_key(bundle, pinned, result, key_findings)
    cps, opened = check_checkpoints(bundle, verifier, checkpoint_findings)
    result.checkpoints = cps
    if pinned is not None and _not_this_logs_key(bundle, pinned, opened, out):
        result.completeness.detail = "nothing can be checked without the log's key"
        return
    out.extend(key_findings)
    out.extend(checkpoint_findings)
    result.known_checkpoints = [
        link_known(n, note, verifier, bundle.origin, cps, opened, out) for n, note in known
    ]
    # 3a. split views: the bundle's checkpoints against mirrors and witnesses' checkpoints
    views = outside_views(opts.mirrors, opts.witness_checkpoints, verifier, bundle.origin,
                          opts.policy)
    trees = check_split_views(list(enumerate(opened)),
                              opened_known(known, verifier, bundle.origin), views, out)
    result.outside_checkpoints = [v.to_json() for v in views]
    where = Placement(bundle, cps, opened)

    # 4a. registry findings are reported after the anchors' (the order of docs/bundle.md §5),
    # but made first: the message checks need the key history, and run while nodes are asked
    early: list[tuple[Any, ...]] = []
    history = key_history(bundle, where, lambda *finding: early.append(finding))
    gateways: dict[str, GatewaySummary] = {}

    def summary_for(gw: str) -> GatewaySummary:
        g = gateways.get(gw)
        if g is None:
            g = gateways[gw] = history.summary(gw)
        return g

    for gw in history.timeline:
        if bundle.version == 1 or gw in history.enrolled_here:
            summary_for(gw)

    # 4b. messages: kid, key, inclusion and signature in inspector.batch, over all cores for
    # large bundles, starting now: the workers check while the chain nodes are asked below.
    checks, places = start_message_checks(bundle, where, history.timeline, opts.workers)
    try:
        # 3. anchors
        check_anchors(cps, opened, chain, nodes, offline, opts.node_timeout_s, out)
        # 4a. the trust policy: which checkpoints count; 4b. every anchor of the log on chain
        if opts.policy is not None:
            result.policy = check_policy(
                opts.policy, cps, anchors_verified=bool(chain) and not offline,
                require_quorum=opts.require_quorum, out=out).to_json()
        if opts.all_anchors is not None and chain and not offline:
            result.all_anchors = check_all_anchors(
                chain, nodes, bundle.origin, cps, trees, opts.all_anchors,
                opts.node_timeout_s, out).to_json()
        anchor_at = anchored_times(cps)
        for finding in early:
            out.add(*finding)

        with _no_cyclic_gc():  # see there: the objects made from here on are many
            got = collect_messages(bundle, checks, places, where, anchor_at)
            for gw, count in got.counts.items():
                summary_for(gw).messages += count
            unproven = report_messages(got, where, history.timeline, out)
            result.messages = got.verified
            # 8. completeness (docs/bundle.md §5), then 5. per gateway
            result.completeness = check_completeness(
                bundle, verifier, opened, held_messages(got, where), summary_for, out,
                lambda e: where.place(e.index) is not None and where.quietly_included(e))
            # 9. the log's completeness seal (docs/bundle.md §4b)
            result.seal = report_seal(
                bundle, opened, held_messages(got, where),
                lambda e: where.place(e.index) is not None and where.quietly_included(e),
                summary_for, result.completeness, out, require=opts.require_complete).to_json()
            if keep_entries:
                _keep_proven_registry(bundle, where, result)
            _per_gateway(bundle, gateways, got.verified, unproven, history, out, opts, now)
            if not got.verified:
                out.add(FindingCode.NO_READINGS,
                        "the bundle proves no readings for this scope and period")
            result.gateways = [gateways[k] for k in sorted(gateways)]
    finally:
        checks.close()


def _not_this_logs_key(bundle: Bundle, pinned: Ed25519Verifier,
                       opened: Sequence[Checkpoint | None], out: Findings) -> bool:
    """Whether the pinned key is plainly not the key of the bundle's log: no checkpoint opens
    with it, and it names another log or the bundle's own key opens them. Then that is the
    one finding (``log_key_mismatch``), not an error for every checkpoint and entry."""
    if not bundle.checkpoints or any(cp is not None for cp in opened):
        return False
    own: Ed25519Verifier | None
    try:
        own = Ed25519Verifier.from_vkey(bundle.vkey)
    except NoteError:
        own = None
    signed_by_own = own is not None and own.vkey != pinned.vkey and any(
        _opens(c.note, own, bundle.origin) for c in bundle.checkpoints)
    if pinned.name == bundle.origin and not signed_by_own:
        return False  # this log's name, and signed by no key we know: the checkpoints' fault
    theirs = f"{bundle.origin} (key id {own.key_id:08x})" if own is not None else bundle.origin
    out.add(FindingCode.LOG_KEY_MISMATCH,
            f"the bundle's checkpoints are not signed by the log key you gave: "
            f"{pinned.name} (key id {pinned.key_id:08x}) vs the bundle's {theirs}; check "
            "--log-key. Nothing in the bundle can be checked without its log's key (if the "
            "key you gave is the operator's published one, this bundle is not of their log "
            "and proves nothing)")
    return True


def _opens(note: bytes, verifier: Ed25519Verifier, origin: str) -> bool:
    try:
        open_checkpoint(note, verifier, origin=origin)
    except (NoteError, CheckpointError):
        return False
    return True


def _describe(bundle: Bundle, result: VerificationResult) -> None:
    """What the bundle says of itself: scope, log, notes and counts (unverified)."""
    s = bundle.scope
    result.scope = {"farm": s.farm, "field": s.field, "gateway": s.gateway,
                    "from": s.start, "to": s.end}
    result.origin = bundle.origin
    result.bundle_notes = list(bundle.notes)
    result.total_messages = len(bundle.messages)
    result.registry_events = len(bundle.registry)


def _log_key(bundle: Bundle, pinned: Ed25519Verifier | None, result: VerificationResult,
             out: Findings) -> Ed25519Verifier | None:
    """The key to check checkpoints with: the pinned one, else the bundle's own (a warning);
    None when there is no usable one (an error)."""
    verifier: Ed25519Verifier | None = pinned
    if pinned is None:
        try:
            verifier = Ed25519Verifier.from_vkey(bundle.vkey)
        except NoteError as exc:
            out.add(FindingCode.LOG_KEY_INVALID, f"the bundle's log key is unusable: {exc}")
            verifier = None
        else:
            out.add(FindingCode.LOG_KEY_NOT_PINNED,
                    "the log key was taken from the bundle itself: get the operator's published "
                    "key another way and pass it with --log-key, or a forger could have made "
                    "the whole log")
    elif bundle.vkey != pinned.vkey:
        out.add(FindingCode.LOG_KEY_DIFFERS,
                f"the bundle names log key {bundle.vkey!r}; checked with the pinned key instead")
    result.log_key = verifier.vkey if verifier is not None else bundle.vkey
    result.log_key_pinned = pinned is not None
    if verifier is not None and verifier.name != bundle.origin:
        out.add(FindingCode.LOG_KEY_INVALID,
                f"the log key is for {verifier.name!r} but the bundle is for log "
                f"{bundle.origin!r}")
    return verifier


def _keep_proven_registry(bundle: Bundle, where: Placement, result: VerificationResult) -> None:
    """The registry entries whose inclusion proof holds, for bundles verified together."""
    proven_events = []
    for e in bundle.registry:
        if where.place(e.index) is not None and where.quietly_included(e):
            obj = parse_registry_event(e.data)
            gw = obj.get("gw") if obj is not None else None
            proven_events.append(ProvenRegistryEvent(
                e.index, gw if isinstance(gw, str) else None, obj))
    result.registry_proven_events = tuple(proven_events)
    result.registry_proven = tuple(e.log_index for e in proven_events)


def _per_gateway(bundle: Bundle, gateways: dict[str, GatewaySummary],
                 verified: Sequence[VerifiedMessage], unproven: Counter[str],
                 history: KeyHistory, out: Findings, opts: VerifyOptions, now: float) -> None:
    """Step 5 for every gateway: counts, scope, gaps, anchoring, clocks."""
    by_gw: dict[str, list[VerifiedMessage]] = defaultdict(list)
    for m in verified:
        by_gw[m.gateway].append(m)
    for gw, g in sorted(gateways.items()):
        msgs = sorted(by_gw.get(gw, []), key=lambda m: (m.seq, m.index))
        analyse_gateway(g, msgs, bundle, out, opts, now, unproven[gw],
                        gw in history.enrolled_here)
