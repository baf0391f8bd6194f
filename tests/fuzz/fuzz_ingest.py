"""Fuzz the collector's per-message path: ``collector.ingest.Ingestor.check`` (size, topic, kid,
registry, signature with key history, payload, quantity names), then ``Ingestor.lines`` for
what it accepts — in-process, with an in-memory SQLite registry and no services.

The first input byte picks the topic and how the rest is signed (so the fuzzer also reaches
the payload checks behind a valid signature, as a compromised gateway could)::

    bits 0-1  topic: gateway A's readings, revoked gateway R's, unregistered U's, or an odd one
    bits 2-3  0: the rest is the message as received; 1: the rest is a payload, signed by the
              topic's gateway; 2: signed by A's retired key (rotated at seq 1000);
              3: signed by an attacker's key, with the topic gateway's kid

Properties: ``check`` returns ``Verified`` or a ``Rejected`` with a documented quarantine
reason, never raises; whatever it accepts is from A, verifies with a key A held for that seq
(checked again here, independently), has only allowed quantity names; ``lines`` makes one
well-formed line-protocol point per reading, in A's series.

Run:  .venv/bin/python tests/fuzz/fuzz_ingest.py [libFuzzer flags] [corpus_dir]
"""

from __future__ import annotations

import re
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris

from tests.fuzz._common import PRODUCT_PACKAGES, CborMutator, main

with atheris.instrument_imports(include=PRODUCT_PACKAGES):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from collector.ingest import (
        QUANTITY_RE,
        QUARANTINE_REASONS,
        RESERVED_MEASUREMENTS,
        Incoming,
        Ingestor,
        Rejected,
        Verified,
    )
    from collector.registry import Registry
    from collector.store import CollectorStore
    from fieldproof import wire

PREFIX = "fieldproof/v1"
ROTATED_AT = 1000


def _key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


OLD, NEW, REVOKED, UNKNOWN, ATTACKER = (_key(n) for n in (1, 2, 3, 4, 5))
A = wire.gateway_id_for(wire.public_key_bytes(OLD))
R = wire.gateway_id_for(wire.public_key_bytes(REVOKED))
U = wire.gateway_id_for(wire.public_key_bytes(UNKNOWN))
OLD_PUB, NEW_PUB = wire.public_key_bytes(OLD), wire.public_key_bytes(NEW)
ODD_TOPICS = (f"{PREFIX}/{A}/status", f"{PREFIX}//readings", f"{PREFIX}/{A}/readings/x",
              f"other/{A}/readings")


class NullWriter:
    """``check`` and ``lines`` never write; the Ingestor only needs something to hold."""

    def write(self, lines: Sequence[str]) -> None:
        raise AssertionError("nothing is written while checking")

    def close(self) -> None:
        pass


def _ingestor() -> Ingestor:
    db = sqlite3.connect(":memory:", isolation_level=None)
    registry = Registry(db)
    registry.add(A, OLD_PUB, "farm", "north", sensor_meta={"s1": {"depth_cm": "20"}})
    registry.rotate_key(A, OLD_PUB, NEW_PUB, ROTATED_AT, b"")
    registry.add(R, wire.public_key_bytes(REVOKED), "farm", "south")
    registry.revoke(R)
    return Ingestor(CollectorStore(db), registry, NullWriter(), topic_prefix=PREFIX)


INGESTOR = _ingestor()
TAG_GATEWAY = re.compile(rf",gateway={re.escape(A)}(,|$)")


def incoming(data: bytes) -> tuple[Incoming, int]:
    """The message the input stands for, and its signing mode."""
    mode = data[0] if data else 0
    topic_gw = (A, R, U, None)[mode & 3]
    topic = f"{PREFIX}/{topic_gw}/readings" if topic_gw else ODD_TOPICS[(mode >> 4) & 3]
    body = data[1:]
    signing = (mode >> 2) & 3
    kid = topic_gw or A
    if signing == 1:
        key = {A: NEW, R: REVOKED, U: UNKNOWN}[kid]
        body = wire.sign1(body, key, kid.encode())
    elif signing == 2:
        body = wire.sign1(body, OLD, A.encode())
    elif signing == 3:
        body = wire.sign1(body, ATTACKER, kid.encode())
    return Incoming(topic, body, received_at=1_700_000_000.0), signing


def _signed_by_a(message: bytes) -> wire.Payload | None:
    """An independent check of what ``check`` accepted: A's current key, or its retired key
    for a seq before the rotation."""
    try:
        return wire.decode_message(message, NEW_PUB)
    except wire.WireError:
        pass
    try:
        p = wire.decode_message(message, OLD_PUB)
    except wire.WireError:
        return None
    return p if p.seq < ROTATED_AT else None


def test_one_input(data: bytes) -> None:
    msg, _ = incoming(data)
    outcome = INGESTOR.check(msg)
    if isinstance(outcome, Rejected):
        assert outcome.reason in QUARANTINE_REASONS and outcome.reason != "internal_error", \
            outcome
        assert isinstance(outcome.detail, str)
        return
    assert isinstance(outcome, Verified), outcome
    p = outcome.payload
    assert msg.topic == f"{PREFIX}/{A}/readings", msg.topic
    assert p.gateway == A and outcome.device.gateway == A and outcome.device.active
    again = _signed_by_a(msg.payload)
    assert again == p, f"accepted without a valid signature by A: {msg.payload.hex()}"
    for r in p.readings:
        assert QUANTITY_RE.match(r.quantity) and r.quantity not in RESERVED_MEASUREMENTS, r
    lines = INGESTOR.lines(outcome)
    assert len(lines) == len(p.readings), lines
    for line, r in zip(lines, p.readings, strict=True):
        series, _, rest = line.partition(" ")  # tags are escaped: no space before the fields
        assert series.startswith(r.quantity + ","), line
        assert TAG_GATEWAY.search(series), line
        assert "\n" not in series, line
        head, _, stamp = rest.rpartition(" ")
        assert stamp.isdigit() and int(stamp) == round(r.time * 1e9), line
        assert head.startswith(f"seq={p.seq}i,"), line


# ------------------------------------------------------------------------------ seeds


def _payload(gw: str, seq: int, quantities: Sequence[str], missing: bool = False) -> bytes:
    readings = tuple(
        wire.Reading(f"s{i % 2}", q, ("/", "Cel", "%RH", "")[i % 4],
                     None if missing and i == 1 else 0.25 * i, 1_700_000_000.0 + i,
                     "timeout" if missing and i == 1 else "")
        for i, q in enumerate(quantities))
    return wire.Payload(gw, seq, 1, readings).to_cbor()


def seeds() -> list[bytes]:
    good = ["soil_moisture", "air_temperature", "air_humidity"]
    out = []
    for gw_bits, gw, key in ((0, A, NEW), (1, R, REVOKED), (2, U, UNKNOWN)):
        for seq in (5, ROTATED_AT, 2**40):
            payload = _payload(gw, seq, good, missing=seq == 5)
            out.append(bytes([gw_bits]) + wire.sign1(payload, key, gw.encode()))
            out.append(bytes([gw_bits | 1 << 2]) + payload)
            out.append(bytes([gw_bits | 3 << 2]) + payload)
    for seq in (7, ROTATED_AT + 1):
        payload = _payload(A, seq, good)
        out.append(bytes([0]) + wire.sign1(payload, OLD, A.encode()))
        out.append(bytes([2 << 2]) + payload)
    for quantities in (["gateway_status"], ["Soil-Moisture"], ["x" * 49], good * 4):
        out.append(bytes([1 << 2]) + _payload(A, 9, quantities))
    out.append(bytes([3 | 1 << 4]) + _payload(A, 3, good))
    return out


MUTATOR = CborMutator(
    wire.encode_deterministic,
    strings=["v", "gw", "seq", "boot", "e", A, R, U, wire.base_name(A), "missing:timeout",
             "s1/soil_moisture", "s1/gateway_status", "s1/Bad", "s1/a b", "Cel", "%RH"],
    keys=["v", "gw", "seq", "boot", "e", wire.SENML_BN, wire.SENML_BT, wire.SENML_N,
          wire.SENML_U, wire.SENML_V, wire.SENML_VS, wire.SENML_T],
    prefix=1,
)


if __name__ == "__main__":
    main("ingest", test_one_input, seeds, MUTATOR)
