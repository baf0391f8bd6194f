"""The completeness seal's format (fieldproof/formats/seal.py, docs/evidence-log.md §11): what it
states is a pure function of the entries before it, it can never pass for a message or registry
event, hostile bytes are refused within bounds, and the inner tree proves one farm's record (or
its absence) without the others."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof.formats import merkle
from fieldproof.formats.cbor import encode_deterministic
from fieldproof.formats.registry_event import parse_registry_event, registry_event
from fieldproof.formats.seal import (
    FarmRecord,
    Seal,
    SealAccumulator,
    SealedGateway,
    SealError,
    decode_farm_record,
    decode_seal,
    farm_proofs,
    farms_root,
    gateway_covered,
    gateway_positions,
    is_seal_entry,
    scope_covered,
    scope_positions,
    verify_farm_record,
)
from fieldproof.wire import Payload, Reading, encode_message, gateway_id_for, public_key_bytes

T0 = 1_750_000_000.0


def _gateway() -> tuple[str, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    return gateway_id_for(public_key_bytes(key)), key


def _message(gw: str, key: Ed25519PrivateKey, seq: int) -> bytes:
    return encode_message(
        Payload(gw, seq, 1, (Reading("s", "air_temperature", "Cel", 20.0, T0 + seq),)), key)


def _log() -> tuple[list[bytes], str, str, str]:
    """farm-a: gateways a (north) and b (south, then also moved to farm-b); farm-c: c."""
    (a, ka), (b, kb), (c, kc) = _gateway(), _gateway(), _gateway()
    entries = [
        registry_event("enroll", a, public_key=public_key_bytes(ka), farm="farm-a",
                       field="north", at=T0),
        registry_event("enroll", b, public_key=public_key_bytes(kb), farm="farm-a",
                       field="south", at=T0),
        registry_event("enroll", c, public_key=public_key_bytes(kc), farm="farm-c",
                       field="x", at=T0),
        *[_message(a, ka, s) for s in (1, 2, 3, 5)],
        *[_message(b, kb, s) for s in (1, 2)],
        registry_event("enroll", b, public_key=public_key_bytes(kb), farm="farm-b",
                       field="east", at=T0 + 9),
        registry_event("revoke", c, at=T0 + 10),
    ]
    return entries, a, b, c


def test_accumulator_states_what_the_log_holds_per_farm() -> None:
    entries, a, b, c = _log()
    acc = SealAccumulator()
    acc.add(entries)
    seal, records = acc.seal()
    assert seal.size == len(entries) and seal.farms == 3 == len(records)
    decoded = [decode_farm_record(r) for r in records]
    assert [r.farm for r in decoded] == ["farm-a", "farm-b", "farm-c"]
    farm_a = {g.gateway: g for g in decoded[0].gateways}
    assert farm_a[a] == SealedGateway(a, ("north",), 1, 5, 4, 1)
    assert not farm_a[a].dense  # seq 4 never arrived: a gap the log itself has
    # b moved: in both farms, with its whole history (2 registry events) in each
    assert farm_a[b] == SealedGateway(b, ("south",), 1, 2, 2, 2) and farm_a[b].dense
    assert decoded[1].gateways == (SealedGateway(b, ("east",), 1, 2, 2, 2),)
    assert decoded[2].gateways == (SealedGateway(c, ("x",), None, None, 0, 2),)
    assert seal.root == merkle.root_from_leaves(records)


def test_the_seal_is_a_function_of_the_entries_before_it() -> None:
    """Folded in one go or across checkpoints (with seals in between, and the state saved and
    restored as the writer does), the same entries give the same seal bytes."""
    entries, *_ = _log()
    one = SealAccumulator()
    one.add(entries)
    split = SealAccumulator()
    split.add(entries[:5])
    first, _ = split.seal()
    split.add([first.encode()])
    split = SealAccumulator.from_obj(split.to_obj())
    split.add(entries[5:])
    assert split.seal()[1] == one.seal()[1]
    assert split.seal()[0].root == one.seal()[0].root
    assert split.size == one.size + 1  # the seal is an entry that states nothing


def test_a_seal_is_never_a_message_or_registry_event() -> None:
    entries, *_ = _log()
    acc = SealAccumulator()
    acc.add(entries)
    entry = acc.seal()[0].encode()
    assert entry[0] != 0xD2 and len(entry) >= 64  # a bundle entry is at least 64 bytes
    assert parse_registry_event(entry) is None and is_seal_entry(entry)
    assert not any(is_seal_entry(e) for e in entries)
    assert decode_seal(entry) == acc.seal()[0]


@pytest.mark.parametrize("bad", [
    b"", b"\xa0", b"\xd2\x84" + b"\x00" * 80,
    encode_deterministic({"t": "fieldproof/seal/v1", "size": 1, "farms": 1}),
    encode_deterministic({"t": "fieldproof/seal/v2", "size": 1, "farms": 0,
                          "root": merkle.EMPTY_ROOT}),
    encode_deterministic({"t": "fieldproof/seal/v1", "size": -1, "farms": 0,
                          "root": merkle.EMPTY_ROOT}),
    encode_deterministic({"t": "fieldproof/seal/v1", "size": 1, "farms": 0, "root": b"\x01" * 32}),
    encode_deterministic({"t": "fieldproof/seal/v1", "size": 1, "farms": 0,
                          "root": merkle.EMPTY_ROOT, "x": 1}),
    b"\x9f" * 300,  # too long and indefinite
])
def test_hostile_seals_are_refused(bad: bytes) -> None:
    with pytest.raises(SealError):
        decode_seal(bad)
    assert not is_seal_entry(bad)


def _record(gateways: list[list[object]]) -> bytes:
    return encode_deterministic({"t": "fieldproof/seal-farm/v1", "farm": "f",
                                 "gateways": gateways})


@pytest.mark.parametrize("rows", [
    [["gw-b", ["x"], 1, 2, 2, 1], ["gw-a", ["x"], 1, 2, 2, 1]],  # unsorted
    [["gw-a", ["x"], 1, 2, 2, 1], ["gw-a", ["x"], 1, 2, 2, 1]],  # twice
    [["gw-a", [], 1, 2, 2, 1]],  # no field
    [["gw-a", ["y", "x"], 1, 2, 2, 1]],  # fields unsorted
    [["gw-a", ["x"], 3, 2, 1, 1]],  # first > latest
    [["gw-a", ["x"], 1, 2, 0, 1]],  # a range without messages
    [["gw-a", ["x"], None, 2, 1, 1]],  # half a range
    [["gw-a", ["x"], None, None, 1, 1]],  # messages without seqs
    [["gw-a", ["x"], 1, 2, 2, 0]],  # enrolled by nothing
    [["gw-a", ["x"], 1, 2, 2]],  # short row
    [["gw-\x01", ["x"], 1, 2, 2, 1]],  # control character
])
def test_hostile_farm_records_are_refused(rows: list[list[object]]) -> None:
    with pytest.raises(SealError):
        decode_farm_record(_record(rows))


def test_inner_proofs_prove_one_farm_and_absence() -> None:
    farms = ["alpha", "delta", "kilo", "zulu"]
    records = [FarmRecord(f, (SealedGateway("gw-1", ("x",), None, None, 0, 1),)).encode()
               for f in farms]
    seal = Seal(10, len(records), farms_root(records))
    proofs = farm_proofs(records, range(len(records)))
    for p, proof in enumerate(proofs):
        assert proof == merkle.reference_inclusion_proof(records, p)
        verify_farm_record(records[p], p, seal, proof)
    with pytest.raises(SealError):
        verify_farm_record(records[1], 2, seal, proofs[1])  # a record at another position
    assert scope_positions(farms, "kilo") == [2]
    assert scope_positions(farms, "echo") == [1, 2]  # between delta and kilo
    assert scope_positions(farms, "aaa") == [0] and scope_positions(farms, "zz") == [3]
    assert scope_positions(farms, None) == [0, 1, 2, 3]
    assert scope_covered(4, {2: "kilo"}, "kilo") is None
    assert scope_covered(4, {1: "delta", 2: "kilo"}, "echo") is None
    assert scope_covered(4, {0: "alpha"}, "aaa") is None
    assert scope_covered(4, {3: "zulu"}, "zz") is None
    assert scope_covered(0, {}, "any") is None
    # not adjacent, or not around the farm: nothing shows the farm has no record
    assert scope_covered(4, {0: "alpha", 2: "kilo"}, "echo") is not None
    assert scope_covered(4, {2: "kilo"}, "echo") is not None
    assert scope_covered(4, {}, "kilo") is not None
    assert scope_covered(4, {0: "alpha", 1: "delta", 2: "kilo"}, None) is not None
    assert scope_covered(4, {1: "kilo", 2: "delta"}, "delta") is not None  # unsorted


def test_every_seq_counts_the_duplicates_shown() -> None:
    """Entries, not seqs: seq 1–5 with one seq twice and one missing is 5 entries, as many as
    a gap-free log; only the duplicate a bundle shows tells them apart."""
    twin_and_gap = SealedGateway("gw-1", ("x",), 1, 5, 5, 1)
    assert twin_and_gap.dense and twin_and_gap.every_seq(0)  # what the seal alone says
    assert not twin_and_gap.every_seq(1)  # one entry is a second copy: at most 4 seqs
    twin_no_gap = SealedGateway("gw-1", ("x",), 1, 5, 6, 1)
    assert not twin_no_gap.dense and twin_no_gap.every_seq(1)
    assert not SealedGateway("gw-1", ("x",), None, None, 0, 1).every_seq(0)


def test_a_gateway_scope_needs_the_records_listing_it() -> None:
    """One gateway, no farm: the records that list it (its farms' ones), proven absent from
    the others by its registry events (which the caller holds to the records' count)."""
    entries, a, b, _ = _log()
    acc = SealAccumulator()
    acc.add(entries)
    records = acc.records()  # farm-a (a, b), farm-b (b), farm-c (c)
    assert gateway_positions(records, b) == [0, 1]  # moved: both farms
    assert gateway_positions(records, a) == [0]
    assert gateway_positions(records, b, "east") == [0, 1]
    assert gateway_positions(records, b, "west") is None  # only every record shows that
    assert gateway_positions(records, "gw-0000000000000000") is None
    at = dict(enumerate(records))
    assert gateway_covered(3, {0: at[0], 1: at[1]}, b, {"farm-a": 1, "farm-b": 9}) is None
    assert gateway_covered(3, {0: at[0]}, a, {"farm-a": 0}) is None
    assert gateway_covered(3, at, "gw-0000000000000000", {}) is None  # every record
    # farm-b's enrollment is carried, its record is not
    missing = gateway_covered(3, {0: at[0]}, b, {"farm-a": 1, "farm-b": 9})
    assert missing is not None and "farm 'farm-b'" in missing and "index 9" in missing
    # no record listing it, and not every record: nothing shows it is in none
    assert gateway_covered(3, {2: at[2]}, a, {}) is not None
    assert gateway_covered(3, {}, a, {}) is not None
    assert gateway_covered(3, {1: at[0], 0: at[1]}, b, {}) is not None  # unsorted
    # records that disagree about the gateway: a seal never writes that
    other = FarmRecord("farm-b", (SealedGateway(b, ("east",), 1, 2, 2, 3),))
    with pytest.raises(SealError):
        gateway_covered(3, {0: at[0], 1: other}, b, {"farm-a": 1, "farm-b": 9})
