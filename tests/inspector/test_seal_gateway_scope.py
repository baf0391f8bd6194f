"""A bundle scoped to one gateway (no farm) and the seal (docs/bundle.md §4b): it carries only
the farm records that list the gateway, never another farm's, and the verifier still proves no
record was left out: the records state how many registry events the gateway has below the seal,
so the bundle must carry them all, and every farm its enrollments name must have its record
here. Collector state is built with the collector's own classes (tests/support/bundles.Farm);
the second enrollment (a gateway moved to another farm) is logged the way
tests/inspector/test_verify_completeness.py logs it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchor.logkey import load_or_create_log_key
from collector.export import build_bundle
from fieldproof.formats.bundle import Bundle, Entry, encode_bundle, sign_completeness
from fieldproof.formats.registry_event import parse_registry_event, registry_event
from fieldproof.formats.seal import decode_farm_record
from fieldproof.wire import parse_sign1, payload_from_cbor, public_key_bytes
from inspector.seal_check import Carried, SealCheck, check_seal
from inspector.verify import VerificationResult, verify_bundle
from tests.support.bundles import Farm, Gateway

T0 = 1_750_000_000.0
START, END = T0 + 600, T0 + 1200


@dataclasses.dataclass(frozen=True)
class Site:
    farm: Farm
    moved: Gateway  # enrolled in farm-a, then in farm-m
    neighbour: Gateway  # farm-a too
    strangers: tuple[Gateway, ...]  # farm-b, farm-z


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    f = Farm(tmp_path_factory.mktemp("gwscope"))
    moved = f.enroll("farm-a", "north")
    neighbour = f.enroll("farm-a", "south")
    strangers = (f.enroll("farm-b", "x"), f.enroll("farm-z", "y"))
    f.run(moved, T0, 10)
    with f.db:  # enrolled again, for farm-m (the registry table keeps one row per gateway)
        f.evidence.append([registry_event("enroll", moved.gateway, public_key=public_key_bytes(
            moved.key), farm="farm-m", field="east", at=T0 + 590)])
    f.run(moved, T0 + 600, 20)
    for g in (neighbour, *strangers):
        f.run(g, T0, 25)
    f.checkpoint()
    yield Site(f, moved, neighbour, strangers)
    f.close()


def _bundle(site: Site, gateway: str) -> Bundle:
    return build_bundle(site.farm.config, farm=None, field=None, gateway=gateway, start=START,
                        end=END)[0]


def _farms(b: Bundle) -> list[str]:
    assert b.seal is not None
    return [decode_farm_record(f.record).farm for f in b.seal.farms]


def _verify(site: Site, b: Bundle) -> VerificationResult:
    return verify_bundle(encode_bundle(b), nodes=[], chain=None, offline=True,
                         log_key=site.farm.vkey, now=T0 + 3600)


def _check(site: Site, b: Bundle) -> SealCheck:
    """The seal judged alone (the claim out of the picture)."""
    roots = {c.checkpoint.size: c.checkpoint.root_hash
             for c in site.farm.evidence.checkpoints()}
    carried: dict[str, list[Carried]] = {}
    for e in b.messages:
        p = payload_from_cbor(parse_sign1(e.data).payload)
        times = [x.time for x in p.readings]
        carried.setdefault(p.gateway, []).append(
            Carried(p.seq, e.index, min(times), max(times), True))
    return check_seal(b, roots, carried, lambda e: True, claim_checked=False)


def _without_records(b: Bundle, *farms: str) -> Bundle:
    assert b.seal is not None
    kept = tuple(f for f in b.seal.farms if decode_farm_record(f.record).farm not in farms)
    return dataclasses.replace(b, seal=dataclasses.replace(b.seal, farms=kept))


def _names_farm(e: Entry, farm: str) -> bool:
    obj = parse_registry_event(e.data)
    return obj is not None and obj.get("event") == "enroll" and obj.get("farm") == farm


def test_a_gateway_bundle_shows_only_its_own_farms(site: Site) -> None:
    b = _bundle(site, site.moved.gateway)
    assert _farms(b) == ["farm-a", "farm-m"]  # both farms it was enrolled in, no other
    data = encode_bundle(b)
    for g in site.strangers:
        assert g.gateway.encode() not in data and g.farm.encode() not in data
    r = _verify(site, b)
    assert r.codes("error") == set(), [f.message for f in r.findings]
    assert r.seal is not None and r.seal["status"] == "sealed"
    assert r.seal["farms"] == ["farm-a", "farm-m"]
    assert r.seal["gateways"] == {site.moved.gateway: "complete"}
    # a gateway of one farm: that farm's record only
    assert _farms(_bundle(site, site.strangers[0].gateway)) == ["farm-b"]


def test_a_hidden_farm_record_listing_the_gateway_fails(site: Site) -> None:
    """The record of farm-m lists the gateway; the bundle carries its enrollment there, so
    leaving the record out is seal_invalid."""
    cut = _without_records(_bundle(site, site.moved.gateway), "farm-m")
    check = _check(site, cut)
    assert check.status == "invalid" and [f.code for f in check.findings] == ["seal_invalid"]
    assert "farm 'farm-m'" in check.detail
    assert "seal_invalid" in _verify(site, cut).codes("error")


def test_a_hidden_enrollment_in_another_farm_fails(site: Site) -> None:
    """Hiding the farm-m record together with the enrollment that names farm-m (and a claim
    re-signed to match, so only the seal can tell): the farm-a record counts the gateway's
    registry events, so the missing one is registry_withheld, and the claim a false one."""
    b = _bundle(site, site.moved.gateway)
    cut = _without_records(b, "farm-m")
    cut = dataclasses.replace(cut, registry=tuple(
        e for e in cut.registry if not _names_farm(e, "farm-m")))
    assert len(cut.registry) == len(b.registry) - 1
    check = _check(site, cut)
    assert [f.code for f in check.findings] == ["registry_withheld"]
    assert check.gateways == {site.moved.gateway: "registry withheld"}
    c = b.completeness
    assert c is not None
    signer = load_or_create_log_key(site.farm.config.log_key_file, site.farm.config.log_origin)
    resigned = sign_completeness(signer, b.origin, site.farm.evidence.log.root(c.size), b.scope,
                                 c.size, c.registry - 1, c.gateways)
    r = _verify(site, dataclasses.replace(cut, completeness=resigned))
    # the re-signed claim (one registry event fewer) is itself contradicted by the seal
    assert {"registry_withheld", "seal_claim_mismatch"} <= r.codes("error"), [
        f.message for f in r.findings]
    assert r.seal is not None and r.seal["status"] == "invalid"


def test_a_gateway_hidden_altogether_fails(site: Site) -> None:
    """No record, no registry event, no message of the gateway: nothing shows it is in no
    record, which only every record could."""
    b = _bundle(site, site.moved.gateway)
    empty = dataclasses.replace(_without_records(b, "farm-a", "farm-m"), registry=(),
                                messages=())
    check = _check(site, empty)
    assert [f.code for f in check.findings] == ["seal_invalid"]
    assert "every record" in check.detail
    # one record listing it is not enough while its enrollment names another farm
    only_a = _without_records(b, "farm-m")
    assert _check(site, only_a).status == "invalid"


def test_a_field_the_gateway_has_no_enrollment_in(site: Site) -> None:
    """Scoped to the gateway and a field none of its records lists it in: with every one of its
    registry events carried, the records of its farms show it is not in the scope; with one
    left out, nothing does (the exporter carries every record then; this bundle is edited)."""
    b = _bundle(site, site.moved.gateway)
    west = dataclasses.replace(b, scope=dataclasses.replace(b.scope, field="west"))
    check = _check(site, west)
    assert check.status == "sealed" and check.findings == [] and check.gateways == {}
    short = dataclasses.replace(west, registry=west.registry[1:])
    check = _check(site, short)
    assert [f.code for f in check.findings] == ["seal_invalid"]
    assert "1 of the 2 registry events" in check.detail


def test_a_gateway_in_no_record_gets_every_record(tmp_path: Path) -> None:
    """A gateway enrolled after the newest seal is in no record: only every record shows
    that, so its bundle carries them all (and says so)."""
    f = Farm(tmp_path)
    for name in ("farm-a", "farm-b"):
        f.run(f.enroll(name, "x"), T0, 3)
    f.checkpoint()
    late = f.enroll("farm-c", "x")
    b, _ = build_bundle(f.config, farm=None, field=None, gateway=late.gateway, start=START,
                        end=END)
    assert _farms(b) == ["farm-a", "farm-b"]
    assert any("in no farm record" in n for n in b.notes)
    r = verify_bundle(encode_bundle(b), nodes=[], chain=None, offline=True, log_key=f.vkey,
                      now=T0 + 3600)
    assert r.seal is not None and r.seal["status"] == "sealed", [x.message for x in r.findings]
    # one record fewer and nothing shows it is in none
    assert b.seal is not None
    lone = dataclasses.replace(b, seal=dataclasses.replace(b.seal, farms=b.seal.farms[:1]))
    assert r.seal is not None
    r = verify_bundle(encode_bundle(lone), nodes=[], chain=None, offline=True, log_key=f.vkey,
                      now=T0 + 3600)
    assert "seal_invalid" in r.codes("error")
    f.close()
