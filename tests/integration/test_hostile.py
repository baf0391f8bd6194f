"""Hostile input against the collector's message path: ``Ingestor.check`` / ``Ingestor.process``
with a real SQLite store + evidence log and a real InfluxDB 1.x (started here on loopback).

Fuzzed with hypothesis: random bytes, random CBOR structures (tagged, untagged, COSE-shaped),
mutations of valid messages, and payloads that are *correctly signed* by a registered gateway
(a compromised or buggy device) so the fuzzer reaches the SenML checks, the InfluxDB line
protocol and the store. Plus hand-made cases (deep nesting, huge maps, bignums, every CBOR
semantic tag, forged keys, revoked and unknown gateways), a replay flood, and memory bounds
(tracemalloc). The invariants everywhere:

* ``check``/``process`` never raise for a bad message; every message of a batch is either
  accepted or quarantined with a known reason, and the counters say so exactly;
* a good message in the same batch is still made durable (good traffic keeps flowing);
* InfluxDB only ever receives points in a reading measurement, tagged with the registered
  gateway that signed them;
* memory stays bounded: no message can make the collector allocate much more than its size.
"""

from __future__ import annotations

import logging
import struct
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from collector.ingest import (
    Incoming,
    Rejected,
)
from fieldproof import wire
from fieldproof.config import MAX_LOGGABLE_MESSAGE_BYTES
from fieldproof.services import InfluxDB
from tests.support.hostile import PREFIX, Rig

pytestmark = pytest.mark.integration

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,  # nothing written into the work tree; a fixed @seed per test instead
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.fixture
def rig(tmp_path: Path, influx: InfluxDB) -> Iterator[Rig]:
    r = Rig(tmp_path, influx)
    try:
        yield r
    finally:
        r.close()


# ------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------

cbor_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.integers(min_value=-(2**200), max_value=2**200),  # bignums (tags 2/3)
    st.floats(),
    st.text(max_size=24),
    st.binary(max_size=48),
)
cbor_values = st.recursive(
    cbor_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.dictionaries(st.one_of(st.integers(-30, 30), st.text(max_size=6)), children, max_size=6),
        st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 4, 18, 30, 32, 37, 55799]), children),
    ),
    max_leaves=40,
)


@st.composite
def cose_shaped(draw: st.DrawFn) -> bytes:
    """Four-element COSE_Sign1 look-alikes with random parts (sometimes a real kid)."""
    protected = draw(
        st.one_of(
            st.binary(max_size=40),
            st.builds(lambda v: cbor2.dumps(v), cbor_values),
            st.builds(
                lambda alg, kid: cbor2.dumps({1: alg, 4: kid}),
                st.one_of(st.just(-8), cbor_scalars),
                st.one_of(st.just(b"gw-0011223344556677"), cbor_scalars),
            ),
        )
    )
    parts = [
        protected,
        draw(st.one_of(st.just({}), st.dictionaries(st.integers(-5, 5), cbor_values, max_size=3))),
        draw(st.one_of(st.binary(max_size=200), cbor_values)),
        draw(st.one_of(st.binary(min_size=64, max_size=64), cbor_values)),
    ]
    obj: Any = parts
    if draw(st.booleans()):
        obj = cbor2.CBORTag(draw(st.sampled_from([18, 18, 18, 98, 17])), parts)
    return bytes(cbor2.dumps(obj))


# ------------------------------------------------------------------------------------------
# fuzzing
# ------------------------------------------------------------------------------------------


def test_fuzz_unsigned_garbage(rig: Rig) -> None:
    """Random bytes, random CBOR and COSE look-alikes on a registered gateway's topic."""

    @seed(20261125)
    @settings(FUZZ, max_examples=400)
    @given(
        st.one_of(
            st.binary(max_size=600),
            st.binary(max_size=300).map(lambda b: b"\xd2\x84" + b),
            cbor_values.map(lambda v: bytes(cbor2.dumps(v))),
            cose_shaped(),
        ),
        st.sampled_from(["victim", "good-topic-other-kind", "unregistered"]),
    )
    def run(data: bytes, where: str) -> None:
        topic = {
            "victim": rig.topic(rig.victim),
            "good-topic-other-kind": rig.topic(rig.victim, "status"),
            "unregistered": rig.topic("gw-0011223344556677"),
        }[where]
        rig.hostile_then_good(Incoming(topic, data))

    run()
    rig.check_counters_and_log()
    rig.check_influx_clean()


def test_fuzz_mutated_valid_messages(rig: Rig) -> None:
    """Bit flips, truncations, insertions and splices of real signed messages."""
    base = [rig.message(rig.victim, 10**6 + i, n) for i, n in enumerate((1, 3, 10))]

    @seed(20261125)
    @settings(FUZZ, max_examples=300)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        msg = bytearray(data.draw(st.sampled_from(base)))
        for _ in range(data.draw(st.integers(1, 4))):
            op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "splice"]))
            pos = data.draw(st.integers(0, max(0, len(msg) - 1)))
            if op == "flip" and msg:
                msg[pos] ^= 1 << data.draw(st.integers(0, 7))
            elif op in ("truncate", "flip"):
                del msg[pos:]
            elif op == "insert":
                msg[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
            elif op == "delete":
                del msg[pos : pos + data.draw(st.integers(1, 8))]
            else:
                other = data.draw(st.sampled_from(base))
                msg[pos:] = other[pos:]
        result = rig.hostile_then_good(Incoming(rig.topic(rig.victim), bytes(msg)))
        # a changed message can never be accepted under the victim's key
        if bytes(msg) not in base:
            assert result.accepted == 1

    run()
    rig.check_counters_and_log()
    rig.check_influx_clean()


numbers = st.one_of(
    st.sampled_from([1e300, -1e300, 1.7976931348623157e308, 9.3e9, -9.3e9, 2.0**63, 0.0, -0.0]),
    st.floats(),
    st.integers(-(2**70), 2**70),
)
# text with the characters line protocol and CSV-ish parsers care about, often
risky_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from("\n\r\t ,=\\\"'#")),
    max_size=16,
)


@st.composite
def signed_hostile_payload(draw: st.DrawFn) -> tuple[Any, bool]:
    """A valid payload with one to three fields replaced by anything (wrong types, huge or
    non-finite numbers, control characters, extra labels...). Returns the object and whether
    to encode it deterministically (else cbor2's own encoding)."""
    n = draw(st.integers(1, 4))
    pack: list[dict[Any, Any]] = []
    for i in range(n):
        rec: dict[Any, Any] = {
            wire.SENML_N: f"s{i}/soil_moisture",
            wire.SENML_U: "/",
            wire.SENML_V: 0.25,
        }
        if i == 0:
            rec[wire.SENML_BN] = "urn:dev:fp:GW:"
            rec[wire.SENML_BT] = 1.7e9
        pack.append(rec)
    obj: dict[Any, Any] = {
        "v": 1,
        "gw": "GW",
        "seq": draw(st.integers(1, 10**9)),
        "boot": 1,
        "e": pack,
    }
    for _ in range(draw(st.integers(1, 3))):
        rec = pack[draw(st.integers(0, n - 1))]
        # hypothesis favours the first choices: the ones that reach the deepest code first
        target = draw(
            st.sampled_from(["unit", "time", "value", "offset", "vs", "name", "label", "top"])
        )
        if target == "name":
            rec[wire.SENML_N] = draw(
                st.one_of(
                    st.text(max_size=40),
                    cbor_scalars,
                    st.from_regex(r"[a-z0-9]{1,5}/[a-z_]{1,10}", fullmatch=True),
                )
            )
        elif target == "unit":
            rec[wire.SENML_U] = draw(st.one_of(risky_text, st.text(max_size=17), cbor_scalars))
        elif target == "value":
            rec[wire.SENML_V] = draw(st.one_of(numbers, cbor_scalars))
        elif target == "time":
            pack[0][wire.SENML_BT] = draw(st.one_of(numbers, cbor_scalars))
        elif target == "offset":
            rec[wire.SENML_T] = draw(st.one_of(numbers, cbor_scalars))
        elif target == "vs":
            if draw(st.booleans()):
                rec.pop(wire.SENML_V, None)
            rec[wire.SENML_VS] = draw(
                st.one_of(st.text(max_size=40).map(lambda t: "missing:" + t), cbor_scalars)
            )
        elif target == "label":
            rec[draw(st.one_of(st.integers(-30, 30), st.text(max_size=4)))] = draw(cbor_values)
        else:
            obj[draw(st.sampled_from(["v", "gw", "seq", "boot", "e", "x"]))] = draw(cbor_values)
    return obj, draw(st.integers(0, 3)) > 0


def _fill_gateway(obj: Any, gw: str) -> Any:
    if isinstance(obj, dict):
        return {k: _fill_gateway(v, gw) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fill_gateway(v, gw) for v in obj]
    if obj == "GW":
        return gw
    if obj == "urn:dev:fp:GW:":
        return wire.base_name(gw)
    return obj


def test_fuzz_correctly_signed_hostile_payloads(rig: Rig) -> None:
    """What a compromised (or badly broken) gateway can send: anything, under a valid
    signature. The collector must still never raise, and nothing it writes to InfluxDB may
    escape the signer's own tagged series."""

    @seed(20261125)
    @settings(FUZZ, max_examples=400)
    @given(signed_hostile_payload())
    def run(drawn: tuple[Any, bool]) -> None:
        obj, deterministic = drawn
        obj = _fill_gateway(obj, rig.victim)
        if type(obj.get("seq")) is int:  # a fresh seq each time: shrinking cannot make replays
            rig.next_seq["fuzz"] += 1
            obj["seq"] = 10**12 + rig.next_seq["fuzz"]
        try:
            payload = wire.encode_deterministic(obj) if deterministic else cbor2.dumps(obj)
        except (wire.WireError, ValueError, TypeError, cbor2.CBOREncodeError):
            payload = bytes(cbor2.dumps(obj))
        rig.hostile_then_good(Incoming(rig.topic(rig.victim), rig.signed(rig.victim, payload)))

    run()
    rig.check_counters_and_log()
    rig.check_influx_clean()


# ------------------------------------------------------------------------------------------
# hand-made cases
# ------------------------------------------------------------------------------------------


def _nested(depth: int, leaf: bytes = b"\x00") -> bytes:
    return b"\x81" * depth + leaf


def _cose(protected: bytes, unprotected: bytes, payload: bytes, sig: bytes) -> bytes:
    """A tagged COSE_Sign1 from already-encoded parts."""
    return b"\xd2\x84" + protected + unprotected + payload + sig


def _bstr(b: bytes) -> bytes:
    return bytes(cbor2.dumps(b))


def hand_made_cases(rig: Rig) -> dict[str, tuple[str, bytes, str]]:
    """name -> (topic, message, expected quarantine reason)."""
    v, g = rig.victim, rig.good
    t = rig.topic
    prot = wire.encode_deterministic({wire.HEADER_ALG: wire.ALG_EDDSA, wire.HEADER_KID: v.encode()})
    ok_payload = wire.Payload(v, 5, 1, (wire.Reading("s", "soil_moisture", "/", 0.2, 1.7e9),))
    attacker = Ed25519PrivateKey.generate()
    unknown_key = Ed25519PrivateKey.generate()
    unknown = wire.gateway_id_for(wire.public_key_bytes(unknown_key))
    sig = b"\x58\x40" + b"\x00" * 64
    cases: dict[str, tuple[str, bytes, str]] = {
        "empty": (t(v), b"", "malformed"),
        "one byte": (t(v), b"\xd2", "malformed"),
        "garbage": (t(v), b"\xd2\x84garbage", "malformed"),
        "oversized": (t(v), b"\x00" * (64 * 1024 + 1), "oversized"),
        "one past the limit": (t(v), b"\xd2" + b"\x00" * MAX_LOGGABLE_MESSAGE_BYTES, "oversized"),
        "exactly the limit": (
            t(v),
            b"\xd2" + b"\x00" * (MAX_LOGGABLE_MESSAGE_BYTES - 1),
            "malformed",
        ),
        "wrong tag": (t(v), b"\xd1" + rig.message(v)[1:], "malformed"),
        "untagged": (t(v), rig.message(v)[1:], "malformed"),
        "nested 401 in protected": (
            t(v),
            _cose(_bstr(_nested(401)), b"\xa0", b"\x40", sig),
            "malformed",
        ),
        "nested 50000 as message": (t(v), _nested(50_000), "malformed"),
        "nested in unprotected": (
            t(v),
            _cose(_bstr(prot), b"\xa1\x01" + _nested(399), b"\x40", sig),
            "malformed",
        ),
        "huge map in unprotected": (
            t(v),
            _cose(
                _bstr(prot),
                b"\xb9\x13\x88" + b"".join(cbor2.dumps(i) + b"\x00" for i in range(5000)),
                b"\x40",
                sig,
            ),
            "malformed",
        ),
        "60 KB bignum in unprotected": (
            t(v),
            _cose(_bstr(prot), b"\xa1\x20\xc2\x59\xea\x60" + b"\xff" * 60_000, b"\x40", sig),
            "malformed",
        ),
        "indefinite lengths": (
            t(v),
            b"\xd2\x9f" + _bstr(prot) + b"\xa0\x40" + sig + b"\xff",
            "malformed",
        ),
        "invalid utf-8 in kid text": (
            t(v),
            _cose(_bstr(b"\xa2\x01\x27\x04\x62\xff\xfe"), b"\xa0", b"\x40", sig),
            "malformed",
        ),
        "kid not ascii": (
            t(v),
            wire.sign1(ok_payload.to_cbor(), rig.keys[v], "gw-é".encode()),
            "malformed",
        ),
        "alg ES256": (
            t(v),
            _cose(
                _bstr(wire.encode_deterministic({1: -7, 4: v.encode()})),
                b"\xa0",
                _bstr(ok_payload.to_cbor()),
                sig,
            ),
            "malformed",
        ),
        "no alg": (
            t(v),
            _cose(
                _bstr(wire.encode_deterministic({4: v.encode()})),
                b"\xa0",
                _bstr(ok_payload.to_cbor()),
                sig,
            ),
            "malformed",
        ),
        "short signature": (
            t(v),
            _cose(_bstr(prot), b"\xa0", _bstr(ok_payload.to_cbor()), b"\x41\x00"),
            "bad_signature",
        ),
        "forged: victim's kid, attacker's key": (
            t(v),
            wire.encode_message(ok_payload, attacker),
            "bad_signature",
        ),
        "unknown gateway": (
            t(unknown),
            wire.encode_message(wire.Payload(unknown, 1, 1, ok_payload.readings), unknown_key),
            "unknown_gateway",
        ),
        "revoked gateway": (t(rig.revoked), rig.message(rig.revoked), "revoked"),
        "victim's message on the good gateway's topic": (t(g), rig.message(v), "topic_mismatch"),
        "status topic": (t(v, "status"), rig.message(v), "topic_mismatch"),
        "wildcard topic": (f"{PREFIX}/+/readings", rig.message(v), "topic_mismatch"),
        "no prefix": (f"other/{v}/readings", rig.message(v), "topic_mismatch"),
        "kid and payload gateway differ": (
            t(v),
            rig.signed(v, wire.Payload(g, 7, 1, ok_payload.readings).to_cbor()),
            "malformed",
        ),
        "non-deterministic payload (long int head)": (
            t(v),
            rig.signed(v, ok_payload.to_cbor().replace(b"\x63seq\x05", b"\x63seq\x18\x05")),
            "malformed",
        ),
        "reserved quantity": (t(v), rig.message_with(v, quantity="anchor_state"), "malformed"),
        "upper-case quantity": (t(v), rig.message_with(v, quantity="Soil"), "malformed"),
        "1001 readings": (t(v), rig.message_with(v, n=1001), "malformed"),
        "seq 2^63": (
            t(v),
            rig.signed(
                v,
                ok_payload.to_cbor().replace(
                    b"\x63seq\x05", b"\x63seq\x1b" + struct.pack(">Q", 2**63)
                ),
            ),
            "malformed",
        ),
    }
    for tag in (
        0,
        1,
        2,
        3,
        4,
        5,
        21,
        22,
        23,
        24,
        25,
        28,
        29,
        30,
        32,
        33,
        34,
        35,
        36,
        37,
        256,
        258,
        260,
        261,
        262,
        263,
        55799,
    ):
        body = cbor2.dumps(cbor2.CBORTag(tag, "x"))
        cases[f"tag {tag} in unprotected"] = (
            t(v),
            _cose(_bstr(prot), b"\xa1\x21" + body, _bstr(ok_payload.to_cbor()), sig),
            "malformed",
        )
    return cases


def test_hand_made_hostile_messages(rig: Rig) -> None:
    cases = hand_made_cases(rig)
    expected: Counter[str] = Counter()
    for name, (topic, data, reason) in cases.items():
        outcome = rig.ingestor.check(Incoming(topic, data))
        assert isinstance(outcome, Rejected), f"{name}: accepted"
        assert outcome.reason == reason, f"{name}: {outcome.reason} ({outcome.detail})"
        expected[reason] += 1
    # all of them in one batch, with good traffic around them
    batch = [rig.good_message()]
    batch += [Incoming(topic, data) for topic, data, _ in cases.values()]
    batch.append(rig.good_message())
    result = rig.process(batch)
    assert result.accepted == 2
    assert result.quarantined == expected
    assert rig.store.quarantine_by_reason() == dict(expected)
    rows = rig.store.quarantine_rows(len(cases) + 5)
    assert len(rows) == len(cases) and all(r[4] for r in rows)  # each says why
    rig.check_counters_and_log()
    rig.check_influx_clean()


def test_largest_valid_message_is_accepted(rig: Rig) -> None:
    """The limits are not off by one: 1000 readings (the most a message may carry) pass."""
    msg = rig.message_with(rig.victim, n=1000)
    assert len(msg) <= wire.MAX_MESSAGE_BYTES
    result = rig.process([Incoming(rig.topic(rig.victim), msg)])
    assert result.accepted == 1 and result.readings == 1000


def quiet_collector_log(caplog: pytest.LogCaptureFixture) -> None:
    """One warning per quarantined message would pile up in pytest's log capture and be
    counted as the collector's memory by tracemalloc."""
    caplog.set_level(logging.ERROR, logger="fieldproof.collector")


def test_replay_flood_from_one_gateway(
    tmp_path: Path, influx: InfluxDB, caplog: pytest.LogCaptureFixture
) -> None:
    """A captured message replayed 2,988 times (and its sequence number reused with other
    content 12 times) beside a good gateway: every one is quarantined and counted, the quarantine
    table stays capped, memory stays flat, the good gateway's messages all get through."""
    rig = Rig(tmp_path, influx, quarantine_max_rows=500)
    quiet_collector_log(caplog)
    try:
        captured = Incoming(rig.topic(rig.victim), rig.message(rig.victim, seq=1))
        assert rig.process([captured]).accepted == 1
        reused = Incoming(rig.topic(rig.victim), rig.message(rig.victim, seq=1, unit="Cel"))
        tracemalloc.start()
        try:
            baseline = 0
            for i in range(12):
                batch = [captured] * 249 + [reused] + [rig.good_message()]
                result = rig.process(batch)
                assert result.accepted == 1
                assert result.quarantined == Counter(replay=249, seq_conflict=1)
                assert result.confirmed[rig.victim] == [1] * 250  # re-confirmed: gateway frees it
                if i == 2:
                    baseline = tracemalloc.get_traced_memory()[0]
            grown = tracemalloc.get_traced_memory()[0] - baseline
        finally:
            tracemalloc.stop()
        assert grown < 2 * 2**20, f"memory grew by {grown / 2**20:.1f} MiB over 2,250 replays"
        assert rig.store.quarantine_by_reason() == {"replay": 2988, "seq_conflict": 12}
        assert rig.db.execute("SELECT count(*) FROM quarantine").fetchone()[0] == 500
        details = {r[4] for r in rig.store.quarantine_rows(500)}
        assert any("DIFFERENT content" in d for d in details)  # a reused seq is called out
        rig.check_counters_and_log()
        rig.check_influx_clean()
    finally:
        rig.close()


def test_memory_stays_bounded_under_mixed_hostile_batches(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Batches of 200 hostile messages (every hand-made case, repeated): no growth between
    batches, and no batch allocates more than a few times its own size."""
    quiet_collector_log(caplog)
    cases = [Incoming(t, d) for t, d, _ in hand_made_cases(rig).values()]
    batch = (cases * (200 // len(cases) + 1))[:200]
    batch_bytes = sum(len(m.payload) for m in batch)
    tracemalloc.start()
    try:
        peaks = []
        current = []
        for _ in range(8):
            tracemalloc.reset_peak()
            rig.process([*batch, rig.good_message()])
            cur, peak = tracemalloc.get_traced_memory()
            peaks.append(peak)
            current.append(cur)
    finally:
        tracemalloc.stop()
    assert current[-1] - current[2] < 2 * 2**20, f"grew {current[-1] - current[2]} bytes"
    assert max(peaks) < batch_bytes * 8 + 16 * 2**20, f"peak {max(peaks) / 2**20:.0f} MiB"
    rig.check_counters_and_log()


# ------------------------------------------------------------------------------------------
# bugs found by the fuzzer, one test each (see the report for the proposed fixes)
# ------------------------------------------------------------------------------------------


def test_unit_cannot_inject_line_protocol(rig: Rig) -> None:
    """A SenML unit is any text of up to 16 characters and reaches InfluxDB as a tag value;
    a newline in it must not start a second line-protocol point. Here a signed unit
    "\\nanchor_state" would write an untagged point into the integrity dashboard's
    measurement."""
    msg = wire.encode_message(
        wire.Payload(
            rig.victim, 77, 1, (wire.Reading("s", "soil_moisture", "\nanchor_state", 1.0, 1.7e9),)
        ),
        rig.keys[rig.victim],
    )
    rig.hostile_then_good(Incoming(rig.topic(rig.victim), msg))
    measurements = {row[0] for s in rig.query("SHOW MEASUREMENTS") for row in s["values"]}
    assert "anchor_state" not in measurements
    rig.check_influx_clean()


def test_sample_time_beyond_float_range_does_not_stop_the_batch(rig: Rig) -> None:
    """bt = 1e300 is a finite float, so the wire format accepts it; the collector turns it
    into nanoseconds (inf) and must quarantine the message, not raise out of the batch."""
    payload = wire.Payload(
        rig.victim, 88, 1, (wire.Reading("s", "soil_moisture", "/", 0.3, 1e300),)
    )
    msg = Incoming(rig.topic(rig.victim), wire.encode_message(payload, rig.keys[rig.victim]))
    rig.hostile_then_good(msg)
    rig.check_influx_clean()


def test_undecodable_semantic_tag_in_signed_payload_is_malformed(rig: Rig) -> None:
    """cbor2 decodes tag 36 (MIME) into an email.message.Message it cannot encode again;
    the strict re-encoding check must report that as malformed, not raise CBOREncodeError."""
    obj = wire.Payload(
        rig.victim, 99, 1, (wire.Reading("s", "soil_moisture", "/", 0.3, 1.7e9),)
    ).to_obj()
    obj["boot"] = cbor2.CBORTag(36, "Content-Type: text/plain\n\nx")
    msg = rig.signed(rig.victim, bytes(cbor2.dumps(obj)))
    outcome = rig.ingestor.check(Incoming(rig.topic(rig.victim), msg))
    assert isinstance(outcome, Rejected) and outcome.reason == "malformed"


def _shared_reference_bomb(depth: int) -> bytes:
    """CBOR value sharing (tags 28/29): level i is [level i+1, reference to level i+1].
    ~8 bytes per level; expanding it makes 2**depth lists."""
    s = b"\xd8\x1c\x81\x00"
    for d in range(depth - 1, -1, -1):
        s = b"\xd8\x1c\x82" + s + b"\xd8\x1d" + bytes(cbor2.dumps(d + 1))
    return s


def _stringref_bomb(refs: int, size: int) -> bytes:
    """CBOR stringref (tags 256/25): one long string, then ``refs`` 3-byte references."""
    return (
        b"\xd9\x01\x00\x9a"
        + struct.pack(">I", refs)
        + bytes(cbor2.dumps("A" * size))
        + b"\xd8\x19\x00" * (refs - 1)
    )


@pytest.mark.parametrize(
    ("name", "bomb"),
    [
        ("shared references, depth 18", _shared_reference_bomb(18)),
        ("stringrefs, 1,500 x 20 KB", _stringref_bomb(1500, 20_000)),
    ],
)
def test_signed_payload_bombs_are_refused_without_expanding(
    rig: Rig, name: str, bomb: bytes
) -> None:
    """A payload a few hundred bytes (or 25 KB) long must not make the collector build
    hundreds of megabytes (or 2**depth objects) before deciding it is malformed. Today the
    strict re-encoding in wire.decode_deterministic expands it: depth 18 takes ~1 s and each
    further level doubles it (depth 40 would never finish: a poison message)."""
    payload = (
        b"\xa5"
        + wire.encode_deterministic({"v": 1, "gw": rig.victim, "seq": 5, "boot": 1})[1:]
        + bytes(cbor2.dumps("e"))
        + bomb
    )
    msg = Incoming(rig.topic(rig.victim), rig.signed(rig.victim, payload))
    tracemalloc.start()
    try:
        outcome = rig.ingestor.check(msg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(outcome, Rejected) and outcome.reason == "malformed"
    assert peak < 50 * len(msg.payload) + 2**20, (
        f"{name}: a {len(msg.payload):,}-byte message allocated {peak / 2**20:.0f} MiB"
    )
