"""The seal's gap-free rule with a seq the log holds twice (docs/bundle.md §4b, checks 2 and 4).

A seal counts entries, so a seq logged twice (a conflict its gateway signed, logged through a
side door: the collector itself refuses it) counts twice and can stand in for a seq the log
lacks. The verifier subtracts the duplicates the bundle proves before it concludes that the log
holds every seq; it must never name a seq the log does not hold as withheld. Collector state is
built with the collector's own classes (tests/support/bundles.Farm); the twin goes into the log
the way the side door of tests/integration/test_verify_findings.py puts it there."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchor.logkey import load_or_create_log_key
from collector.export import build_bundle
from fieldproof.formats import merkle
from fieldproof.formats.bundle import Bundle, Entry, encode_bundle, sign_completeness
from fieldproof.formats.seal import decode_farm_record
from fieldproof.wire import parse_sign1, payload_from_cbor
from inspector.seal_check import Carried, SealCheck, check_seal
from inspector.verify import VerificationResult, verify_bundle
from tests.support.bundles import Farm, Gateway

T0 = 1_750_000_000.0
START, END = T0 + 600, T0 + 1200  # seq 11..21 sampled in the period, run 10..22
LOST = 17  # never reached the log: a gap of the log itself, inside the run
TWIN = 15  # the log holds seq 15 twice (different content)


@dataclasses.dataclass(frozen=True)
class Log:
    farm: Farm
    gateway: Gateway
    twin_index: int


def _log(root: Path, lost: set[int]) -> Log:
    f = Farm(root)
    g = f.enroll("farm-a", "north")
    f.run(g, T0, 30, skip=lost)
    twin, _ = g.message(T0 + (TWIN - 1) * 60 + 7, seq=TWIN)
    with f.db:
        index = f.evidence.append([twin])
    assert index is not None
    f.checkpoint()
    return Log(f, g, index)


@pytest.fixture
def gap_and_twin(tmp_path: Path) -> Iterator[Log]:
    log = _log(tmp_path, {LOST})
    yield log
    log.farm.close()


def _bundle(log: Log) -> Bundle:
    return build_bundle(log.farm.config, farm="farm-a", field=None, gateway=None, start=START,
                        end=END)[0]


def _with_twin(log: Log, b: Bundle, count: int = 0) -> Bundle:
    """The bundle with the twin entry too (what an exporter that finds it carries; ours reads
    the log by (gateway, seq), one entry per seq), the subtree hashes its inclusion proof
    needs, and the claim re-signed with the log key counting ``count`` more seqs in the run."""
    size = log.farm.evidence.log.size()
    i = log.twin_index
    proof = log.farm.evidence.log.inclusion_proof(i, size)
    hashes = dict(b.hashes)
    hashes.update(zip(merkle.inclusion_proof_ranges(i, size), proof, strict=True))
    messages = tuple(sorted((*b.messages, Entry(i, log.farm.evidence.log.entry(i))),
                            key=lambda e: e.index))
    c = b.completeness
    assert c is not None
    (claim,) = c.gateways
    signer = load_or_create_log_key(log.farm.config.log_key_file, log.farm.config.log_origin)
    root = log.farm.evidence.log.root(c.size)
    resigned = sign_completeness(signer, b.origin, root, b.scope, c.size, c.registry,
                                 [dataclasses.replace(claim, count=claim.count + count)])
    return dataclasses.replace(b, messages=messages, hashes=hashes, completeness=resigned)


def _carried(b: Bundle) -> dict[str, list[Carried]]:
    out: dict[str, list[Carried]] = {}
    for e in b.messages:
        p = payload_from_cbor(parse_sign1(e.data).payload)
        times = [x.time for x in p.readings]
        out.setdefault(p.gateway, []).append(
            Carried(p.seq, e.index, min(times), max(times), True))
    return out


def _check(log: Log, b: Bundle, claim_checked: bool = False) -> SealCheck:
    roots = {c.checkpoint.size: c.checkpoint.root_hash
             for c in log.farm.evidence.checkpoints()}
    return check_seal(b, roots, _carried(b), lambda e: True, claim_checked=claim_checked)


def _verify(log: Log, b: Bundle) -> VerificationResult:
    return verify_bundle(encode_bundle(b), nodes=[], chain=None, offline=True,
                         log_key=log.farm.vkey, now=T0 + 3600)


def test_the_seal_counts_the_twin(gap_and_twin: Log) -> None:
    b = _bundle(gap_and_twin)
    assert b.seal is not None
    (g,) = decode_farm_record(b.seal.farms[0].record).gateways
    # 29 seqs (17 lost) and seq 15 twice: as many entries as seqs 1..30
    assert (g.first, g.latest, g.messages) == (1, 30, 30)


def test_a_log_gap_is_not_named_withheld_when_the_twin_is_shown(gap_and_twin: Log) -> None:
    """The bundle proves seq 15 twice (duplicate_seq), so the seal's 30 entries are at most 29
    seqs: the log has a gap, and the bundle's lack of seq 17 is no evidence of withholding."""
    b = _with_twin(gap_and_twin, _bundle(gap_and_twin))
    seqs = sorted(s.seq for s in _carried(b)[gap_and_twin.gateway.gateway])
    assert seqs.count(TWIN) == 2 and LOST not in seqs
    check = _check(gap_and_twin, b)
    assert [f.code for f in check.findings] == [], [f.message for f in check.findings]
    assert check.status == "sealed"
    r = _verify(gap_and_twin, b)
    assert r.codes("error") == {"duplicate_seq"}, [f.message for f in r.findings]
    assert r.seal is not None and r.seal["status"] == "sealed"


def test_a_withheld_message_is_named_with_the_twin_shown(tmp_path: Path) -> None:
    """No gap in the log, seq 15 twice: 31 entries for 30 seqs. With the twin shown the log
    provably holds every seq, so a seq cut from the bundle is named, and only that one."""
    log = _log(tmp_path, set())
    full = _with_twin(log, _bundle(log))
    gw = log.gateway.gateway
    cut = dataclasses.replace(full, messages=tuple(
        e for e in full.messages
        if payload_from_cbor(parse_sign1(e.data).payload).seq != 18))
    check = _check(log, cut)
    (f,) = check.findings
    assert (f.code, f.gateway) == ("messages_withheld", gw)
    assert "(seq 18)" in f.message and "lacks 1 " in f.message
    assert check.gateways[gw] == "messages withheld"
    # the untouched bundle is sealed (the twin is its duplicate_seq error, nothing else)
    assert [x.code for x in _check(log, full).findings] == []
    log.farm.close()


def test_the_claim_counts_seqs_and_the_seal_entries(tmp_path: Path) -> None:
    """A gap-free log holding seq 15 twice: the honest claim counts the run's seqs (the twin
    once), so the bundle carrying the twin neither makes it false nor passes for more; the
    seal's 31 entries less the shown twin are every seq, so a claim counting one seq fewer is
    contradicted by the seal."""
    log = _log(tmp_path, set())
    b = _with_twin(log, _bundle(log))
    r = _verify(log, b)
    assert r.codes("error") == {"duplicate_seq"}, [f.message for f in r.findings]
    assert r.completeness.status == "complete"
    assert r.seal is not None and r.seal["status"] == "sealed"
    assert [f.code for f in _check(log, b, claim_checked=True).findings] == []
    fewer = _with_twin(log, _bundle(log), -1)
    check = _check(log, fewer, claim_checked=True)
    assert [f.code for f in check.findings] == ["seal_claim_mismatch"]
    # with a seq of the run cut from the bundle, the twin cannot stand in for it
    gw = log.gateway.gateway
    cut = dataclasses.replace(b, messages=tuple(
        e for e in b.messages if payload_from_cbor(parse_sign1(e.data).payload).seq != 18))
    r = _verify(log, cut)
    assert r.codes("error") == {"duplicate_seq", "messages_withheld"}
    assert r.completeness.status == "withheld"
    assert {f.gateway for f in r.findings if f.code == "messages_withheld"} == {gw}
    log.farm.close()
