"""Fuzz the wire format (fieldproof/wire.py); every input is tried as each of these:

* a payload, read by both payload readers: ``_payload_exact`` (the one-pass reader of the form
  gateways write) returns None or exactly what ``_payload_general`` returns, and None whenever
  the general path raises ``MalformedMessage`` (the differential property);
* the same payload signed by the fuzzer's gateway, through ``decode_message_plain``: the whole
  message path decides as the general path does (same plain payload, or ``MalformedMessage``);
* a whole message: ``open_message`` and ``decode_message_plain`` raise only ``WireError``, and
  give the same outcome whether the exact or the general COSE parse is used;
* a deterministic CBOR item (``decode_deterministic`` re-encodes to the very bytes) and a
  receipt (``decode_receipt`` of ``encode_receipt`` of the result reads it back).

Run:  .venv/bin/python tests/fuzz/fuzz_wire.py [libFuzzer flags] [corpus_dir]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from tests.fuzz._common import PRODUCT_PACKAGES, CborMutator, main, strict

with atheris.instrument_imports(include=PRODUCT_PACKAGES):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fieldproof import wire
    from fieldproof.formats import payload as payload_fmt

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = wire.public_key_bytes(KEY)
GW = wire.gateway_id_for(PUB)
KID = GW.encode()


class Finding(AssertionError):
    """A property failed; the message has the input in hex."""


def _general(data: bytes) -> wire.PlainPayload | None:
    """The reference reader's verdict: the plain payload, or None when it refuses the bytes."""
    try:
        return payload_fmt._payload_general_plain(data)
    except wire.MalformedMessage:
        return None


def check_payload(data: bytes) -> None:
    exact = payload_fmt._payload_exact(data)
    general = _general(data)
    if exact is not None and strict(exact) != strict(general):
        raise Finding(f"exact reader {exact!r} != general path {general!r} on {data.hex()}")
    # the whole message path, signed by the gateway the kid names
    message = wire.sign1(data, KEY, KID)
    try:
        got: Any = wire.decode_message_plain(message, PUB)
    except wire.MalformedMessage:
        got = None
    expected = general
    if expected is not None and (expected[0] != GW or len(message) > wire.MAX_MESSAGE_BYTES):
        expected = None  # refused: payload gateway is not the kid, or the message too big
    if strict(got) != strict(expected):
        raise Finding(f"decode_message_plain {got!r} != general path {expected!r} on "
                      f"{data.hex()}")


def _outcome(call: Any) -> Any:
    try:
        return "ok", strict(call())
    except wire.WireError as exc:
        return type(exc).__name__, str(exc)


def check_message(data: bytes) -> None:
    try:
        kid, parsed = wire.open_message(data)
    except wire.WireError:
        pass
    else:
        assert isinstance(kid, str) and kid.encode("ascii") == parsed.protected[wire.HEADER_KID]
    # default: the exact parse when the bytes are in a gateway's form, else the general one
    fast = _outcome(lambda: wire.decode_message_plain(data, PUB))

    def general() -> wire.PlainPayload:
        return wire.decode_message_plain(data, PUB, wire.parse_sign1(data, require_tag=True))

    slow = _outcome(general)
    if fast != slow:
        raise Finding(f"exact COSE parse gives {fast!r}, general parse {slow!r} on {data.hex()}")


def check_cbor(data: bytes) -> None:
    try:
        obj = wire.decode_deterministic(data)
    except wire.WireError:
        return
    if wire.encode_deterministic(obj) != data:
        raise Finding(f"decode_deterministic accepted a non-canonical encoding: {data.hex()}")


def check_receipt(data: bytes) -> None:
    try:
        collector, seqs = wire.decode_receipt(data, max_seqs=100_000)
    except wire.MalformedMessage:
        return
    again = wire.decode_receipt(wire.encode_receipt(collector, seqs), max_seqs=100_000)
    if again != (collector, sorted(set(seqs))):
        raise Finding(f"receipt does not read back: {data.hex()}")


def test_one_input(data: bytes) -> None:
    check_payload(data)
    check_message(data)
    check_cbor(data)
    check_receipt(data)


# ------------------------------------------------------------------------------ seeds

_UNITS = ("Cel", "%RH", "/", "S/m", "Pa", "lx", "pH", "", "m3/m3", "W/m2")
_VALUES: tuple[float | None, ...] = (
    0.3125, 17.25, 21.5, 0.0, -0.0, 1.0, 100.0, 65504.0, 0.1, 1e-7, -40.0, 1013.25, None, 3.0,
    123456.789, 1e30, 2.0**-24, 5.0)


def seed_payloads() -> list[wire.Payload]:
    """Real payloads as gateways write them: 1..12 readings, gaps, every float width."""
    out = []
    for n in range(1, 13):
        readings = []
        for i in range(n):
            value = _VALUES[(n + i) % len(_VALUES)]
            t = 1_700_000_000.0 + (i % 3) * (0.5 if n % 2 else 60.0)
            readings.append(wire.Reading(
                f"s{i % 4}", ("soil_moisture", "air_temperature", "leaf_wetness")[i % 3],
                _UNITS[(n * i) % len(_UNITS)], value, t,
                ("checksum", "timeout", "crc")[i % 3] if value is None else ""))
        gw = GW if n % 4 else f"gw-{n:016x}"
        out.append(wire.Payload(gw, (n * 7919) ** (n % 5), n % 3, tuple(readings)))
    many = tuple(wire.Reading("probe", "soil_moisture", "/", 0.25 + i / 1024, 1.7e9 + i)
                 for i in range(30))
    out.append(wire.Payload(GW, 2**63 - 1, 2**32, many))
    return out


def seeds() -> list[bytes]:
    payloads = seed_payloads()
    out = [p.to_cbor() for p in payloads]
    out += [wire.encode_message(p, KEY) for p in payloads if p.gateway == GW]
    out += [wire.encode_receipt("collector-1", [1, 2, 3, 7, 9, 10]), b'{"c":"c","s":[]}']
    return out


MUTATOR = CborMutator(
    wire.encode_deterministic,
    strings=["v", "gw", "seq", "boot", "e", GW, wire.base_name(GW), "urn:dev:fp:", "missing:",
             "missing:checksum", "s1/soil_moisture", "a/b/c", "/", "s/", "Cel", "%RH", "x" * 17,
             "gw-", "Signature1"],
    keys=["v", "gw", "seq", "boot", "e", wire.SENML_BN, wire.SENML_BT, wire.SENML_N,
          wire.SENML_U, wire.SENML_V, wire.SENML_VS, wire.SENML_T, 4, 5, -1, -4, 1, "c", "s"],
)


if __name__ == "__main__":
    main("wire", test_one_input, seeds, MUTATOR)
