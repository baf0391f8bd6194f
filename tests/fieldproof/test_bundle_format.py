"""The bundle format (fieldproof/formats/bundle.py): what export writes reads back, and hostile
bytes of every kind are refused with a BundleError that says why — and the verifier turns that
into a failing finding, never a crash and never a pass."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.export import ExportError, build_bundle, export_bundle
from fieldproof.formats.bundle import (
    BUNDLE_FORMAT,
    BundleError,
    Limits,
    decode_bundle,
    encode_bundle,
)
from fieldproof.wire import parse_sign1, payload_from_cbor
from inspector.verify import verify_bundle
from tests.support.bundles import Farm, rewrite

T0 = 1_750_000_000.0


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    f = Farm(tmp_path_factory.mktemp("farm"))
    a = f.enroll("farm-a", "north")
    b = f.enroll("farm-a", "south")
    other = f.enroll("farm-b", "east")
    f.run(a, T0, 12)
    f.run(b, T0, 12)
    f.run(other, T0, 5)
    f.checkpoint()
    f.run(a, T0 + 720, 4)
    f.checkpoint()
    yield f
    f.close()


@pytest.fixture(scope="module")
def data(farm: Farm) -> bytes:
    return export_bundle(farm.config, farm="farm-a", field=None, gateway=None,
                         start=T0, end=T0 + 3600)


def test_export_reads_back_exactly(farm: Farm, data: bytes) -> None:
    b = decode_bundle(data)
    assert encode_bundle(b) == data  # one encoding per bundle
    assert b.origin == farm.config.log_origin
    assert b.vkey == farm.vkey
    assert b.scope.farm == "farm-a" and b.scope.field is None
    assert len(b.messages) == 28  # 12 + 12 + 4 of farm-a; farm-b's messages stay out
    # the registry events of the scope's gateways only (farm-b's stay out), counted by the
    # claim; the claim speaks of the newest checkpoint
    assert len(b.registry) == 2
    assert [e.index for e in b.messages] == sorted(e.index for e in b.messages)
    assert len(b.checkpoints) == 2 and len(b.consistency) == 1
    c = b.completeness
    assert b.version == 3 and c is not None
    assert b.seal is not None and b.seal.size == c.size  # the seal ends the claim's checkpoint
    assert c.size == farm.evidence.latest().checkpoint.size  # type: ignore[union-attr]
    assert c.registry == 2 and c.scope == b.scope
    a, south = farm.gateways[0].gateway, farm.gateways[1].gateway
    assert {g.gateway: (g.first_seq, g.latest_seq, g.from_seq, g.to_seq, g.count)
            for g in c.gateways} == {a: (1, 16, 1, 16, 16), south: (1, 12, 1, 12, 12)}
    stored = {bytes(r[0]) for r in farm.db.execute("SELECT entry FROM fp_log_entries")}
    assert all(e.data in stored for e in b.messages)  # exact bytes, as logged


def test_period_and_field_select_messages(farm: Farm) -> None:
    """The period's messages (seq 3..6, sampled T0+120..T0+300) and the gateway's neighbours
    just outside it (seq 2 and 7), so a cut head or tail shows."""
    b, stats = build_bundle(farm.config, farm="farm-a", field="south", gateway=None,
                            start=T0 + 120, end=T0 + 300)
    assert stats.messages == 6 and len(stats.gateways) == 1
    south = farm.gateways[1]
    assert sorted(payload_from_cbor(parse_sign1(e.data).payload).seq
                  for e in b.messages) == [2, 3, 4, 5, 6, 7]
    assert {e.index for e in b.registry} == {1}  # south's enrollment only
    assert b.completeness is not None
    (claim,) = b.completeness.gateways
    assert (claim.gateway, claim.first_seq, claim.latest_seq, claim.from_seq, claim.to_seq,
            claim.count) == (south.gateway, 1, 12, 2, 7, 6)
    with pytest.raises(ExportError, match="no gateway is enrolled"):
        build_bundle(farm.config, farm="nowhere", field=None, gateway=None, start=0, end=1)
    with pytest.raises(ExportError, match="starts after"):
        build_bundle(farm.config, farm=None, field=None, gateway=None, start=2, end=1)


def test_no_checkpoint_covering_new_messages(farm: Farm, tmp_path: Path) -> None:
    """Entries newer than every checkpoint travel without a proof and are flagged."""
    f = Farm(tmp_path)
    g = f.enroll()
    f.run(g, T0, 3)
    f.checkpoint()
    f.run(g, T0 + 180, 2)
    b, stats = build_bundle(f.config, farm=None, field=None, gateway=None, start=T0, end=T0 + 900)
    assert stats.unproven_entries == 2 and len(b.messages) == 5
    r = verify_bundle(encode_bundle(b), nodes=[], chain=None, offline=True, log_key=f.vkey)
    assert r.passed and "outside_anchored_range" in r.codes("warning")
    assert r.gateways[0].outside_anchored == 5  # no anchors at all in this farm
    f.close()


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(obj: dict[str, Any]) -> None:
        target: Any = obj
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value
    return edit


def _tag(tag: int, value: Any) -> Callable[[dict[str, Any]], None]:
    return _set(("created",), cbor2.CBORTag(tag, value))


def _claim(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """Change the completeness claim's CBOR (the signature is not the decoder's business)."""
    def change(o: dict[str, Any]) -> None:
        claim = cbor2.loads(o["completeness"]["claim"])
        edit(claim)
        o["completeness"]["claim"] = cbor2.dumps(claim, canonical=True)
    return change


def _v1_with_claim(o: dict[str, Any]) -> None:
    o["version"] = 1


HOSTILE: dict[str, Callable[[dict[str, Any]], None]] = {
    "future version": _set(("version",), 4),
    "version 2 with a seal": _set(("version",), 2),
    "version 1 with a completeness claim": _v1_with_claim,
    "version 2 without its claim": lambda o: o.pop("completeness"),
    "claim not CBOR": _set(("completeness", "claim"), b"\xff\x00"),
    "claim of another type": _claim(lambda c: c.__setitem__("t", "something/else")),
    "claim with an extra field": _claim(lambda c: c.__setitem__("x", 1)),
    "claim gateway not an id": _claim(lambda c: c["gateways"][0].__setitem__(0, "north")),
    "claim gateways unsorted": _claim(lambda c: c["gateways"].reverse()),
    "claim from after to": _claim(lambda c: c["gateways"][0].__setitem__(3, 99)),
    "claim counts too many": _claim(lambda c: c["gateways"][0].__setitem__(5, 10**6)),
    "claim half empty": _claim(lambda c: c["gateways"][0].__setitem__(1, None)),
    "claim size zero": _claim(lambda c: c.__setitem__("size", 0)),
    "seal of another checkpoint": lambda o: o["seal"].__setitem__("size", 1),
    "seal without a claim": lambda o: o.pop("completeness"),
    "seal entry too short": _set(("seal", "entry"), b"\xa1" * 10),
    "seal with an extra field": _set(("seal", "extra"), 1),
    "seal farm positions repeat": lambda o: o["seal"]["farms"].append(o["seal"]["farms"][0]),
    "seal farm proof hash short": lambda o: o["seal"]["farms"][0][2].append(b"\x00" * 31),
    "seal farm not a triple": lambda o: o["seal"]["farms"][0].pop(),
    "seal farms too many": _set(("seal", "farms"), [[i, b"x", []] for i in range(10_001)]),
    "other format": _set(("format",), "something/else"),
    "unknown field": _set(("extra",), 1),
    "missing scope": lambda o: o.pop("scope"),
    "NaN time": _set(("scope", "from"), math.nan),
    "period backwards": _set(("scope", "from"), T0 + 10**6),
    "index as text": lambda o: o["messages"][0].__setitem__(0, "7"),
    "negative index": lambda o: o["messages"][0].__setitem__(0, -1),
    "entry not bytes": lambda o: o["messages"][0].__setitem__(1, "text"),
    "oversized entry": lambda o: o["messages"][0].__setitem__(1, b"\xd2" * 70_000),
    "duplicate index": lambda o: o["messages"].__setitem__(1, [o["messages"][0][0],
                                                                o["messages"][1][1]]),
    "unsorted": lambda o: o["messages"].reverse(),
    "message is also registry": lambda o: o["messages"].__setitem__(
        0, [o["registry"][0][0], o["messages"][0][1]]),
    "short hash": lambda o: o["hashes"][0].__setitem__(2, b"\x00" * 31),
    "empty range": lambda o: o["hashes"][0].__setitem__(1, o["hashes"][0][0]),
    "same subtree twice": lambda o: o["hashes"].append(list(o["hashes"][0])),
    "proof count": lambda o: o["consistency"].append([]),
    "anchor chain": _set(("checkpoints", 0, "anchors"), [{"chain": "btc"}]),
    "datetime tag": _tag(1, 1_700_000_000),
    "bignum tag": _tag(2, b"\x01" * 40),
    "shared reference tags": _tag(28, [cbor2.CBORTag(29, 0)]),
    "regex tag": _tag(35, "(a+)+$"),
    "set tag": _tag(258, [1, 2]),
    "unknown tag": _tag(9999, 0),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_structure_is_refused(data: bytes, case: str) -> None:
    bad = rewrite(data, HOSTILE[case])
    with pytest.raises(BundleError) as exc:
        decode_bundle(bad)
    assert str(exc.value)
    r = verify_bundle(bad, nodes=[], chain=None, offline=True, log_key=None)
    assert not r.passed
    assert r.codes() == {"malformed_bundle"}


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not cbor at all",
        b"\x9b" + (2**60).to_bytes(8, "big"),  # an array claiming 2^60 items
        b"\x5b" + (2**40).to_bytes(8, "big") + b"ab",  # a byte string claiming 1 TiB
        b"\x81" * 10_000,  # nesting
        b"\xa2\x61a\x01\x61a\x02",  # duplicate key
        b"\xbf\x61a\x01\xff",  # indefinite-length map
        cbor2.dumps([BUNDLE_FORMAT]),
        cbor2.dumps({"format": BUNDLE_FORMAT, "version": 1}),
    ],
)
def test_hostile_bytes_are_refused(raw: bytes) -> None:
    with pytest.raises(BundleError):
        decode_bundle(raw)
    r = verify_bundle(raw, nodes=[], chain=None, offline=True, log_key=None)
    assert r.verdict == "fail" and r.codes() == {"malformed_bundle"}


def test_limits_bound_every_list(data: bytes) -> None:
    with pytest.raises(BundleError, match="over the limit"):
        decode_bundle(data, Limits(max_bytes=len(data) - 1))
    with pytest.raises(BundleError, match="messages has 28 items"):
        decode_bundle(data, Limits(max_messages=27))
    with pytest.raises(BundleError, match="hashes has"):
        decode_bundle(data, Limits(max_hashes=3))
    with pytest.raises(BundleError, match="checkpoints has"):
        decode_bundle(data, Limits(max_checkpoints=1))
    assert decode_bundle(data, Limits(max_bytes=len(data))).messages


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(raw: bytes) -> None:
    with contextlib.suppress(BundleError):
        decode_bundle(raw)


@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_bundles_never_crash_or_forge(data: bytes, farm: Farm,
                                                   draw: st.DataObject) -> None:
    """Flip, insert or delete bytes anywhere in a real bundle: decoding raises only
    BundleError, verification always returns a result, and no message that was not in the
    original is ever reported verified."""
    raw = bytearray(data)
    for _ in range(draw.draw(st.integers(1, 4))):
        pos = draw.draw(st.integers(0, len(raw) - 1))
        op = draw.draw(st.sampled_from(["flip", "insert", "delete", "byte"]))
        if op == "flip":
            raw[pos] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "insert":
            raw[pos:pos] = draw.draw(st.binary(min_size=1, max_size=9))
        elif op == "delete":
            del raw[pos:pos + draw.draw(st.integers(1, 9))]
        else:
            raw[pos] = draw.draw(st.integers(0, 255))
    mutated = bytes(raw)
    with contextlib.suppress(BundleError):
        decode_bundle(mutated)
    r = verify_bundle(mutated, nodes=[], chain=None, offline=True, log_key=farm.vkey,
                      now=T0 + 3600)
    assert r.verdict in ("pass", "warn", "fail")
    assert _verified_bytes(mutated, r) <= {e.data for e in decode_bundle(data).messages}


def _verified_bytes(raw: bytes, r: Any) -> set[bytes]:
    try:
        b = decode_bundle(raw)
    except BundleError:
        return set()
    by_index = {e.index: e.data for e in b.messages}
    return {by_index[m.index] for m in r.messages}
