"""Property tests: signed messages round-trip, and no single-byte corruption is ever accepted."""

from __future__ import annotations

import contextlib
import math

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from fieldproof import wire
from fieldproof.formats import cbor as cbor_fmt
from fieldproof.formats import message as message_fmt
from fieldproof.formats import payload as payload_fmt

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = wire.public_key_bytes(KEY)
GW = wire.gateway_id_for(PUB)

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=20)
units = st.sampled_from(["Cel", "%RH", "/", "S/m", "Pa", "lx", "pH", ""])
values = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64))
times = st.floats(min_value=1.5e9, max_value=2.5e9, allow_nan=False)


@st.composite
def readings(draw: st.DrawFn) -> wire.Reading:
    value = draw(values)
    return wire.Reading(
        draw(names),
        draw(names),
        draw(units),
        value,
        draw(times),
        draw(names) if value is None else "",
    )


payloads = st.builds(
    wire.Payload,
    st.just(GW),
    st.integers(0, wire.MAX_SEQ),
    st.integers(0, 2**32),
    st.lists(readings(), min_size=1, max_size=12).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(payloads)
def test_round_trip(payload: wire.Payload) -> None:
    message = wire.encode_message(payload, KEY)
    again = wire.decode_message(message, PUB)
    assert (again.gateway, again.seq, again.boot) == (payload.gateway, payload.seq, payload.boot)
    assert len(again.readings) == len(payload.readings)
    for a, b in zip(again.readings, payload.readings, strict=True):
        assert (a.sensor, a.quantity, a.unit, a.value, a.missing_reason) == (
            b.sensor,
            b.quantity,
            b.unit,
            b.value,
            b.missing_reason,
        )
        # SenML carries time as base time + offset: exact to well below a microsecond
        assert math.isclose(a.time, b.time, abs_tol=1e-6)
    # deterministic: the same payload always encodes to the same signed bytes
    assert wire.encode_message(payload, KEY) == message
    assert wire.verify_sign1(message, PUB) == payload.to_cbor()


def _sample_message() -> bytes:
    return wire.encode_message(
        wire.Payload(
            GW,
            42,
            3,
            (
                wire.Reading("soil1", "soil_moisture", "/", 0.3125, 1_700_000_000.0),
                wire.Reading("soil1", "soil_temperature", "Cel", 17.25, 1_700_000_000.0),
                wire.Reading("dht", "air_humidity", "%RH", None, 1_700_000_002.0, "checksum"),
            ),
        ),
        KEY,
    )


def test_every_single_byte_corruption_rejected() -> None:
    """Exhaustive over positions, three kinds of change each."""
    message = _sample_message()
    wire.decode_message(message, PUB)
    for i in range(len(message)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(message)
            bad[i] ^= flip
            with pytest.raises(wire.WireError):
                wire.decode_message(bytes(bad), PUB)


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_random_single_byte_corruption_rejected(data: st.DataObject) -> None:
    message = _sample_message()
    i = data.draw(st.integers(0, len(message) - 1))
    b = data.draw(st.integers(0, 255).filter(lambda x: x != message[i]))
    bad = message[:i] + bytes([b]) + message[i + 1 :]
    with pytest.raises(wire.WireError):
        wire.decode_message(bad, PUB)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(blob: bytes) -> None:
    """Hostile input gives a WireError, never another exception."""
    with pytest.raises(wire.WireError):
        wire.decode_message(blob, PUB)


def test_truncations_and_extensions_rejected() -> None:
    message = _sample_message()
    for n in range(len(message)):
        with pytest.raises(wire.WireError):
            wire.decode_message(message[:n], PUB)
    with pytest.raises(wire.WireError):
        wire.decode_message(message + b"\x00", PUB)


def test_wrong_key_and_kid_mismatch_rejected() -> None:
    message = _sample_message()
    other = Ed25519PrivateKey.generate()
    with pytest.raises(wire.BadSignature):
        wire.decode_message(message, wire.public_key_bytes(other))
    # a payload naming gateway A signed with kid B (by B's key) is refused
    forged = wire.sign1(
        wire.Payload(GW, 1, 1, (wire.Reading("s", "soil_moisture", "/", 0.2, 1.7e9),)).to_cbor(),
        other,
        wire.gateway_id_for(wire.public_key_bytes(other)).encode(),
    )
    with pytest.raises(wire.MalformedMessage):
        wire.decode_message(forged, wire.public_key_bytes(other))


def test_oversized_rejected() -> None:
    with pytest.raises(wire.MalformedMessage, match="limit"):
        wire.parse_sign1(b"\x00" * (wire.MAX_MESSAGE_BYTES + 1))


def test_validly_signed_but_non_deterministic_payload_rejected() -> None:
    """A gateway (or a forger with its key) cannot get a second encoding of one meaning
    accepted: a non-shortest integer or unsorted map keys are refused even when signed."""
    good = wire.Payload(GW, 300, 1, (wire.Reading("s", "soil_moisture", "/", 0.25, 1.7e9),))
    canonical = good.to_cbor()
    seq_short = bytes.fromhex("63736571" + "19012c")  # "seq": 300 as 0x19 0x012c
    seq_long = bytes.fromhex("63736571" + "1a0000012c")  # the same value in four bytes
    assert seq_short in canonical
    unsorted = cbor2.dumps(dict(reversed(list(good.to_obj().items()))))
    for bad in (canonical.replace(seq_short, seq_long), unsorted):
        assert bad != canonical
        assert cbor2.loads(bad) == cbor2.loads(canonical)  # same meaning
        with pytest.raises(wire.MalformedMessage, match="deterministic"):
            wire.decode_message(wire.sign1(bad, KEY, GW.encode()), PUB)


def _general_parts(message: bytes) -> tuple[bytes, dict[object, object], bytes, bytes] | None:
    """The general path's verdict on a message's outer layer (decode_message given a
    parse_sign1 parse, so the fast path is not taken): its parts, or None if it refuses the
    outer layer. decode_message checks the signature after the outer layer and before the
    payload, so BadSignature means the outer layer passed; every variant here either keeps
    the signed payload (whose checks pass) or breaks the signature."""
    try:
        p = wire.parse_sign1(message, require_tag=True)
        wire.decode_message(message, PUB, p)
    except wire.BadSignature:
        pass
    except wire.WireError:
        return None
    return p.protected_bytes, p.protected, p.payload, p.signature


def _damaged(blob: bytes, data: st.DataObject) -> bytes:
    """``blob`` with one byte flipped, inserted or deleted."""
    bad = bytearray(blob)
    i = data.draw(st.integers(0, len(bad) - 1))
    kind = data.draw(st.sampled_from(["flip", "insert", "delete"]))
    if kind == "flip":
        bad[i] ^= data.draw(st.integers(1, 255))
    elif kind == "insert":
        bad.insert(i, data.draw(st.integers(0, 255)))
    else:
        del bad[i]
    return bytes(bad)


def _exact_parts(message: bytes) -> tuple[bytes, dict[object, object], bytes, bytes] | None:
    p = message_fmt._parse_exact(message)
    return None if p is None else (p.protected_bytes, p.protected, p.payload, p.signature)


@settings(max_examples=400, deadline=None)
@given(payloads, st.data())
def test_exact_fast_path_and_general_path_agree(payload: wire.Payload, data: st.DataObject) -> None:
    """``_parse_exact`` skips the CBOR decoder for messages in a gateway's exact form; on
    every message the general path decides the same (same parts, or refused by both).
    Checked on real messages and on mutations: byte flips, insertions, deletions, and
    re-encodings of the same content that are valid CBOR but not deterministic (long heads,
    extra header entries, indefinite lengths)."""
    message = wire.encode_message(payload, KEY)
    assert _exact_parts(message) == _general_parts(message) is not None
    p = wire.parse_sign1(message)

    def with_payload_head(head: bytes) -> bytes:
        """The same message with ``head`` for the payload's length."""
        start = 2 + len(cbor_fmt._head(2, len(p.protected_bytes))) + len(p.protected_bytes) + 1
        return message[:start] + head + p.payload + message[-66:]

    variants = [
        # the same content with a non-shortest head for the payload length or the signature
        with_payload_head(b"\x59" + len(p.payload).to_bytes(2, "big")),
        with_payload_head(b"\x5a" + len(p.payload).to_bytes(4, "big")),
        message[:-66] + b"\x59\x00\x40" + p.signature,
        # the kid in a long head inside the protected header (refused by both paths)
        b"\xd2\x84"
        + cbor_fmt._head(2, len(p.protected_bytes) + 1)
        + b"\xa2\x01\x27\x04\x58"
        + bytes([len(p.protected_bytes) - 5])
        + p.protected_bytes[5:]
        + message[2 + len(cbor_fmt._head(2, len(p.protected_bytes))) + len(p.protected_bytes) :],
        # an unprotected header entry, an untagged message, an indefinite-length array
        cbor2.dumps(cbor2.CBORTag(18, [p.protected_bytes, {4: b"x"}, p.payload, p.signature])),
        cbor2.dumps([p.protected_bytes, {}, p.payload, p.signature]),
        b"\xd2\x9f" + message[2:] + b"\xff",
    ]
    variants += [_damaged(message, data) for _ in range(8)]
    for v in variants:
        # the two paths agree on every variant: same parts, or both refuse
        assert _exact_parts(v) == _general_parts(v), v.hex()


# --------------------------------------------------------------------------------------------
# The exact-form payload reader and the general path
# --------------------------------------------------------------------------------------------


def _general_payload(data: bytes) -> wire.PlainPayload | None:
    """The general path's verdict on a payload: its plain form, or None if it refuses it."""
    try:
        return payload_fmt._payload_general_plain(data)
    except wire.MalformedMessage:
        return None


def _assert_paths_agree(data: bytes) -> None:
    exact = payload_fmt._payload_exact(data)
    if exact is not None:  # the reader may pass a payload on, never decide differently
        assert exact == _general_payload(data), data.hex()


#: values a hostile encoder might put where a number, name or unit belongs
odd_values = st.one_of(
    st.integers(-(2**64), 2**64 - 1), st.floats(), st.booleans(), st.none(),
    st.text(max_size=30), st.binary(max_size=8), st.just([]), st.just({}),
    st.sampled_from(["station/soil_moisture", "a/b/c", "missing:x", "missing:", "Cel",
                     "x" * 17, "urn:dev:fp:" + GW + ":", 1.0, 1, 2**63, 2**63 - 1]))


@settings(max_examples=400, deadline=None)
@given(payloads, st.data())
def test_exact_payload_reader_agrees_with_general_path(payload: wire.Payload,
                                                      data: st.DataObject) -> None:
    """What a gateway writes is always read by the fast reader (or it would rot unnoticed),
    with the general path's result; on every variant — other values in any slot, labels
    added or dropped, other encodings of the same content, byte flips — the reader either
    agrees with the general path or passes the bytes on to it."""
    encoded = payload.to_cbor()
    assert payload_fmt._payload_exact(encoded) is not None
    assert payload_fmt._payload_exact(encoded) == _general_payload(encoded)
    assert wire.payload_from_cbor(encoded) == payload_fmt._payload_general(encoded)

    obj = payload.to_obj()
    variants = [cbor2.dumps(obj), cbor2.dumps(dict(reversed(list(obj.items()))))]
    for _ in range(6):  # one slot changed, re-encoded deterministically
        o = payload.to_obj()
        recs = o["e"]
        where = data.draw(st.sampled_from(["top", "record", "drop", "add"]))
        if where == "top":
            o[data.draw(st.sampled_from(["v", "gw", "seq", "boot", "e"]))] = data.draw(odd_values)
        else:
            rec = recs[data.draw(st.integers(0, len(recs) - 1))]
            label = data.draw(st.sampled_from([wire.SENML_N, wire.SENML_U, wire.SENML_V,
                                               wire.SENML_VS, wire.SENML_T, wire.SENML_BN,
                                               wire.SENML_BT, 4, 5, -1, -4]))
            if where == "drop":
                rec.pop(label, None)
            else:
                rec[label] = data.draw(odd_values)
        with contextlib.suppress(wire.WireError, TypeError, ValueError, OverflowError):
            variants.append(wire.encode_deterministic(o))
    variants += [_damaged(encoded, data) for _ in range(6)]
    for v in variants:
        _assert_paths_agree(v)


def test_exact_reader_float_forms_match_the_canonical_encoder() -> None:
    """The reader's shortest-float rule is cbor2's canonical encoder's (the general path
    compares with that): every half, singles around every half and at the ends of the single
    range, doubles around every single used here and at the ends of the double range."""
    import struct

    def reader_accepts(encoded: bytes) -> bool:
        try:
            _, end = payload_fmt._number_at(encoded, 0)
        except payload_fmt._NotExact:
            return False
        assert end == len(encoded)
        return True

    def canonical(encoded: bytes, fmt: str) -> bool:
        value = struct.unpack(fmt, encoded[1:])[0]
        return math.isfinite(value) and cbor2.dumps(value, canonical=True) == encoded

    checked = 0
    for bits in range(1 << 16):
        half = b"\xf9" + bits.to_bytes(2, "big")
        assert reader_accepts(half) == canonical(half, ">e"), half.hex()
        value = struct.unpack(">e", half[1:])[0]
        if not math.isfinite(value):
            continue
        single = struct.unpack(">I", struct.pack(">f", value))[0]
        for s in (single - 1, single, single + 1):
            enc = b"\xfa" + (s % (1 << 32)).to_bytes(4, "big")
            assert reader_accepts(enc) == canonical(enc, ">f"), enc.hex()
            as_float = struct.unpack(">f", enc[1:])[0]
            if math.isfinite(as_float):
                d = struct.unpack(">Q", struct.pack(">d", as_float))[0]
                for x in (d - 1, d, d + 1):
                    encd = b"\xfb" + (x % (1 << 64)).to_bytes(8, "big")
                    assert reader_accepts(encd) == canonical(encd, ">d"), encd.hex()
                    checked += 1
    for enc in (b"\xfa\x7f\x7f\xff\xff", b"\xfb\x47\xef\xff\xff\xe0\x00\x00\x00",
                b"\xfb\x47\xef\xff\xff\xf0\x00\x00\x00", b"\xfb\x7f\xef\xff\xff\xff\xff\xff\xff",
                b"\xfb\x00\x00\x00\x00\x00\x00\x00\x01", b"\xfb\x36\xa0\x00\x00\x00\x00\x00\x00",
                b"\xfb\x80\x00\x00\x00\x00\x00\x00\x00", b"\xfa\x80\x00\x00\x00"):
        assert reader_accepts(enc) == canonical(enc, ">d" if enc[0] == 0xFB else ">f"), enc.hex()
    assert checked > 100_000


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=16),
                 st.floats(allow_nan=False, allow_infinity=False, width=32),
                 st.floats(allow_nan=False, allow_infinity=False, width=64)))
def test_exact_reader_accepts_each_float_only_in_its_canonical_form(value: float) -> None:
    """Every exact encoding of a value in every width: the reader takes only the shortest."""
    import struct

    widths: list[bytes] = []  # each width that holds the value exactly
    for head, fmt in ((b"\xf9", ">e"), (b"\xfa", ">f"), (b"\xfb", ">d")):
        try:
            packed = struct.pack(fmt, value)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == value:
            widths.append(head + packed)
    canonical = cbor2.dumps(value, canonical=True)
    assert canonical in widths
    for enc in widths:
        try:
            payload_fmt._number_at(enc, 0)
            accepted = True
        except payload_fmt._NotExact:
            accepted = False
        assert accepted == (enc == canonical), (value, enc.hex())


def test_exact_reader_caches_stay_small_under_hostile_names() -> None:
    """Names, units and gateway ids are remembered by their bytes; hostile traffic with ever
    new or huge names must not grow that memory: long ones are never kept, and the number of
    entries is capped."""
    base = wire.Payload(GW, 1, 1, (wire.Reading("s", "soil_moisture", "/", 0.25, 1.7e9),))
    for i in range(3 * payload_fmt._CACHE_CAP):
        obj = base.to_obj()
        long = i % 2 == 1
        obj["e"][0][wire.SENML_N] = f"s{i}/" + ("q" * (10_000 if long else 5))
        obj["e"][0][wire.SENML_U] = f"u{i}"
        got = payload_fmt._payload_exact(wire.encode_deterministic(obj))
        assert (got is None) == long  # a 10,000-character name is refused, the rest read
    for cache in (payload_fmt._NAMES, payload_fmt._UNITS, payload_fmt._GATEWAYS):
        assert len(cache) <= payload_fmt._CACHE_CAP
        assert all(len(k) <= 128 for k in cache)


def test_version_must_be_the_integer_one() -> None:
    """Found by the atheris campaign: ``"v": true`` and ``"v": 1.0`` compared equal to 1, so
    one payload had three accepted signed encodings. Only the integer 1 is version 1."""
    good = wire.Payload(GW, 1, 1, (wire.Reading("s", "soil_moisture", "/", 0.25, 1.7e9),))
    wire.payload_from_cbor(good.to_cbor())
    for version in (True, 1.0):
        obj = good.to_obj()
        obj["v"] = version
        with pytest.raises(wire.MalformedMessage, match="version"):
            wire.payload_from_cbor(wire.encode_deterministic(obj))
