"""The wire format against official vectors: COSE (cose-wg/Examples), SenML (RFC 8428), CBOR
(RFC 8949 Appendix A and the failure list)."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof import wire
from fieldproof.formats import cbor as cbor_fmt


def _b64url(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _public_key(key: dict[str, str]) -> bytes:
    if "x_hex" in key and key.get("kty") == "OKP":
        return bytes.fromhex(key["x_hex"])
    x = bytes.fromhex(key["x_hex"]) if "x_hex" in key else _b64url(key["x"])
    y = bytes.fromhex(key["y_hex"]) if "y_hex" in key else _b64url(key["y"])
    return b"\x04" + x + y


def _sign1_vectors(vectors_dir: Path) -> list[Path]:
    cose = vectors_dir / "cose"
    files = sorted(cose.glob("sign1-tests/*.json")) + sorted(cose.glob("*-examples/*-sig-*.json"))
    files += [cose / "RFC8152" / "Appendix_C_2_1.json", cose / "CWT" / "A_3.json"]
    assert len(files) >= 15, f"expected the COSE Sign1 vectors under {cose}"
    return files


def test_cose_sign1_vectors(vectors_dir: Path) -> None:
    """Every passing Sign1 example verifies (Ed25519, Ed448, ES256/384/512, external AAD,
    untagged, empty protected); every fail-* example is rejected."""
    passed = rejected = 0
    for path in _sign1_vectors(vectors_dir):
        v = json.loads(path.read_text())
        sign0 = v["input"]["sign0"]
        message = bytes.fromhex(v["output"]["cbor"])
        aad = bytes.fromhex(sign0.get("external", ""))
        pub = _public_key(sign0["key"])
        if v.get("fail"):
            with pytest.raises(wire.WireError):
                wire.verify_sign1(message, pub, aad)
            rejected += 1
        else:
            payload = wire.verify_sign1(message, pub, aad)
            expected = v["input"].get("plaintext_hex") or v["input"]["plaintext"].encode().hex()
            assert payload.hex() == expected.lower(), path.name
            # the Sig_structure we build is byte for byte the vector's ToBeSign
            parsed = wire.parse_sign1(message)
            assert parsed.to_be_signed(aad).hex() == v["intermediates"]["ToBeSign_hex"].lower()
            passed += 1
    assert passed >= 9 and rejected >= 6


def test_ed25519_sign1_reproduces_signature(vectors_dir: Path) -> None:
    """Ed25519 is deterministic: signing eddsa-sig-01's Sig_structure with its key gives the
    vector's signature exactly, and a wrong key is rejected."""
    v = json.loads((vectors_dir / "cose/eddsa-examples/eddsa-sig-01.json").read_text())
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["input"]["sign0"]["key"]["d_hex"]))
    tbs = bytes.fromhex(v["intermediates"]["ToBeSign_hex"])
    parsed = wire.parse_sign1(bytes.fromhex(v["output"]["cbor"]), require_tag=True)
    assert key.sign(tbs) == parsed.signature
    other = wire.public_key_bytes(Ed25519PrivateKey.generate())
    with pytest.raises(wire.BadSignature):
        wire.verify_sign1(bytes.fromhex(v["output"]["cbor"]), other)


def _senml_json_to_cbor_labels(records: list[dict[str, Any]]) -> list[dict[int, Any]]:
    labels = {
        "bn": -2,
        "bt": -3,
        "bu": -4,
        "bv": -5,
        "bs": -6,
        "bver": -1,
        "n": 0,
        "u": 1,
        "v": 2,
        "vs": 3,
        "vb": 4,
        "s": 5,
        "t": 6,
        "ut": 7,
        "vd": 8,
    }
    return [{labels[k]: v for k, v in r.items()} for r in records]


def test_senml_cbor_example_matches_json(vectors_dir: Path) -> None:
    """RFC 8428 §6: the CBOR example decodes to the same pack as its JSON form, and our
    deterministic encoder gives a byte string that decodes to that pack too."""
    ex = vectors_dir / "senml/examples"
    from_cbor = cbor2.loads((ex / "ex3.gen.cbor").read_bytes())
    dump = "".join(
        "".join(line.split("|")[0].split()[1:])
        for line in (ex / "ex3.gen.cbor.hex").read_text().splitlines()
    )
    assert bytes.fromhex(dump) == (ex / "ex3.gen.cbor").read_bytes()
    from_json = _senml_json_to_cbor_labels(json.loads((ex / "ex3.json").read_text()))
    assert [dict(r) for r in from_cbor] == from_json
    ours = wire.encode_deterministic(from_json)
    assert [dict(r) for r in cbor2.loads(ours)] == from_json
    assert wire.decode_deterministic(ours) == from_json


def test_payload_is_valid_senml(vectors_dir: Path) -> None:
    """Our payload's pack uses only RFC 8428 labels, with bn/bt on the first record, and resolves
    (base name + name, base time + time) to the readings we put in."""
    readings = (
        wire.Reading("soil1", "soil_moisture", "/", 0.31, 1_700_000_000.0),
        wire.Reading("soil1", "soil_temperature", "Cel", 18.5, 1_700_000_000.5),
        wire.Reading("air", "air_humidity", "%RH", None, 1_700_000_001.0, "timeout"),
    )
    obj = wire.Payload("gw-0011223344556677", 7, 2, readings).to_obj()
    cddl = (vectors_dir / "senml/cddl/senml-cbor.cddl").read_text()
    for label in (-2, -3, 0, 1, 2, 3, 6):
        assert f"= {label}" in cddl.replace("  ", " ") or f"={label}" in cddl
    pack = obj["e"]
    assert pack[0][-2] == "urn:dev:fp:gw-0011223344556677:"
    resolved = [(pack[0][-2] + r[0], pack[0][-3] + r.get(6, 0)) for r in pack]
    assert resolved[1] == ("urn:dev:fp:gw-0011223344556677:soil1/soil_temperature", 1_700_000_000.5)
    assert pack[2][3] == "missing:timeout"


def _appendix_a(vectors_dir: Path) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(
        (vectors_dir / "cbor/appendix_a.pr5-rfc8949.json").read_text()
    )
    return vectors


def test_cbor_appendix_a_deterministic_encoding(vectors_dir: Path) -> None:
    """RFC 8949 Appendix A: every round-trippable item whose JSON form we can represent is
    re-encoded by our deterministic encoder to exactly the vector's bytes."""
    checked = 0
    for v in _appendix_a(vectors_dir):
        if not v["roundtrip"] or "decoded" not in v:
            continue
        data = bytes.fromhex(v["hex"])
        value = cbor2.loads(data)
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            continue
        if isinstance(value, cbor2.CBORTag) or not isinstance(
            value, int | float | str | bytes | tuple | list | Mapping | bool | None
        ):
            continue
        assert wire.encode_deterministic(cbor_fmt._thaw(value)) == data, v["hex"]
        checked += 1
    assert checked >= 45


def test_cbor_failure_vectors_rejected(vectors_dir: Path) -> None:
    """Not-well-formed CBOR (the failure list) never decodes as a payload or message."""
    fails = json.loads((vectors_dir / "cbor/fail.pr5.json").read_text())
    assert len(fails) > 20
    for item in fails:
        data = bytes.fromhex(item["hex"])
        with pytest.raises(wire.MalformedMessage):
            wire.decode_deterministic(data)
        with pytest.raises(wire.WireError):
            wire.parse_sign1(data)


def test_cbor_wg_bad_encodings_rejected(vectors_dir: Path) -> None:
    """cbor-wg's invalid-encoding tests: each fails to decode strictly."""
    suite = cbor2.loads((vectors_dir / "cbor/cbor-wg/tests/rfc8949/bad.cbor").read_bytes())
    tests = suite["tests"]
    assert tests
    for t in tests:
        with pytest.raises(wire.MalformedMessage):
            wire.decode_deterministic(bytes(t["encoded"]))


def test_non_deterministic_encodings_rejected() -> None:
    """The same value in a longer head, an indefinite length, or with unsorted keys is refused."""
    for bad in ("1817", "5f4101ff", "a2616201616101", "fb3ff8000000000000", "a201020103"):
        with pytest.raises(wire.MalformedMessage):
            wire.decode_deterministic(bytes.fromhex(bad))
