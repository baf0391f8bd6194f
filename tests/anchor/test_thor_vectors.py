"""The Thor transaction codec against the official vectors (shared/vectors/thor), round trips
and strict rejection of corrupted raw transactions."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import rlp
from hypothesis import given, settings
from hypothesis import strategies as st

from anchor import thor
from fieldproof.formats.anchor_record import AnchorRecord

# VIP-191 vector from github.com/vechain/thor tx/transaction_test.go TestDelegatedTx
# @ 65b8e042247c0c47444d333cbf1a91aaf85e0bcf (LGPL-3.0); tx_vectors.json has no delegated tx.
DELEGATED: dict[str, Any] = {
    "body": {
        "chainTag": 0xA4,
        "blockRef": "0x00000000aabbccdd",
        "expiration": 32,
        "clauses": [
            {
                "to": "0x7567d83b7b8d80addcb281a71d54fc7b3364ffed",
                "value": 10000,
                "data": "0x000000606060",
            },
            {
                "to": "0x7567d83b7b8d80addcb281a71d54fc7b3364ffed",
                "value": 20000,
                "data": "0x000000606060",
            },
        ],
        "gasPriceCoef": 128,
        "gas": 210000,
        "dependsOn": None,
        "nonce": 12345678,
        "reserved": {"features": 1},
    },
    "origin_key": "7582be841ca040aa940fff6c05773129e135623e41acce3e0b8ba520dc1ae26a",
    "payer_key": "321d6443bc6177273b5abf54210fe806d451d6b7973bccc2384ef78bbcd0bf51",
    "signing_hash": "0x96c4cd08584994f337946f950eca5511abe15b152bc879bf47c2227901f9f2af",
    "payer_hash": "0x956577b09b2a770d10ea129b26d916955df3606dc973da0043d6321b922fdef9",
    "origin": "0xd989829d88b0ed1b06edf5c50174ecfa64f14a64",
    "delegator": "0xd3ae78222beadb038203be21ed5ce7c9b1bff602",
    "id": "0x956577b09b2a770d10ea129b26d916955df3606dc973da0043d6321b922fdef9",
    "signed_encoded": (
        "f8db81a484aabbccdd20f840df947567d83b7b8d80addcb281a71d54fc7b3364ffed82271086000000606060"
        "df947567d83b7b8d80addcb281a71d54fc7b3364ffed824e20860000006060608180830334508083bc614e"
        "c101b882bad4d4401b1fb1c41d61727d7fd2aeb2bb3e65a27638a5326ca98404c0209ab159eaeb37f0ac75"
        "ed1ac44d92c3d17402d7d64b4c09664ae2698e1102448040c000f043fafeaf60343248a37e4f1d2743b4ab"
        "9116df6d627b4d8a874e4f48d3ae671c4e8d136eb87c544bea1763673a5f1762c2266364d1b22166d16e38"
        "72b5a9c700"
    ),
}


@pytest.fixture(scope="module")
def vectors(vectors_dir: Path) -> list[dict[str, Any]]:
    path = vectors_dir / "thor" / "tx_vectors.json"
    if not path.is_file():
        pytest.fail(f"missing {path}")
    vs: list[dict[str, Any]] = json.loads(path.read_text())["vectors"]
    return vs


def _key(v: dict[str, Any]) -> bytes:
    return bytes.fromhex(v["private_key"])


def test_vector_file_covers_legacy_and_dynamic_fee(vectors: list[dict[str, Any]]) -> None:
    types = {v["body"].get("type", 0) for v in vectors}
    assert types == {0, 0x51}
    assert len(vectors) >= 4


def test_sign_body_reproduces_every_signed_encoding(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        raw, tx_id = thor.sign_body(v["body"], _key(v))
        assert raw.hex() == v["expected"]["signed_encoded"], v["name"]
        assert tx_id.startswith("0x")
        assert len(tx_id) == 66
        if "id" in v["expected"]:
            assert tx_id == v["expected"]["id"], v["name"]


def test_unsigned_encoding_and_signing_hash(vectors: list[dict[str, Any]]) -> None:
    checked = 0
    for v in vectors:
        tx = thor.Transaction.from_body(v["body"])
        e = v["expected"]
        if "unsigned_encoded" in e:
            assert tx.signing_payload().hex() == e["unsigned_encoded"], v["name"]
            checked += 1
        if "signing_hash" in e:
            assert "0x" + tx.signing_hash().hex() == e["signing_hash"], v["name"]
    assert checked >= 3


def test_dynamic_fee_signing_hash_includes_type_byte(vectors: list[dict[str, Any]]) -> None:
    v = next(v for v in vectors if v["body"].get("type") == 0x51)
    tx = thor.Transaction.from_body(v["body"])
    unprefixed = thor.blake2b256(tx.signing_payload()[1:])
    assert "0x" + unprefixed.hex() != v["expected"]["signing_hash"]
    assert "0x" + tx.signing_hash().hex() == v["expected"]["signing_hash"]


def test_signature_origin_and_id(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        raw, tx_id = thor.sign_body(v["body"], _key(v))
        tx = thor.decode(raw)
        e = v["expected"]
        if "signature" in e:
            assert tx.signature.hex() == e["signature"], v["name"]
        origin = tx.origin()
        assert origin == thor.address_of(_key(v))
        if "origin" in e:
            assert "0x" + origin.hex() == e["origin"]
        assert tx_id == "0x" + thor.blake2b256(tx.signing_hash(), origin).hex()


def test_intrinsic_gas_of_vectors(vectors: list[dict[str, Any]]) -> None:
    with_gas = [v for v in vectors if "intrinsic_gas" in v["expected"]]
    assert with_gas
    for v in with_gas:
        assert (
            thor.Transaction.from_body(v["body"]).intrinsic_gas() == v["expected"]["intrinsic_gas"]
        )


def test_decode_of_vectors_round_trips(vectors: list[dict[str, Any]]) -> None:
    for v in vectors:
        raw = bytes.fromhex(v["expected"]["signed_encoded"])
        tx = thor.decode(raw)
        assert tx.encode() == raw
        unsigned = thor.Transaction.from_body(v["body"])
        assert tx.with_signature(b"") == unsigned
        assert thor.Transaction.from_body(tx.to_body()) == unsigned


def test_delegated_vector() -> None:
    d = DELEGATED
    raw, tx_id = thor.sign_body(
        d["body"], bytes.fromhex(d["origin_key"]), bytes.fromhex(d["payer_key"])
    )
    assert raw.hex() == d["signed_encoded"]
    assert tx_id == d["id"]
    tx = thor.decode(raw)
    assert tx.delegated
    assert "0x" + tx.signing_hash().hex() == d["signing_hash"]
    assert "0x" + tx.delegator_signing_hash(tx.origin()).hex() == d["payer_hash"]
    assert "0x" + tx.origin().hex() == d["origin"]
    delegator = tx.delegator()
    assert delegator is not None
    assert "0x" + delegator.hex() == d["delegator"]
    assert len(tx.signature) == 130


def test_gas_payer_key_sets_the_delegation_feature() -> None:
    body = dict(DELEGATED["body"])
    body.pop("reserved")
    raw, _ = thor.sign_body(
        body, bytes.fromhex(DELEGATED["origin_key"]), bytes.fromhex(DELEGATED["payer_key"])
    )
    assert raw.hex() == DELEGATED["signed_encoded"]


def test_delegated_body_without_payer_key_is_refused() -> None:
    with pytest.raises(thor.ThorTxError, match="gas payer key"):
        thor.sign_body(DELEGATED["body"], bytes.fromhex(DELEGATED["origin_key"]))


def test_dynamic_fee_delegated_round_trip() -> None:
    body = dict(DELEGATED["body"], type=0x51, maxFeePerGas=2 * 10**13, maxPriorityFeePerGas=10**12)
    k1, k2 = bytes.fromhex(DELEGATED["origin_key"]), bytes.fromhex(DELEGATED["payer_key"])
    raw, tx_id = thor.sign_body(body, k1, k2)
    assert raw[0] == 0x51
    tx = thor.decode(raw)
    assert tx.tx_type == 0x51
    assert tx.delegated
    assert tx.origin() == thor.address_of(k1)
    assert tx.delegator() == thor.address_of(k2)
    assert tx.id_hex() == tx_id
    assert tx.encode() == raw


def test_non_delegated_tx_has_no_delegator(vectors: list[dict[str, Any]]) -> None:
    v = vectors[0]
    tx = thor.decode(bytes.fromhex(v["expected"]["signed_encoded"]))
    assert not tx.delegated
    assert tx.delegator() is None


# ---------------------------------------------------------------------------- intrinsic gas


def test_intrinsic_gas_rules() -> None:
    assert thor.intrinsic_gas([]) == 21000
    to = b"\x01" * 20
    assert thor.intrinsic_gas([thor.Clause(to)]) == 21000
    assert thor.intrinsic_gas([thor.Clause(None)]) == 53000
    assert thor.intrinsic_gas([thor.Clause(to, 0, b"\x00\x01")]) == 21000 + 4 + 68
    assert thor.intrinsic_gas([thor.Clause(to, 0, b"\xff" * 32)]) == 23176
    rec = AnchorRecord.for_checkpoint("example.org/log", 1, b"\x11" * 32).encode()
    zeros = rec.count(0)
    assert thor.intrinsic_gas([thor.Clause(to, 0, rec)]) == 21000 + 4 * zeros + 68 * (78 - zeros)


# ---------------------------------------------------------------------------- round trips

addresses = st.one_of(st.none(), st.binary(min_size=20, max_size=20))
clauses = st.builds(
    thor.Clause,
    to=addresses,
    value=st.integers(0, 2**256 - 1),
    data=st.binary(max_size=100),
)


@st.composite
def transactions(draw: st.DrawFn) -> thor.Transaction:
    dynamic = draw(st.booleans())
    fees: dict[str, Any] = (
        {
            "tx_type": thor.TYPE_DYNAMIC_FEE,
            "max_fee_per_gas": draw(st.integers(0, 2**256 - 1)),
            "max_priority_fee_per_gas": draw(st.integers(0, 2**256 - 1)),
        }
        if dynamic
        else {"gas_price_coef": draw(st.integers(0, 255))}
    )
    return thor.Transaction(
        chain_tag=draw(st.integers(0, 255)),
        block_ref=draw(st.binary(min_size=8, max_size=8)),
        expiration=draw(st.integers(0, 2**32 - 1)),
        clauses=tuple(draw(st.lists(clauses, max_size=3))),
        gas=draw(st.integers(0, 2**64 - 1)),
        nonce=draw(st.integers(0, 2**64 - 1)),
        depends_on=draw(st.one_of(st.none(), st.binary(min_size=32, max_size=32))),
        features=draw(st.sampled_from([0, 1])),
        **fees,
    )


KEY_A = bytes.fromhex(DELEGATED["origin_key"])
KEY_B = bytes.fromhex(DELEGATED["payer_key"])


@settings(max_examples=150, deadline=None)
@given(transactions())
def test_decode_encode_round_trip(tx: thor.Transaction) -> None:
    signed = thor.sign_transaction(tx, KEY_A, KEY_B if tx.delegated else None)
    raw = signed.encode()
    back = thor.decode(raw)
    assert back == signed
    assert back.encode() == raw
    assert back.origin() == thor.address_of(KEY_A)
    assert back.delegator() == (thor.address_of(KEY_B) if tx.delegated else None)
    assert thor.Transaction.from_body(back.to_body()) == tx


# ---------------------------------------------------------------------------- corrupted raw txs


def _signed(vectors: list[dict[str, Any]], tx_type: int) -> bytes:
    v = next(v for v in vectors if v["body"].get("type", 0) == tx_type)
    return bytes.fromhex(v["expected"]["signed_encoded"])


def _items(raw: bytes) -> list[Any]:
    items: list[Any] = rlp.decode(raw[1:] if raw[0] == 0x51 else raw)
    return items


def _reencode(items: list[Any], typed: bool) -> bytes:
    body: bytes = rlp.encode(items)
    return b"\x51" + body if typed else body


@pytest.mark.parametrize("tx_type", [0, 0x51])
def test_corrupted_raw_txs_are_rejected(vectors: list[dict[str, Any]], tx_type: int) -> None:
    raw = _signed(vectors, tx_type)
    typed = tx_type == 0x51
    thor.decode(raw)  # the uncorrupted one decodes

    bad: dict[str, bytes] = {
        "truncated": raw[:-1],
        "trailing byte": raw + b"\x00",
        "empty": b"",
    }
    items = _items(raw)
    fewer = items[:-1]
    bad["missing field"] = _reencode(fewer, typed)
    bad["extra field"] = _reencode([*items, b""], typed)
    leading_zero = list(items)
    leading_zero[2] = b"\x00" + items[2]  # expiration with a leading zero byte
    bad["non-canonical integer"] = _reencode(leading_zero, typed)
    short_to = list(items)
    short_to[3] = [[c[0][:19], c[1], c[2]] for c in items[3]]
    bad["19-byte address"] = _reencode(short_to, typed)
    untrimmed = list(items)
    untrimmed[-2] = [b"\x01", b""]
    bad["untrimmed reserved"] = _reencode(untrimmed, typed)
    too_many = list(items)
    too_many[-2] = [b"\x01", b"\x01", b"\x01", b"\x01"]
    bad["too many reserved fields"] = _reencode(too_many, typed)
    big_tag = list(items)
    big_tag[0] = b"\x01\x00"
    bad["chainTag over 8 bits"] = _reencode(big_tag, typed)
    short_dep = list(items)
    dep_index = 7 if typed else 6
    short_dep[dep_index] = b"\x01" * 31
    bad["31-byte dependsOn"] = _reencode(short_dep, typed)
    clause_list = list(items)
    clause_list[3] = b"\x01"
    bad["clauses not a list"] = _reencode(clause_list, typed)
    if typed:
        bad["unknown type"] = b"\x52" + raw[1:]
        bad["type byte only"] = b"\x51"
    else:
        bad["legacy with 0x51-style fields"] = _reencode([*items[:4], b"\x01", *items[4:]], False)

    accepted = []
    for name, data in bad.items():
        try:
            thor.decode(data)
        except thor.TxDecodeError:
            continue
        accepted.append(name)
    assert accepted == []


def test_corrupted_signatures(vectors: list[dict[str, Any]]) -> None:
    v = vectors[0]
    tx = thor.decode(bytes.fromhex(v["expected"]["signed_encoded"]))
    good_origin = tx.origin()

    flipped = bytearray(tx.signature)
    flipped[5] ^= 0x01
    with contextlib.suppress(thor.SignatureError):  # r off the curve: recovery fails outright
        assert tx.with_signature(bytes(flipped)).origin() != good_origin

    with pytest.raises(thor.SignatureError, match="recovery id"):
        tx.with_signature(tx.signature[:64] + b"\x04").origin()
    with pytest.raises(thor.SignatureError, match="length"):
        tx.with_signature(tx.signature[:64]).origin()
    with pytest.raises(thor.SignatureError, match="recovery failed"):
        tx.with_signature(b"\x00" * 64 + b"\x00").origin()
    with pytest.raises(thor.SignatureError, match="length"):
        replace(tx, features=1).origin()  # delegated needs 130 bytes

    s = int.from_bytes(tx.signature[32:64], "big")
    high = (
        tx.signature[:32]
        + (thor.SECP256K1_N - s).to_bytes(32, "big")
        + bytes([tx.signature[64] ^ 1])
    )
    assert tx.has_low_s()
    assert not tx.with_signature(high).has_low_s()
    assert tx.with_signature(high).origin() == good_origin  # malleable: the node must refuse it


def test_a_changed_field_changes_the_origin(vectors: list[dict[str, Any]]) -> None:
    v = vectors[0]
    tx = thor.decode(bytes.fromhex(v["expected"]["signed_encoded"]))
    tampered = replace(tx, gas=tx.gas + 1)
    assert tampered.signing_hash() != tx.signing_hash()
    with contextlib.suppress(thor.SignatureError):
        assert tampered.origin() != tx.origin()


# ---------------------------------------------------------------------------- keys and bodies


def test_secret_key_never_shows_itself() -> None:
    k = thor.SecretKey(KEY_A)
    assert KEY_A.hex() not in repr(k)
    assert KEY_A.hex() not in str(k)
    assert k.address_hex == "0xd989829d88b0ed1b06edf5c50174ecfa64f14a64"
    assert thor.recover_address(b"\x01" * 32, k.sign(b"\x01" * 32)) == k.address


@pytest.mark.parametrize(
    "secret", [b"\x00" * 32, thor.SECP256K1_N.to_bytes(32, "big"), b"\x01" * 31, b"\xff" * 32]
)
def test_invalid_private_keys_are_refused_without_echo(secret: bytes) -> None:
    with pytest.raises(thor.InvalidPrivateKey) as exc:
        thor.sign_hash(b"\x01" * 32, secret)
    assert secret.hex() not in str(exc.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chainTag", 256),
        ("blockRef", "0x0011"),
        ("expiration", 2**32),
        ("gasPriceCoef", 256),
        ("gas", -1),
        ("nonce", "0x10000000000000000"),
        ("dependsOn", "0x1234"),
        ("type", 2),
    ],
)
def test_out_of_range_body_fields_are_named(field: str, value: Any) -> None:
    body = dict(DELEGATED["body"])
    body[field] = value
    with pytest.raises(thor.TxEncodeError, match=field if field != "type" else "type"):
        thor.Transaction.from_body(body)


def test_body_accepts_hex_and_decimal_strings() -> None:
    body = dict(DELEGATED["body"], gas="0x33450", nonce="12345678")
    body["clauses"] = [dict(c, value=hex(c["value"])) for c in DELEGATED["body"]["clauses"]]
    assert thor.Transaction.from_body(body) == thor.Transaction.from_body(DELEGATED["body"])


def test_expiry_rule() -> None:
    tx = thor.Transaction.from_body(dict(DELEGATED["body"], blockRef="0x0000006400000000"))
    assert tx.block_ref_number == 100
    assert not tx.is_expired(132)
    assert tx.is_expired(133)
