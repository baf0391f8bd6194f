"""``fieldproof verify --policy FILE``: which of the bundle's checkpoints count as proof under
the inspector's trust policy (docs/bundle.md §5 step 4a, the policy format in
docs/evidence-log.md §10).

The rule. A valid checkpoint of the bundle *counts* when it is signed by a log of the policy
and either

1. the witnesses whose cosignature/v1 on it verifies meet the policy's quorum, or
2. one of its anchors was verified on chain and is final (step 4; never with ``--offline``,
   where anchors are only claims), unless ``--require-quorum`` is given: then only 1 counts.

A checkpoint is *covered* when it or a later checkpoint of its segment (linked to it by the
bundle's consistency proofs) counts: what a counting checkpoint proves, it proves for every
smaller tree it extends. Every valid checkpoint must be covered, since each proves the entries
placed in it; if one is not, ``policy_quorum_not_met`` (an error) names the newest such
checkpoint, the witnesses that cosigned it and those missing. Otherwise ``policy_quorum_met``
(info) names the checkpoint that proves the most and how. A bundle whose log the policy does not
list is ``policy_log_unknown`` (an error): nothing in it counts.

``quorum none`` asks for no cosignature: every checkpoint signed by a policy log counts (the
policy then only pins the log key)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fieldproof.errors import FormatError
from fieldproof.formats.note import Ed25519Verifier
from inspector.findings import FindingCode
from inspector.policy import Policy, PolicyResult
from inspector.results import CheckpointSummary, Findings

__all__ = ["PolicyCheck", "check_policy", "policy_log_key"]


def policy_log_key(policy: Policy, origin: str) -> Ed25519Verifier | None:
    """The policy's key for the log ``origin``: a vkey named by the origin, else a hex key
    (which signs under the origin); None when the policy lists no key that can be this log's."""
    for entry in policy.logs:
        if entry.verifier is not None and entry.verifier.name == origin:
            return entry.verifier
    for entry in policy.logs:
        if entry.verifier is None:
            try:
                return Ed25519Verifier(origin, entry.public_key)
            except (FormatError, ValueError):
                return None
    return None


@dataclass
class PolicyCheck:
    """What the policy made of each checkpoint; ``status``: ``met`` (every valid checkpoint
    covered), ``not_met``, or ``no_log`` (no checkpoint signed by a policy log)."""

    policy: str
    quorum: str
    require_quorum: bool
    status: Literal["met", "not_met", "no_log"] = "not_met"
    #: the newest checkpoint that counts (position), None when none does
    proving: int | None = None
    checkpoints: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _names(names: Sequence[str]) -> str:
    return ", ".join(names) if names else "none"


def check_policy(policy: Policy, cps: Sequence[CheckpointSummary], *, anchors_verified: bool,
                 require_quorum: bool, out: Findings) -> PolicyCheck:
    """Judge every checkpoint of the bundle under ``policy`` (the module docstring's rule).
    ``anchors_verified``: whether ``CheckpointSummary.anchored`` rests on the chain (False
    with ``--offline``)."""
    check = PolicyCheck(policy.describe(), policy.quorum, require_quorum)
    results: list[PolicyResult] = [policy.evaluate(c.note) for c in cps]
    counts: list[bool] = []
    for c, r in zip(cps, results, strict=True):
        by_anchor = anchors_verified and c.anchored and not require_quorum
        counted = c.valid and r.problem is None and (r.quorum_met or by_anchor)
        counts.append(counted)
        check.checkpoints.append({
            "position": c.position, "size": c.size, "valid": c.valid,
            "signed_by_policy_log": r.problem is None, "problem": r.problem,
            "signed": list(r.signed), "missing": list(r.missing), "invalid": list(r.invalid),
            "unknown_signatures": r.unknown_signatures, "quorum_met": r.quorum_met,
            "anchored": by_anchor, "counts": counted, "covered": False})
    valid = [i for i, c in enumerate(cps) if c.valid]
    if not valid:
        check.status = "not_met"
        return check  # the checkpoints' own findings say why nothing is valid
    if not any(results[i].problem is None for i in valid):
        check.status = "no_log"
        out.add(FindingCode.POLICY_LOG_UNKNOWN,
                f"no checkpoint of the bundle is signed by a log of the policy "
                f"({results[valid[-1]].problem}): under this policy the bundle proves nothing. "
                "Check that the policy's log line holds this log's published key")
        return check
    covered_by: dict[int, int] = {}
    for i in reversed(valid):
        later = next((j for j in valid if j >= i and counts[j]
                      and cps[j].segment == cps[i].segment), None)
        if later is not None:
            covered_by[i] = later
            check.checkpoints[i]["covered"] = True
    proving = [j for j in valid if counts[j]]
    check.proving = proving[-1] if proving else None
    bare = [i for i in valid if i not in covered_by]
    if bare:
        check.status = "not_met"
        i = bare[-1]
        r, c = results[i], cps[i]
        anchor = ("its anchors do not count (--require-quorum)" if require_quorum else
                  "anchors were not checked (--offline)" if not anchors_verified else
                  "nor has it a verified, final anchor")
        invalid = f"; cosignatures that do not verify: {_names(r.invalid)}" if r.invalid else ""
        out.add(FindingCode.POLICY_QUORUM_NOT_MET,
                f"checkpoint {i} (size {c.size})"
                + (f" and {len(bare) - 1} earlier one(s)" if len(bare) > 1 else "")
                + f" count for nothing under the policy: quorum {policy.quorum} is not met "
                f"(cosigned by {_names(r.signed)}; missing {_names(r.missing)}{invalid}), "
                f"{anchor}, and no later checkpoint that extends it does better. The entries "
                "they prove are not proven under your policy: ask the operator for a bundle "
                "whose newest checkpoint the witnesses cosigned, or wait for its anchor")
        return check
    check.status = "met"
    j = check.proving
    assert j is not None
    r = results[j]
    how = (f"quorum {policy.quorum} met (cosigned by {_names(r.signed)}; missing "
           f"{_names(r.missing)})" if r.quorum_met else
           f"its verified final anchor (quorum {policy.quorum} not met: cosigned by "
           f"{_names(r.signed)}; missing {_names(r.missing)})")
    out.add(FindingCode.POLICY_QUORUM_MET,
            f"checkpoint {j} (size {cps[j].size}) counts under the policy by {how}, and every "
            "checkpoint of the bundle is covered by one that counts")
    return check
