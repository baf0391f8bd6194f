"""Completeness (docs/bundle.md §4a, §5 step 8): a bundle shows it holds every gateway of its
scope and every message of the period, from just before to just after it, or the verifier
says what was withheld. Collector state built with the collector's own classes
(tests/support/bundles.Farm); bundles edited with a tamperer's tool (nothing re-signed unless
the test says so)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from collector.export import build_bundle, export_bundle
from fieldproof.formats.bundle import (
    Bundle,
    GatewayClaim,
    decode_bundle,
    encode_bundle,
    sign_completeness,
)
from fieldproof.formats.registry_event import parse_registry_event, registry_event
from fieldproof.wire import encode_deterministic, parse_sign1, payload_from_cbor, public_key_bytes
from inspector.multi import verify_bundles
from inspector.verify import VerificationResult, verify_bundle
from tests.support.bundles import Farm, Gateway, rewrite

T0 = 1_750_000_000.0
#: the period: seq 11..21 of the gateways that sample every minute from T0 (seq 1 at T0)
START, END = T0 + 600, T0 + 1200


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    f = Farm(tmp_path_factory.mktemp("complete"))
    a = f.enroll("farm-a", "north")
    b = f.enroll("farm-a", "south")
    other = f.enroll("farm-b", "east")
    f.run(a, T0, 30)
    f.run(b, T0, 30)
    f.run(other, T0, 10)
    quiet = f.enroll("farm-a", "east")  # stops inside the period and stays silent
    f.run(quiet, T0 + 300, 8)  # seq 1..8, sampled T0+300..T0+720
    f.checkpoint()
    f.run(a, T0 + 1800, 2)  # after the newest checkpoint: carried, outside the claim
    yield f
    f.close()


@pytest.fixture(scope="module")
def data(farm: Farm) -> bytes:
    return export_bundle(farm.config, farm="farm-a", field=None, gateway=None, start=START,
                         end=END)


def verify(farm: Farm, data: bytes) -> VerificationResult:
    return verify_bundle(data, nodes=[], chain=None, offline=True, log_key=farm.vkey,
                         now=T0 + 3600)


def seq_of(raw: bytes) -> tuple[str, int]:
    p = payload_from_cbor(parse_sign1(raw).payload)
    return p.gateway, p.seq


def drop_messages(keep: Callable[[str, int], bool]) -> Callable[[dict[str, Any]], None]:
    def edit(o: dict[str, Any]) -> None:
        o["messages"] = [m for m in o["messages"] if keep(*seq_of(m[1]))]
    return edit


def errors(r: VerificationResult) -> set[str]:
    return r.codes("error")


def test_untouched_bundle_is_complete(farm: Farm, data: bytes) -> None:
    r = verify(farm, data)
    assert errors(r) == set(), [f.message for f in r.findings]
    assert r.completeness.status == "complete"
    a, b, _, quiet = farm.gateways
    assert sorted(r.completeness.gateways) == sorted([a.gateway, b.gateway, quiet.gateway])
    # the enrollments of farm-a's three gateways; farm-b's is neither carried nor counted
    assert r.completeness.registry_claimed == r.completeness.registry_held == 3
    by = {g.gateway: g for g in r.gateways}
    assert set(by) == {a.gateway, b.gateway, quiet.gateway}  # farm-b's gateway stays out
    assert all(g.completeness == "complete" for g in r.gateways)
    # the period's seq 11..21 and one neighbour on each side; the quiet gateway ends inside
    # the period, so its run ends at its latest message
    assert (by[b.gateway].first_seq, by[b.gateway].last_seq) == (10, 22)
    assert (by[a.gateway].first_seq, by[a.gateway].last_seq) == (10, 22)
    assert (by[quiet.gateway].first_seq, by[quiet.gateway].last_seq) == (5, 8)
    claim = by[quiet.gateway].claim
    assert claim is not None and (claim.from_seq, claim.to_seq, claim.latest_seq) == (5, 8, 8)
    assert "completeness_unproven" not in r.codes()
    assert r.to_json()["completeness"]["status"] == "complete"


def test_drop_a_gateway_entirely(farm: Farm, data: bytes) -> None:
    """Its registry events and its messages: the registry count and the claim show it."""
    gw = farm.gateways[1].gateway

    def edit(o: dict[str, Any]) -> None:
        o["registry"] = [e for e in o["registry"]
                         if (parse_registry_event(e[1]) or {}).get("gw") != gw]
        drop_messages(lambda g, s: g != gw)(o)

    r = verify(farm, rewrite(data, edit))
    assert r.verdict == "fail"
    assert errors(r) == {"registry_withheld", "gateway_withheld"}
    assert r.completeness.status == "withheld"
    assert any(f.gateway == gw for f in r.findings if f.code == "gateway_withheld")


def test_drop_a_gateways_messages_but_not_its_enrollment(farm: Farm, data: bytes) -> None:
    gw = farm.gateways[1].gateway
    r = verify(farm, rewrite(data, drop_messages(lambda g, s: g != gw)))
    assert errors(r) == {"gateway_withheld"}
    assert next(g for g in r.gateways if g.gateway == gw).completeness == "withheld"


def test_drop_the_tail_of_a_gateway(farm: Farm, data: bytes) -> None:
    """The last third of the period and the neighbour after it."""
    gw = farm.gateways[1].gateway
    r = verify(farm, rewrite(data, drop_messages(lambda g, s: g != gw or s < 18)))
    assert errors(r) == {"period_cut"}
    (f,) = [f for f in r.findings if f.code == "period_cut"]
    assert f.gateway == gw and "end" in f.message and "5 of the 13" in f.message
    assert next(g for g in r.gateways if g.gateway == gw).completeness == "tail cut"


def test_drop_the_head_of_a_gateway(farm: Farm, data: bytes) -> None:
    gw = farm.gateways[0].gateway
    r = verify(farm, rewrite(data, drop_messages(lambda g, s: g != gw or s > 13)))
    assert errors(r) == {"period_cut"}
    assert next(g for g in r.gateways if g.gateway == gw).completeness == "head cut"


def test_drop_only_the_neighbour_after_the_period(farm: Farm, data: bytes) -> None:
    gw = farm.gateways[1].gateway
    r = verify(farm, rewrite(data, drop_messages(lambda g, s: g != gw or s != 22)))
    assert errors(r) == {"period_cut"}


def test_drop_one_message_in_the_middle(farm: Farm, data: bytes) -> None:
    gw = farm.gateways[0].gateway
    r = verify(farm, rewrite(data, drop_messages(lambda g, s: g != gw or s != 15)))
    assert errors(r) == {"messages_withheld"}
    (f,) = [f for f in r.findings if f.code == "messages_withheld"]
    assert "15–15" in f.message
    # the gap is still shown, as before
    assert "sequence_gap" in r.codes("warning")


def test_messages_after_the_claim(farm: Farm) -> None:
    """Messages logged after the claim's checkpoint (seq 31, 32 of the first gateway, sampled
    in this longer period) are carried but outside the claim: dropping them is not detectable,
    and the claim says so by its tree size; they are flagged as in no checkpoint."""
    gw = farm.gateways[0].gateway
    data = export_bundle(farm.config, farm="farm-a", field=None, gateway=None, start=START,
                         end=T0 + 1900)
    assert {s for g, s in map(seq_of, (e.data for e in decode_bundle(data).messages))
            if g == gw} == set(range(10, 33))
    r = verify(farm, data)
    assert errors(r) == set() and r.completeness.status == "complete"
    assert "outside_anchored_range" in r.codes("warning")
    r = verify(farm, rewrite(data, drop_messages(lambda g, s: g != gw or s <= 30)))
    assert errors(r) == set()
    assert r.completeness.status == "complete"


def test_edited_claim_is_invalid(farm: Farm, data: bytes) -> None:
    """Lower a gateway's count to hide a dropped message: the signed note no longer matches."""
    gw = farm.gateways[0].gateway

    def edit(o: dict[str, Any]) -> None:
        claim = cbor2.loads(o["completeness"]["claim"])
        for rec in claim["gateways"]:
            if rec[0] == gw:
                rec[5] -= 1
        o["completeness"]["claim"] = cbor2.dumps(claim, canonical=True)
        drop_messages(lambda g, s: g != gw or s != 15)(o)

    r = verify(farm, rewrite(data, edit))
    # the log's seal shows every seq of the gateway was logged: the dropped one is withheld
    assert errors(r) == {"completeness_claim_invalid", "messages_withheld"}
    assert r.completeness.status == "invalid"
    assert "hash differs" in r.completeness.detail


def test_claim_of_another_scope_is_invalid(farm: Farm, data: bytes) -> None:
    """A claim lifted from another (smaller) bundle of the same log, signed and all."""
    north = export_bundle(farm.config, farm="farm-a", field="north", gateway=None,
                          start=START, end=END)

    def edit(o: dict[str, Any]) -> None:
        o["completeness"] = cbor2.loads(north)["completeness"]

    r = verify(farm, rewrite(data, edit))
    assert "completeness_claim_invalid" in errors(r)
    assert "another scope" in r.completeness.detail


def test_claim_signed_by_another_key_is_invalid(farm: Farm, data: bytes, tmp_path: Path) -> None:
    from fieldproof.formats.note import generate_key

    b = decode_bundle(data)
    assert b.completeness is not None
    forged = sign_completeness(generate_key(farm.config.log_origin), b.origin,
                               farm.evidence.latest().checkpoint.root_hash,  # type: ignore
                               b.scope, b.completeness.size, b.completeness.registry,
                               b.completeness.gateways)
    r = verify(farm, encode_bundle(dataclasses.replace(b, completeness=forged)))
    assert errors(r) == {"completeness_claim_invalid"}


def test_version_1_bundle_verifies_but_completeness_is_unproven(farm: Farm, data: bytes) -> None:
    """An old bundle (or one downgraded to hide a cut): verified as before, with a loud
    warning; --strict fails it."""
    gw = farm.gateways[1].gateway

    def downgrade(o: dict[str, Any]) -> None:
        o["version"] = 1
        del o["completeness"]
        del o["seal"]  # version 1 has neither
        drop_messages(lambda g, s: g != gw or s < 18)(o)

    r = verify(farm, rewrite(data, downgrade))
    assert errors(r) == set()
    assert r.verdict == "warn" and "completeness_unproven" in r.codes("warning")
    assert r.completeness.status == "unproven"
    assert "format version 1" in r.completeness.detail
    assert "completeness UNPROVEN" in r.summary_line()


def test_operator_resigning_a_false_claim(farm: Farm, data: bytes) -> None:
    """The operator holds the log key, so it can sign a claim that leaves a gateway out. The
    log's seal, written with the checkpoint before the export, shows the lie from the bundle
    alone (docs/bundle.md §4b); another bundle of the log, verified together, shows it too."""
    gw = farm.gateways[1].gateway
    b = decode_bundle(data)
    assert b.completeness is not None
    registry = tuple(e for e in b.registry
                     if (parse_registry_event(e.data) or {}).get("gw") != gw)
    messages = tuple(e for e in b.messages if seq_of(e.data)[0] != gw)
    signer = farm.evidence.signer
    assert signer is not None
    lie = sign_completeness(signer, b.origin, farm.evidence.latest().checkpoint.root_hash,  # type: ignore
                            b.scope, b.completeness.size, b.completeness.registry - 1,
                            [g for g in b.completeness.gateways if g.gateway != gw])
    forged = encode_bundle(dataclasses.replace(b, registry=registry, messages=messages,
                                               completeness=lie))
    r = verify(farm, forged)
    assert errors(r) == {"gateway_withheld", "seal_claim_mismatch"}
    assert r.completeness.status == "complete"  # the bundle agrees with the (false) claim
    assert r.seal is not None and r.seal["status"] == "invalid"
    assert r.seal["gateways"][gw] == "withheld" and "seal" in r.summary_line()
    # the gateway's owner asks for its own bundle; verified together, it shows the lie
    own = export_bundle(farm.config, farm=None, field=None, gateway=gw, start=START, end=END)
    multi = verify_bundles([("farm.fpb", forged), ("own.fpb", own)], nodes=[], chain=None,
                           offline=True, log_keys=[farm.vkey], now=T0 + 3600)
    assert multi.verdict == "fail"
    (f,) = [f for f in multi.combined.findings if f.code == "registry_withheld"]
    assert f.bundles == ("farm.fpb", "own.fpb") and "the claim is false" in f.message
    # and a message the claim's run says is complete, when the lie keeps the registry
    ga = farm.gateways[0].gateway
    cut = tuple(e for e in b.messages if seq_of(e.data) != (ga, 15))
    records = [dataclasses.replace(g, count=g.count - 1) if g.gateway == ga else g
               for g in b.completeness.gateways]
    lie = sign_completeness(signer, b.origin, farm.evidence.latest().checkpoint.root_hash,  # type: ignore
                            b.scope, b.completeness.size, b.completeness.registry, records)
    forged = encode_bundle(dataclasses.replace(b, messages=cut, completeness=lie))
    assert errors(verify(farm, forged)) == {"messages_withheld", "seal_claim_mismatch"}
    north = export_bundle(farm.config, farm="farm-a", field="north", gateway=None,
                          start=START, end=END)
    multi = verify_bundles([("farm.fpb", forged), ("north.fpb", north)], nodes=[], chain=None,
                           offline=True, log_keys=[farm.vkey], now=T0 + 3600)
    codes = {f.code for f in multi.combined.findings if f.severity == "error"}
    assert codes == {"messages_withheld"}
    # the honest pair raises nothing of the kind
    multi = verify_bundles([("farm.fpb", data), ("north.fpb", north)], nodes=[], chain=None,
                           offline=True, log_keys=[farm.vkey], now=T0 + 3600)
    assert not {f.code for f in multi.all_findings() if f.severity == "error"}


def test_gateway_silent_before_the_period(farm: Farm, tmp_path: Path) -> None:
    """A gateway whose messages all lie before the period: the bundle carries its last one,
    which shows nothing came after it (up to the claim's checkpoint)."""
    f = Farm(tmp_path)
    g = f.enroll()
    f.run(g, T0, 5)
    f.checkpoint()
    b, _ = build_bundle(f.config, farm=None, field=None, gateway=None, start=T0 + 3600,
                        end=T0 + 7200)
    assert [seq_of(e.data)[1] for e in b.messages] == [5]
    r = verify(f, encode_bundle(b))
    assert errors(r) == set() and r.completeness.status == "complete"
    # dropping that last message hides that the gateway ever sent anything
    cut = encode_bundle(dataclasses.replace(b, messages=()))
    assert errors(verify(f, cut)) == {"gateway_withheld"}
    f.close()


def test_wrong_clock_messages_arrive_in_the_period(farm: Farm, tmp_path: Path) -> None:
    """A Pi without a clock stamps 1970; its messages still belong to the period they
    arrived in (selected by arrival), are carried, and are flagged."""
    f = Farm(tmp_path)
    g = f.enroll()
    f.run(g, T0, 3)
    f.accept([g.message(86_400.0 * (i + 1)) for i in range(4)])  # seq 4..7, "1970"
    f.checkpoint()
    b, _ = build_bundle(f.config, farm=None, field=None, gateway=None, start=T0 + 3600,
                        end=2e9)  # the rows arrived now, inside this period
    # by sample time alone only seq 7 (the last before the period) would go in
    assert sorted(seq_of(e.data)[1] for e in b.messages) == [1, 2, 3, 4, 5, 6, 7]
    r = verify(f, encode_bundle(b))
    assert errors(r) == set() and r.completeness.status == "complete"
    assert "clock_past" in r.codes("warning")
    f.close()


def test_gateway_enrolled_in_scope_with_no_messages(tmp_path: Path) -> None:
    f = Farm(tmp_path)
    g = f.enroll()
    idle = f.enroll()
    f.run(g, T0, 3)
    f.checkpoint()
    data = export_bundle(f.config, farm=None, field=None, gateway=None, start=T0, end=T0 + 600)
    b = decode_bundle(data)
    assert b.completeness is not None
    assert GatewayClaim(idle.gateway, None, None, None, None, 0) in b.completeness.gateways
    r = verify(f, data)
    assert errors(r) == set() and r.completeness.status == "complete"
    f.close()


def test_no_checkpoint_no_claim(tmp_path: Path) -> None:
    f = Farm(tmp_path)
    g = f.enroll()
    f.run(g, T0, 2)
    b, stats = build_bundle(f.config, farm=None, field=None, gateway=None, start=T0,
                            end=T0 + 600)
    assert b.completeness is None and stats.claim_size == 0
    r = verify(f, encode_bundle(b))
    assert "completeness_unproven" in r.codes("warning") and errors(r) == set()
    f.close()


def test_scope_is_any_enrollment(tmp_path: Path) -> None:
    """A gateway moved from farm-a to farm-b belongs to both farms' histories: each bundle
    must carry it, and neither calls it out of scope."""
    f = Farm(tmp_path)
    g: Gateway = f.enroll("farm-a", "north")
    f.run(g, T0, 3)
    with f.db:  # enrolled again, for farm-b (the registry table keeps one row per gateway)
        f.evidence.append([registry_event("enroll", g.gateway, public_key=public_key_bytes(
            g.key), farm="farm-b", field="east", at=T0 + 500)])
    f.run(g, T0 + 600, 3)
    f.checkpoint()
    for farm_name in ("farm-a", "farm-b"):
        b: Bundle
        b, _ = build_bundle(f.config, farm=farm_name, field=None, gateway=None, start=T0,
                            end=T0 + 3600)
        assert b.completeness is not None
        assert [c.gateway for c in b.completeness.gateways] == [g.gateway]
        r = verify(f, encode_bundle(b))
        assert errors(r) == set(), [x.message for x in r.findings]
        assert "out_of_scope" not in r.codes()
        assert r.completeness.status == "complete"
    f.close()


def test_another_scopes_broken_registry_event_stays_out(tmp_path: Path) -> None:
    """A version 2 bundle carries the registry events of its own scope's gateways only; a
    broken one of another farm's gateway (here a rotation that does not follow from its key)
    is neither carried nor counted in this farm's bundle, and fails that farm's bundle."""
    f = Farm(tmp_path)
    mine = f.enroll("farm-a", "north")
    theirs = f.enroll("farm-b", "east")
    f.run(mine, T0, 3)
    f.run(theirs, T0, 3)
    with f.db:
        f.evidence.append([encode_deterministic({
            "t": "fieldproof/registry/v1", "event": "rotate", "gw": theirs.gateway,
            "time": T0 + 300, "pk": b"\x01" * 32, "prev_pk": b"\x02" * 32, "from_seq": 4})])
    f.checkpoint()
    a = export_bundle(f.config, farm="farm-a", field=None, gateway=None, start=T0, end=T0 + 600)
    assert [e.index for e in decode_bundle(a).registry] == [0]  # mine's enrollment only
    r = verify(f, a)
    assert errors(r) == set() and r.completeness.status == "complete"
    assert r.completeness.registry_claimed == r.completeness.registry_held == 1
    b = export_bundle(f.config, farm="farm-b", field=None, gateway=None, start=T0, end=T0 + 600)
    assert errors(verify(f, b)) == {"registry_invalid"}
    f.close()


def test_a_farms_bundle_carries_nothing_of_another_farm(tmp_path: Path) -> None:
    """Registry events are farm data: a farm's bundle carries no registry event, gateway id,
    location, installer or sensor of another farm's gateway (below or above the claim's size),
    and still shows a gateway of its own left out."""
    f = Farm(tmp_path)
    north = f.enroll("farm-a", "north", location="47.1,8.2")
    south = f.enroll("farm-a", "south", location="47.2,8.3")
    theirs = f.enroll("farm-b", "east", location="-33.9187,18.4233")
    f.run(north, T0, 12)
    f.run(south, T0, 12)
    f.run(theirs, T0, 12)
    installer, sensor = "Bea Installer-of-farm-b", "soil_moisture_farm_b"
    with f.db:  # theirs moved to another field by its installer, with its sensors declared
        f.evidence.append([encode_deterministic({
            "t": "fieldproof/registry/v1", "event": "enroll", "gw": theirs.gateway,
            "time": T0 + 400, "pk": public_key_bytes(theirs.key), "farm": "farm-b",
            "field": "west", "location": "-33.9190,18.4240", "installer": installer,
            "sensors": {sensor: {"unit": "%"}}})])
    f.checkpoint()
    f.registry.revoke(theirs.gateway)  # above the claim's size
    f.run(north, T0 + 720, 2)
    data = export_bundle(f.config, farm="farm-a", field=None, gateway=None, start=T0 + 120,
                         end=T0 + 480)
    b = decode_bundle(data)
    assert b.completeness is not None
    assert {(parse_registry_event(e.data) or {}).get("gw") for e in b.registry} == {
        north.gateway, south.gateway}
    assert {seq_of(e.data)[0] for e in b.messages} == {north.gateway, south.gateway}
    assert [g.gateway for g in b.completeness.gateways] == sorted([north.gateway,
                                                                   south.gateway])
    for secret in (theirs.gateway, "farm-b", "-33.9187,18.4233", "-33.9190,18.4240",
                   installer, sensor):
        assert secret.encode() not in data, secret
    assert public_key_bytes(theirs.key) not in data
    r = verify(f, data)
    assert errors(r) == set() and r.completeness.status == "complete"
    assert r.completeness.registry_claimed == r.completeness.registry_held == 2
    assert {g.gateway for g in r.gateways} == {north.gateway, south.gateway}

    # one of the farm's own gateways left out (its enrollment and its messages) still shows
    def drop_south(o: dict[str, Any]) -> None:
        o["registry"] = [e for e in o["registry"]
                         if (parse_registry_event(e[1]) or {}).get("gw") != south.gateway]
        o["messages"] = [m for m in o["messages"] if seq_of(m[1])[0] != south.gateway]

    r = verify(f, rewrite(data, drop_south))
    assert errors(r) == {"registry_withheld", "gateway_withheld"}
    assert r.completeness.status == "withheld"

    # verified together with farm-b's bundle of the same log, nothing of farm-b's is called
    # withheld from farm-a's (nor the other way round)
    other = export_bundle(f.config, farm="farm-b", field=None, gateway=None, start=T0 + 120,
                          end=T0 + 480)
    multi = verify_bundles([("a.fpb", data), ("b.fpb", other)], nodes=[], chain=None,
                           offline=True, log_keys=[f.vkey], now=T0 + 3600)
    assert not {x.code for x in multi.all_findings() if x.severity == "error"}, [
        x.message for x in multi.all_findings()]
    f.close()
