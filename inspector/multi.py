"""Verify several bundles, each of its own evidence log, as one history (docs/bundle.md §11).

Each bundle is verified completely on its own (:func:`inspector.verify.verify_one`), with the
pinned key and the known checkpoints of the log it names; then
:func:`inspector.combine.combine` analyses the results together.

**Pinned keys with several bundles.** Each ``--log-key`` names its log (the key name is the
log origin), so keys are matched to bundles by origin, never by position: an inspector cannot
get the order wrong, and a bundle cannot pick its key. Two cases are errors (findings, so
they are in the JSON and the report and fail the verdict), as a trust store that is missing
an expected signer, or holds a signer it does not know, fails in TUF or Sigstore:

* ``log_missing``: a pinned key (or a ``--known-checkpoint``) names a log of which no
  readable bundle was given. The inspector expected that log: a whole collector's share of
  the messages may have been left out (or the wrong key was pasted; either way the
  inspector must look).
* ``log_not_pinned``: some keys are pinned, but none for this bundle's log. Once an inspector
  pins the logs they trust, a bundle of another log is a log nobody vouched for; verifying it
  with its own key (one bundle with no key at all is only a warning) would let a forged
  extra log slip in beside genuine ones.

Two different keys pinned for one log cannot both be the log's key: that is a usage error
(exit 2), as is an unusable key string.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from fieldproof.formats.note import Ed25519Verifier
from inspector.combine import (
    BundleOutcome,
    Combined,
    MultiResult,
    combine,
    local_findings,
    verdict_of,
)
from inspector.findings import FindingCode
from inspector.verify import (
    Finding,
    GatewaySummary,
    InfluxAuth,
    UsageError,
    VerificationResult,
    VerifyOptions,
    check_against_influx,
    claimed_checkpoint,
    parse_log_key,
    verify_one,
)

__all__ = ["check_union_against_influx", "match_keys", "union_result", "verify_bundles"]


def match_keys(log_keys: Sequence[str]) -> dict[str, Ed25519Verifier]:
    """The pinned keys by the log they name; a repeated key is harmless, two different keys
    for one log are a :class:`UsageError`."""
    keys: dict[str, Ed25519Verifier] = {}
    for text in log_keys:
        v = parse_log_key(text)
        have = keys.setdefault(v.name, v)
        if have.vkey != v.vkey:
            raise UsageError(f"two different --log-key values name log {v.name!r}: a log has "
                             "one key; check which one the operator published")
    return keys


def verify_bundles(
    bundles: Sequence[tuple[str, bytes]],
    *,
    nodes: list[str],
    chain: str | None,
    offline: bool,
    log_keys: Sequence[str] = (),
    options: VerifyOptions | None = None,
    now: float | None = None,
    known_checkpoints: Sequence[bytes] = (),
) -> MultiResult:
    """Verify ``bundles`` (label, bytes) each on its own, then together (module docstring).
    Raises :class:`UsageError` only for bad arguments; everything about the bundles is a
    finding."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    keys = match_keys(log_keys)
    known: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    run: list[Finding] = []
    all_labels = tuple(label for label, _ in bundles)
    for n, note in enumerate(known_checkpoints, 1):
        claimed = claimed_checkpoint(note)
        if claimed is None:
            run.append(Finding.of(FindingCode.KNOWN_CHECKPOINT_INVALID,
                               f"known checkpoint #{n} is not a signed checkpoint (no origin, "
                               "size and root can be read from it): check you passed the "
                               "right file", bundles=all_labels))
            continue
        known[claimed.origin].append((n, note))

    outcomes: list[BundleOutcome] = []
    for label, data in bundles:
        result = verify_one(data, nodes=nodes, chain=chain, offline=offline,
                            pinned_for=keys.get, known_for=lambda o: known.get(o, []),
                            options=options, now=now, keep_entries=True)
        mine = local_findings(result)
        if keys and result.origin and result.origin not in keys:
            mine.insert(0, Finding.of(
                FindingCode.LOG_NOT_PINNED,
                f"{label} is of log {result.origin!r}, for which no --log-key was given while "
                f"keys of other logs were ({', '.join(sorted(keys))}): nobody vouched for this "
                "log. Pass its published key too, or leave the bundle out"))
        outcomes.append(BundleOutcome(label, result, mine, verdict_of(mine)))

    origins = {b.result.origin for b in outcomes if b.result.origin}
    for origin in sorted(set(keys) - origins):
        run.append(Finding.of(FindingCode.LOG_MISSING,
                           f"a --log-key names log {origin!r}, but no readable bundle of that "
                           "log was given: that collector's share of the messages is missing "
                           "from this verification (or the key is not for these logs)",
                           bundles=all_labels))
    for origin in sorted(set(known) - origins - set(keys)):
        numbers = ", ".join(f"#{n}" for n, _ in known[origin])
        run.append(Finding.of(FindingCode.LOG_MISSING,
                           f"known checkpoint(s) {numbers} are of log {origin!r}, but no "
                           "readable bundle of that log was given, so nothing is checked "
                           "against them", bundles=all_labels))

    labels = [b.label for b in outcomes]
    combined = combine(labels, [b.result for b in outcomes],
                       backwards_tolerance_s=(options or VerifyOptions()).backwards_tolerance_s)
    multi = MultiResult(outcomes, combined, run + combined.findings,
                        union_result(combined, [b.result for b in outcomes]),
                        offline=offline, chain=_chain_of(outcomes, chain), nodes=list(nodes),
                        verified_at=now)
    multi.findings.sort(key=lambda f: ("error", "warning", "info").index(f.severity))
    for b in outcomes:
        b.result.entries = ()  # the bytes were only needed to compare copies
    multi.elapsed_s = time.perf_counter() - started
    return multi


def _chain_of(outcomes: Sequence[BundleOutcome], chain: str | None) -> str | None:
    chains = {b.result.chain for b in outcomes if b.result.chain}
    return chain if chain is not None else (chains.pop() if len(chains) == 1 else None)


def union_result(combined: Combined, results: Sequence[VerificationResult]) -> VerificationResult:
    """The union as one :class:`VerificationResult`: each seq once, gateways with the gaps of
    the union, the scope covering every bundle's. What the report draws and what the
    operator's database is compared with."""
    union = VerificationResult(scope=dict(combined.scope))
    union.messages = sorted(combined.messages, key=lambda m: (m.gateway, m.seq))
    union.total_messages = sum(r.total_messages for r in results)
    union.gateways = [
        GatewaySummary(g.gateway, g.farm, g.field, messages=g.verified_messages,
                       verified_messages=g.verified_messages, readings=g.readings,
                       missing_values=g.missing_values, first_seq=g.first_seq,
                       last_seq=g.last_seq, first_time=g.first_time, last_time=g.last_time,
                       gaps=list(g.gaps))
        for g in combined.gateways
    ]
    union.verdict = "pass"
    return union


def check_union_against_influx(multi: MultiResult, url: str, database: str, *,
                               auth: InfluxAuth | None = None, timeout: float = 60.0) -> Any:
    """Compare the operator's InfluxDB with the union of the verified readings: every
    collector writes the same database, so only the union can match it. Its findings join the
    run's, naming every bundle."""
    union = multi.union
    union.findings = []  # the union's own findings are the comparison's
    cmp = check_against_influx(union, url, database, timeout=timeout, auth=auth)
    labels = tuple(b.label for b in multi.bundles)
    for f in union.findings:
        f.bundles = labels
        multi.findings.append(f)
    multi.findings.sort(key=lambda f: ("error", "warning", "info").index(f.severity))
    multi.influx = cmp
    return cmp
