"""The seal check (inspector/seal_check.py, docs/bundle.md §4b): the collector's seal, written
with each checkpoint, proves a bundle complete for its scope, or shows what was withheld, what
a false claim hides, and what a false seal contradicts. Collector state built with the
collector's own classes (tests/support/bundles.Farm), so every seal here was written by the
real checkpointing path."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from collector.export import build_bundle, export_bundle
from fieldproof.formats.bundle import Bundle, SealFarm, decode_bundle, encode_bundle
from fieldproof.formats.cbor import decode_deterministic, encode_deterministic
from fieldproof.formats.seal import decode_farm_record, decode_seal, is_seal_entry
from fieldproof.wire import parse_sign1, payload_from_cbor
from inspector.seal_check import NO_SEAL, Carried, check_seal
from inspector.verify import VerificationResult, VerifyOptions, verify_bundle
from tests.support.bundles import Farm

T0 = 1_750_000_000.0
START, END = T0 + 600, T0 + 1200  # seq 11..21 of a gateway sampling every minute from T0


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    f = Farm(tmp_path_factory.mktemp("sealed"))
    a = f.enroll("farm-b", "north")
    b = f.enroll("farm-b", "south")
    other = f.enroll("farm-d", "east")
    f.run(a, T0, 30)
    f.run(b, T0, 30)
    f.run(other, T0, 10)
    f.checkpoint()
    f.run(a, T0 + 1800, 2)
    f.checkpoint()
    yield f
    f.close()


def verify(farm: Farm, data: bytes, require: bool = False) -> VerificationResult:
    return verify_bundle(data, nodes=[], chain=None, offline=True, log_key=farm.vkey,
                         now=T0 + 3600, options=VerifyOptions(require_complete=require))


def gw_seq(raw: bytes) -> tuple[str, int]:
    p = payload_from_cbor(parse_sign1(raw).payload)
    return p.gateway, p.seq


def bundle(farm: Farm, farm_name: str | None = "farm-b") -> Bundle:
    return build_bundle(farm.config, farm=farm_name, field=None, gateway=None, start=START,
                        end=END)[0]


def test_every_checkpoint_ends_with_its_seal(farm: Farm) -> None:
    log = farm.evidence.log
    sizes = [c.checkpoint.size for c in farm.evidence.checkpoints()]
    assert sizes == [74, 77]  # 3 enrollments + 70 messages + seal; + 2 messages + seal
    for size in sizes:
        seal = decode_seal(log.entry(size - 1))
        assert seal.size == size - 1 and seal.farms == 2
    assert sum(is_seal_entry(e) for e in log.entries(0, log.size())) == 2
    # an unchanged log gets neither a seal nor a checkpoint
    assert farm.evidence.checkpoint() is None and log.size() == 77


def test_untouched_bundle_is_sealed(farm: Farm) -> None:
    b = bundle(farm)
    assert b.seal is not None and b.completeness is not None and b.seal.size == 77
    (record,) = b.seal.farms
    assert decode_farm_record(record.record).farm == "farm-b"  # farm-d's stays out
    r = verify(farm, encode_bundle(b))
    assert r.codes("error") == set(), [f.message for f in r.findings]
    assert r.seal is not None and r.seal["status"] == "sealed" and r.seal["farms"] == ["farm-b"]
    assert set(r.seal["gateways"].values()) == {"complete"}
    assert "complete and sealed" in r.summary_line()


@pytest.mark.parametrize(("name", "edit", "codes"), [
    ("gateway dropped", lambda b, a, s: dataclasses.replace(
        b, registry=b.registry[1:], messages=tuple(e for e in b.messages
                                                   if gw_seq(e.data)[0] != a)),
     {"gateway_withheld"}),
    ("tail cut", lambda b, a, s: dataclasses.replace(b, messages=tuple(
        e for e in b.messages if gw_seq(e.data) < (a, 20) or gw_seq(e.data)[0] != a)),
     {"period_cut"}),
    ("head cut", lambda b, a, s: dataclasses.replace(b, messages=tuple(
        e for e in b.messages if gw_seq(e.data) > (a, 12) or gw_seq(e.data)[0] != a)),
     {"period_cut"}),
    ("registry event dropped", lambda b, a, s: dataclasses.replace(b, registry=b.registry[1:]),
     {"registry_withheld"}),
    ("message in the middle dropped", lambda b, a, s: dataclasses.replace(b, messages=tuple(
        e for e in b.messages if gw_seq(e.data) != (a, 15))), {"messages_withheld"}),
])
def test_withheld_evidence_is_found_by_the_seal(
        farm: Farm, name: str, edit: Callable[[Bundle, str, None], Bundle],
        codes: set[str]) -> None:
    """Each cut, judged by the seal alone (the claim is taken out of the picture by checking
    the seal directly), then by the whole verifier."""
    b = bundle(farm)
    a = farm.gateways[0].gateway
    cut = edit(b, a, None)
    r = verify(farm, encode_bundle(cut))
    # without its enrollment a gateway's messages have no key, so they prove no sample time
    # either (the run's ends are then unproven too): those findings may come along
    assert codes <= r.codes("error") <= codes | {"registry_withheld", "unknown_key",
                                                 "period_cut"}, (
        name, [f.message for f in r.findings])
    assert r.seal is not None and r.seal["status"] == "withheld"
    check = check_seal(cut, _roots(farm, cut), _carried(cut), lambda e: True,
                       claim_checked=False)
    assert {f.code for f in check.findings} == codes, name


def _roots(farm: Farm, b: Bundle) -> dict[int, bytes]:
    return {c.checkpoint.size: c.checkpoint.root_hash for c in farm.evidence.checkpoints()}


def _carried(b: Bundle) -> dict[str, list[Carried]]:
    out: dict[str, list[Carried]] = {}
    for e in b.messages:
        p = payload_from_cbor(parse_sign1(e.data).payload)
        times = [x.time for x in p.readings]
        out.setdefault(p.gateway, []).append(Carried(p.seq, e.index, min(times), max(times),
                                                     True))
    return out


def test_a_broken_seal_is_invalid(farm: Farm) -> None:
    b = bundle(farm)
    assert b.seal is not None
    (rec,) = b.seal.farms
    forged_record = decode_deterministic(rec.record, "record")
    forged_record["gateways"] = forged_record["gateways"][:1]  # hide a gateway in the record
    cases = {
        "record changed": dataclasses.replace(b, seal=dataclasses.replace(
            b.seal, farms=(SealFarm(rec.position, encode_deterministic(forged_record),
                                    rec.proof),))),
        "record dropped": dataclasses.replace(b, seal=dataclasses.replace(b.seal, farms=())),
        "seal entry changed": dataclasses.replace(b, seal=dataclasses.replace(
            b.seal, entry=farm.evidence.log.entry(73))),  # the older checkpoint's seal
        # (72, 76) is on the seal's path (index 76, size 77) and no other entry's
        "proof hash missing": dataclasses.replace(b, hashes={
            k: v for k, v in b.hashes.items() if k != (72, 76)}),
    }
    for name, bad in cases.items():
        r = verify(farm, encode_bundle(bad))
        assert "seal_invalid" in r.codes("error"), (name, [f.message for f in r.findings])
        assert r.seal is not None and r.seal["status"] == "invalid", name


def test_a_farm_without_a_record_is_proven_absent(farm: Farm, tmp_path: Path) -> None:
    """A farm whose gateways were all enrolled after the newest seal: the bundle carries the
    two records around where it would sort, which prove it has none; nothing else."""
    f = Farm(tmp_path)
    for name in ("farm-a", "farm-m", "farm-z"):
        g = f.enroll(name, "x")
        f.run(g, T0, 3)
    f.checkpoint()
    f.enroll("farm-q", "x")  # after the checkpoint
    b = bundle(f, "farm-q")
    assert b.seal is not None
    assert [decode_farm_record(x.record).farm for x in b.seal.farms] == ["farm-m", "farm-z"]
    r = verify(f, encode_bundle(b))
    assert r.seal is not None and r.seal["status"] == "sealed", [x.message for x in r.findings]
    # one neighbour alone does not show the farm has no record
    lone = dataclasses.replace(b, seal=dataclasses.replace(b.seal, farms=b.seal.farms[:1]))
    assert "seal_invalid" in verify(f, encode_bundle(lone)).codes("error")
    f.close()


def test_a_false_seal_is_contradicted_by_the_log(tmp_path: Path) -> None:
    """A collector dishonest at write time, simulated by editing the seal writer's state so
    the next seal leaves out a gateway the log enrolled: the bundle proves the enrollment, so
    the seal is contradicted (and the honest claim disagrees with it)."""
    f = Farm(tmp_path)
    a, idle = f.enroll("farm-a", "x"), f.enroll("farm-a", "x")
    f.run(a, T0, 30)
    f.checkpoint()
    (state,) = f.db.execute("SELECT state FROM seal_state").fetchone()
    obj = decode_deterministic(bytes(state), "state")
    del obj["gateways"][idle.gateway]
    with f.db:
        f.db.execute("UPDATE seal_state SET state = ?", (encode_deterministic(obj),))
        f.db.execute("DELETE FROM seal_records")
    f.run(a, T0 + 1800, 1)
    f.checkpoint()
    r = verify(f, export_bundle(f.config, farm="farm-a", field=None, gateway=None,
                                start=START, end=END))
    assert {"seal_contradicted", "seal_claim_mismatch"} <= r.codes("error")
    f.close()


def test_no_seal_warns_and_require_complete_fails(farm: Farm) -> None:
    b = bundle(farm)
    unsealed = encode_bundle(dataclasses.replace(b, seal=None))
    r = verify(farm, unsealed)
    assert r.verdict == "warn" and "completeness_not_provable" in r.codes("warning")
    (f,) = [x for x in r.findings if x.code == "completeness_not_provable"]
    assert f.message.startswith(NO_SEAL)
    assert "(NO SEAL)" in r.summary_line()
    strict = verify(farm, unsealed, require=True)
    assert strict.verdict == "fail" and "completeness_not_provable" in strict.codes("error")
    # a seal of another checkpoint than the claim's is refused when the bundle is read
    assert b.seal is not None
    other = dataclasses.replace(b.seal, size=74)
    assert decode_bundle(encode_bundle(b)).seal == b.seal
    r = verify(farm, encode_bundle(dataclasses.replace(b, seal=other)))
    assert r.codes("error") == {"malformed_bundle"}
