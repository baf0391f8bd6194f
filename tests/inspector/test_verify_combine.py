"""The analysis across bundles (inspector/combine.py) on generated message sets: it is a
pure function of verified results, so no service is needed. A gateway's seqs 1..n are spread
over a few logs (each seq in none, one or several), some copies with other signed content;
whatever the spread, the union's gaps, copies and conflicts must be exactly what was made."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.combine import combine
from inspector.verify import GatewaySummary, VerificationResult, VerifiedMessage, VerifiedReading

GW = "gw-0123456789abcdef"
KEY = "ab" * 32
SCOPE: dict[str, Any] = {"farm": "farm-a", "field": None, "gateway": None, "from": 0.0, "to": 1e10}


def _msg(index: int, seq: int, variant: int) -> VerifiedMessage:
    t = 1_750_000_000.0 + 60 * seq
    reading = VerifiedReading("station", "soil_moisture", "/", 0.3 + variant, t, "")
    return VerifiedMessage(index, GW, seq, 1, (reading,), True, int(t) + 600)


#: per seq: for each of the logs, None (not held) or the variant of its content (0 = genuine)
spreads = st.integers(2, 4).flatmap(lambda logs: st.tuples(
    st.just(logs),
    st.lists(st.lists(st.none() | st.sampled_from([0, 0, 0, 1]), min_size=logs,
                      max_size=logs), min_size=1, max_size=40)))


def _build(logs: int, spread: list[list[int | None]], scopes: list[dict[str, Any]] | None = None,
           ) -> tuple[list[str], list[VerificationResult], list[dict[int, bytes]]]:
    results, contents = [], []
    for b in range(logs):
        r = VerificationResult(verdict="pass", scope=dict((scopes or [SCOPE] * logs)[b]),
                               origin=f"example.org/log/c{b}")
        r.gateways = [GatewaySummary(GW, "farm-a", "north", public_key=KEY, keys=(KEY,))]
        content: dict[int, bytes] = {}
        index = 10
        for seq, holders in enumerate(spread, 1):
            variant = holders[b]
            if variant is None:
                continue
            index += 1
            r.messages.append(_msg(index, seq, variant))
            content[index] = f"{seq}/{variant}".encode()
        results.append(r)
        contents.append(content)
    return [f"b{i}.fpb" for i in range(logs)], results, contents


@settings(max_examples=150, deadline=None)
@given(spreads)
def test_union_gaps_copies_and_conflicts_are_exact(case: tuple[int, list[list[int | None]]]
                                                   ) -> None:
    logs, spread = case
    labels, results, contents = _build(logs, spread)
    got = combine(labels, results, [c.get for c in contents])
    held = [seq for seq, h in enumerate(spread, 1) if any(v is not None for v in h)]
    (g,) = got.gateways
    assert g.verified_messages == len(held) == len(got.messages)
    assert sorted(m.seq for m in got.messages) == held
    missing = {s for s in range(held[0], held[-1] + 1) if s not in held} if held else set()
    assert {s for gap in g.gaps for s in range(gap.first_missing, gap.last_missing + 1)} == \
        missing
    twice = conflicts = 0
    for h in spread:
        variants = [v for v in h if v is not None]
        if len(variants) > 1:
            conflicts += sum(1 for v in variants[1:] if v != variants[0])
            twice += any(v == variants[0] for v in variants[1:])
    assert (g.logged_twice, g.conflicts) == (twice, conflicts)
    count = {code: sum(f.count for f in got.findings if f.code == code)
             for code in ("conflicting_message", "logged_twice", "sequence_gap")}
    assert count == {"conflicting_message": conflicts, "logged_twice": twice,
                     "sequence_gap": len(g.gaps)}
    assert all(f.bundles for f in got.findings)
    assert g.bundles == {labels[b]: sum(1 for h in spread if h[b] is not None)
                         for b in range(logs)}


def test_without_bytes_the_signed_payloads_are_compared() -> None:
    labels, results, _ = _build(2, [[0, 0], [0, 1]])
    got = combine(labels, results, [lambda i: None, lambda i: None])
    assert sorted(f.code for f in got.findings) == ["conflicting_message", "logged_twice"]


def test_one_logs_entry_in_two_of_its_bundles_is_not_a_redelivery() -> None:
    labels, results, contents = _build(2, [[0, 0], [0, 0]])
    results[1].origin = results[0].origin
    got = combine(labels, results, [c.get for c in contents])
    assert not got.findings and got.gateways[0].logged_twice == 0


def test_different_scopes_warn_naming_the_bundles() -> None:
    other = {**SCOPE, "field": "north"}
    labels, results, contents = _build(2, [[0, None], [None, 0]], [SCOPE, other])
    got = combine(labels, results, [c.get for c in contents])
    (f,) = [f for f in got.findings if f.code == "scope_mismatch"]
    assert f.severity == "warning" and f.bundles == ("b0.fpb", "b1.fpb")
    assert "field north" in f.message and "b0.fpb" in f.message
    assert got.scope["field"] is None and got.scope["farm"] == "farm-a"


def test_unrelated_enrollment_keys_are_an_error_a_rotation_is_not() -> None:
    labels, results, contents = _build(2, [[0, None]])
    results[1].gateways[0].public_key = "cd" * 32
    results[1].gateways[0].keys = ("cd" * 32,)
    got = combine(labels, results, [c.get for c in contents])
    assert [f.code for f in got.findings if f.severity == "error"] == ["gateway_key_mismatch"]
    # the second log enrolled the key the first rotated to: one history
    results[0].gateways[0].keys = (KEY, "cd" * 32)
    got = combine(labels, results, [c.get for c in contents])
    assert not [f for f in got.findings if f.severity == "error"]


def test_clock_step_back_across_two_logs_is_found_only_by_the_union() -> None:
    """Seq 1 and 3 in one log, seq 2 in the other, sampled before seq 1 within the same boot:
    each bundle alone sees a clock that only moves forward; the union sees it step back, and
    says which two logs hold the pair. A boot counter going down across logs likewise."""
    labels, results, contents = _build(2, [[0, None], [None, 0], [0, None]])
    step_back = results[1].messages[0]
    t = 1_750_000_000.0 - 3600  # an hour before seq 1
    results[1].messages[0] = VerifiedMessage(
        step_back.index, GW, 2, 1,
        (VerifiedReading("station", "soil_moisture", "/", 0.3, t, ""),), True, int(t) + 600)
    combined = combine(labels, results, [c.get for c in contents])
    found = [f for f in combined.findings if f.code == "clock_backwards"]
    assert len(found) == 1
    assert set(found[0].bundles) == {"b0.fpb", "b1.fpb"}
    assert "seq 1" in found[0].message and "seq 2" in found[0].message

    labels, results, contents = _build(2, [[0, None], [None, 0]])
    m = results[1].messages[0]
    results[1].messages[0] = VerifiedMessage(m.index, GW, m.seq, 0, m.readings, True,
                                             m.anchor_time)  # boot 1 -> 0
    combined = combine(labels, results, [c.get for c in contents])
    assert [f.code for f in combined.findings if f.code.endswith("_backwards")] == [
        "boot_backwards"]

    # within one log: that bundle's own finding, not repeated by the union
    labels, results, contents = _build(2, [[0, None], [0, None]])
    m = results[0].messages[1]
    results[0].messages[1] = VerifiedMessage(m.index, GW, m.seq, 0, m.readings, True,
                                             m.anchor_time)
    combined = combine(labels, results, [c.get for c in contents])
    assert not [f for f in combined.findings if f.code.endswith("_backwards")]
