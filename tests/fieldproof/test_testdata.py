"""The known-answer files in testdata/: our own code reads every one back to the values in its
``.expected.json`` sidecar, and running testdata/generate.py again gives the same bytes (so the
files are what the generator says they are, and the generator is deterministic).

Other people's code reads the same files in tests/integration/test_interop_go.py and
test_interop_js.py."""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor import thor
from anchor.logstore import MerkleLog, SqliteLogStore
from fieldproof.formats import merkle
from fieldproof.formats.anchor_record import AnchorRecord
from fieldproof.formats.bundle import decode_bundle
from fieldproof.formats.checkpoint import open_checkpoint
from fieldproof.formats.enrollment import check_token_mac, parse_request, parse_token
from fieldproof.formats.note import Ed25519Verifier
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.formats.seal import (
    SealAccumulator,
    decode_farm_record,
    decode_seal,
    verify_farm_record,
)
from fieldproof.tls import common_name
from fieldproof.wire import (
    decode_message,
    decode_receipt,
    encode_receipt,
    gateway_id_for,
    parse_sign1,
    public_key_bytes,
    sig_structure,
)
from inspector.verify import verify_bundle

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"
#: files in testdata/ that the generator does not write
HAND_WRITTEN = {"README.md", "generate.py"}
THOR_NAMES = ("legacy", "dynamic-fee", "delegated")


@pytest.fixture(scope="module")
def td() -> Path:
    if not (TESTDATA / "generate.py").is_file():
        pytest.fail(f"known-answer files not found at {TESTDATA}")
    return TESTDATA


def load(td: Path, rel: str) -> Any:
    return json.loads((td / rel).read_text())


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


# ------------------------------------------------------------------------------ determinism


def test_regenerating_gives_identical_bytes(td: Path, tmp_path: Path) -> None:
    out = tmp_path / "again"
    subprocess.run([sys.executable, str(td / "generate.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    fresh = files_under(out)
    committed = {k: v for k, v in files_under(td).items() if k not in HAND_WRITTEN}
    assert len(fresh) > 30
    assert sorted(fresh) == sorted(committed), "run testdata/generate.py and commit what changed"
    changed = [k for k in fresh if fresh[k] != committed[k]]
    assert not changed, f"regenerated files differ: {changed}; run testdata/generate.py"


def test_readme_describes_every_file(td: Path) -> None:
    """Every generated file is named in the README's table (`dir/file`, `dir/*.suffix` or
    `dir/` for a folder of entries)."""
    names = re.findall(r"`([^`\s]+)`", (td / "README.md").read_text())
    generated = [k for k in files_under(td) if k not in HAND_WRITTEN]
    missing = [
        k for k in generated
        if not any(fnmatch.fnmatchcase(k, n) or (n.endswith("/") and k.startswith(n))
                   for n in names)
    ]
    assert not missing, f"testdata/README.md does not describe {missing}"


# ------------------------------------------------------------------------------ keys


def test_keys_are_derived_from_the_documented_strings(td: Path) -> None:
    keys = load(td, "keys.expected.json")
    for name in ("gateway-1", "gateway-2"):
        text = keys["seeds"][name].removeprefix("sha256(").removesuffix(")")
        seed = hashlib.sha256(text.strip("'").encode()).digest()
        pub = public_key_bytes(Ed25519PrivateKey.from_private_bytes(seed))
        assert pub.hex() == keys[name]["public_key"]
        assert gateway_id_for(pub) == keys[name]["gateway"]
    for name in ("thor-origin", "thor-sponsor"):
        text = keys["seeds"][name].removeprefix("sha256(").removesuffix(")").strip("'")
        secret = thor.SecretKey(hashlib.sha256(text.encode()).digest())
        assert secret.address_hex == keys[name]["address"]
    log_seed = hashlib.sha256(b"fieldproof testdata log key").digest()
    pub = public_key_bytes(Ed25519PrivateKey.from_private_bytes(log_seed))
    assert Ed25519Verifier(keys["log"]["origin"], pub).vkey == keys["log"]["vkey"]


# ------------------------------------------------------------------------------ wire


def test_message_decodes_to_its_sidecar(td: Path) -> None:
    exp = load(td, "message/message.expected.json")
    msg = (td / "message/message.cose").read_bytes()
    pub = bytes.fromhex(exp["public_key"])
    payload = decode_message(msg, pub)
    s1 = parse_sign1(msg)
    assert s1.protected_bytes.hex() == exp["protected"]
    assert s1.payload.hex() == exp["payload"]
    assert s1.signature.hex() == exp["signature"]
    assert sig_structure(s1.protected_bytes, s1.payload).hex() == exp["sig_structure"]
    assert s1.kid == exp["kid"].encode() and s1.alg == exp["alg"] == -8
    dec = exp["decoded_payload"]
    assert (payload.gateway, payload.seq, payload.boot) == (dec["gw"], dec["seq"], dec["boot"])
    assert payload.gateway == gateway_id_for(pub) == exp["gateway"]
    got = []
    for r in payload.readings:
        item: dict[str, Any] = {"name": r.name, "sensor": r.sensor, "quantity": r.quantity,
                                "unit": r.unit, "time": r.time}
        item.update({"missing": r.missing_reason} if r.value is None else {"value": r.value})
        got.append(item)
    assert got == dec["readings"]
    assert any("missing" in r for r in got) and len({r["time"] for r in got}) == 2
    assert hashlib.sha256(msg).hexdigest() == exp["sha256"]
    assert merkle.leaf_hash(msg).hex() == exp["leaf_hash"]
    # the same bytes are log entry 2
    assert (td / f"log/entries/{exp['log_index']:02d}.cbor").read_bytes() == msg


def test_receipt_decodes_to_its_sidecar(td: Path) -> None:
    exp = load(td, "receipt/receipt.expected.json")
    raw = (td / "receipt/receipt.json").read_bytes()
    assert decode_receipt(raw) == (exp["collector"], exp["seqs"])
    assert json.loads(raw)["s"] == exp["ranges"]
    assert encode_receipt(exp["collector"], exp["seqs"]) == raw


# ------------------------------------------------------------------------------ the log


def test_log_entries_roots_and_checkpoints(td: Path) -> None:
    exp = load(td, "log/log.expected.json")
    entries = [(td / "log" / e["file"]).read_bytes() for e in exp["entries"]]
    assert len(entries) == exp["size"] == 13
    for e, raw in zip(exp["entries"], entries, strict=True):
        assert hashlib.sha256(raw).hexdigest() == e["sha256"]
        assert merkle.leaf_hash(raw).hex() == e["leaf_hash"]
        event = parse_registry_event(raw)
        assert (event is not None) == (e["kind"] == "registry")
        if event is not None:
            assert (event["event"], event["gw"]) == (e["event"], e["gateway"])
    # the reference tree, and the storage path the collector uses, give the same roots
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA synchronous=FULL")
    log = MerkleLog(SqliteLogStore(conn, commit_appends=True))
    log.append(entries)
    for size in range(len(entries) + 1):
        want = exp["roots"][str(size)]
        assert merkle.root_from_leaves(entries[:size]).hex() == want
        assert log.root(size).hex() == want
    vkey = (td / "log/vkey.txt").read_text()
    assert vkey.endswith("\n") and vkey.strip() == exp["vkey"]
    verifier = Ed25519Verifier.from_vkey(exp["vkey"])
    assert f"{verifier.key_id:08x}" == exp["key_id"]
    for c in exp["checkpoints"]:
        note = (td / "log" / c["file"]).read_bytes()
        cp = open_checkpoint(note, verifier, origin=exp["origin"])
        assert (cp.size, cp.root_hash.hex()) == (c["size"], c["root_hash"])
        assert base64.b64encode(cp.root_hash).decode() == c["root_hash_base64"]
        assert cp.body().decode() == c["body"]
        assert note.startswith(cp.body() + "\n— ".encode())
    conn.close()


def test_inclusion_and_consistency_proofs(td: Path) -> None:
    entries = [(td / "log/entries" / f"{i:02d}.cbor").read_bytes() for i in range(13)]
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA synchronous=FULL")
    log = MerkleLog(SqliteLogStore(conn, commit_appends=True))
    log.append(entries)
    inc = load(td, "log/inclusion.json")["proofs"]
    assert sum(p["valid"] for p in inc) == 13 + 5 + 8 and sum(not p["valid"] for p in inc) == 5
    for p in inc:
        proof = [bytes.fromhex(h) for h in p["proof"]]
        args = (bytes.fromhex(p["leaf_hash"]), p["index"], p["tree_size"], proof,
                bytes.fromhex(p["root_hash"]))
        if p["valid"]:
            merkle.verify_inclusion(*args)
            assert log.inclusion_proof(p["index"], p["tree_size"]) == proof
            assert merkle.leaf_hash(entries[p["index"]]).hex() == p["leaf_hash"]
        else:
            with pytest.raises(merkle.ProofError):
                merkle.verify_inclusion(*args)
    cons = load(td, "log/consistency.json")["proofs"]
    assert sum(p["valid"] for p in cons) == 8 and sum(not p["valid"] for p in cons) == 4
    for p in cons:
        proof = [bytes.fromhex(h) for h in p["proof"]]
        args2 = (p["size1"], p["size2"], proof, bytes.fromhex(p["root1"]),
                 bytes.fromhex(p["root2"]))
        if p["valid"]:
            merkle.verify_consistency(*args2)
            assert log.consistency_proof(p["size1"], p["size2"]) == proof
        else:
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(*args2)
    conn.close()


# ------------------------------------------------------------------------------ anchors


def test_anchor_record(td: Path) -> None:
    exp = load(td, "anchor-record/record.expected.json")
    raw = (td / "anchor-record/record.bin").read_bytes()
    assert len(raw) == exp["length"] == 78 and raw.hex() == exp["hex"]
    assert raw[:4] == exp["magic"].encode() == b"FPAN"
    rec = AnchorRecord.decode(raw)
    assert (rec.tree_size, rec.root_hash.hex(), rec.origin_hash.hex()) == (
        exp["tree_size"], exp["root_hash"], exp["origin_hash"])
    assert rec.matches(exp["origin"])
    vkey = (td / "log/vkey.txt").read_text().strip()
    cp = open_checkpoint((td / exp["checkpoint"]).read_bytes(), Ed25519Verifier.from_vkey(vkey))
    assert AnchorRecord.for_checkpoint(cp.origin, cp.size, cp.root_hash).encode() == raw


@pytest.mark.parametrize("name", THOR_NAMES)
def test_thor_transaction(td: Path, name: str) -> None:
    exp = load(td, f"thor/{name}.expected.json")
    raw = (td / f"thor/{name}.tx").read_bytes()
    assert raw.hex() == exp["raw"]
    tx = thor.decode(raw)
    assert tx.encode() == raw
    assert tx.signing_payload().hex() == exp["unsigned"]
    assert "0x" + tx.signing_hash().hex() == exp["signing_hash"]
    assert tx.signature.hex() == exp["signature"]
    assert (tx.tx_type, tx.chain_tag, "0x" + tx.block_ref.hex(), tx.expiration) == (
        exp["type"], exp["chain_tag"], exp["block_ref"], exp["expiration"])
    assert (tx.gas, tx.nonce, tx.features, tx.depends_on) == (
        exp["gas"], int(exp["nonce"]), exp["features"], exp["depends_on"])
    assert tx.gas == tx.intrinsic_gas()
    if tx.tx_type == thor.TYPE_LEGACY:
        assert tx.gas_price_coef == exp["gas_price_coef"]
    else:
        assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas) == (
            int(exp["max_fee_per_gas"]), int(exp["max_priority_fee_per_gas"]))
    assert [c.to_body() for c in tx.clauses] == [
        {"to": c["to"], "value": int(c["value"]), "data": c["data"]} for c in exp["clauses"]]
    assert "0x" + tx.origin().hex() == exp["origin"]
    assert tx.id_hex() == exp["id"]
    assert tx.delegated == exp["delegated"]
    delegator = tx.delegator()
    assert (None if delegator is None else "0x" + delegator.hex()) == exp["delegator"]
    assert tx.has_low_s()
    assert tx.clauses[0].to == tx.origin()  # the anchoring account sends to itself
    rec = AnchorRecord.decode(tx.clauses[0].data)
    want = exp["record"]
    assert (rec.tree_size, rec.root_hash.hex(), rec.origin_hash.hex()) == (
        want["tree_size"], want["root_hash"], want["origin_hash"])
    assert rec.matches(want["origin"])


def test_thor_transactions_cover_the_three_kinds(td: Path) -> None:
    kinds = {(load(td, f"thor/{n}.expected.json")["type"],
              load(td, f"thor/{n}.expected.json")["delegated"]) for n in THOR_NAMES}
    assert kinds == {(0, False), (0x51, False), (0x51, True)}


# ------------------------------------------------------------------------------ bundle


def test_bundle_decodes_and_verifies(td: Path) -> None:
    exp = load(td, "bundle/bundle.expected.json")
    data = (td / "bundle/bundle.fpb").read_bytes()
    b = decode_bundle(data)
    assert (b.origin, b.vkey, b.created, b.version) == (
        exp["origin"], exp["vkey"], exp["created"], exp["version"])
    assert (b.scope.farm, b.scope.field, b.scope.gateway, b.scope.start, b.scope.end) == (
        exp["scope"]["farm"], exp["scope"]["field"], exp["scope"]["gateway"],
        exp["scope"]["from"], exp["scope"]["to"])
    assert len(b.checkpoints) == len(exp["checkpoints"])
    for c, want in zip(b.checkpoints, exp["checkpoints"], strict=True):
        assert c.note == (td / want["note_file"]).read_bytes()
        assert [a.to_obj() for a in c.anchors] == want["anchors"]
    thor_ids = {load(td, f"thor/{n}.expected.json")["id"] for n in THOR_NAMES}
    assert {a.tx for c in b.checkpoints for a in c.anchors} == thor_ids
    assert [[h.hex() for h in p] for p in b.consistency] == [c["proof"] for c in exp["consistency"]]
    assert {(h["begin"], h["end"]): h["hash"] for h in exp["hashes"]} == {
        k: v.hex() for k, v in b.hashes.items()}
    assert [e.index for e in b.registry] == [r["index"] for r in exp["registry"]]
    assert [(e.index, hashlib.sha256(e.data).hexdigest()) for e in b.messages] == [
        (m["index"], m["sha256"]) for m in exp["messages"]]
    for e in (*b.registry, *b.messages):
        assert e.data == (td / f"log/entries/{e.index:02d}.cbor").read_bytes()
    assert list(b.notes) == exp["notes"]

    result = verify_bundle(data, nodes=[], chain=None, offline=True,
                           log_key=(td / "log/vkey.txt").read_text(), now=b.created)
    v = exp["verification"]
    assert result.codes("error") == set(v["errors"])
    # offline, the only thing left unchecked is the chain (the blocks are fictional); a
    # verifier that knows bundle format versions 2 and 3 also says that this version 1 bundle
    # carries no signed completeness claim and no seal
    assert result.codes() - {"completeness_unproven", "completeness_not_provable"} == {
        "anchors_not_checked"}, result.findings
    assert result.verdict == "warn" and result.log_key_pinned
    assert len(result.messages) == result.total_messages == v["messages_verified"]
    assert result.registry_events == len(exp["registry"])
    assert len(result.checkpoints) == v["checkpoints_valid"]
    by_gw = {g.gateway: g for g in result.gateways}
    assert set(by_gw) == set(exp["gateways"])
    for gw, g in exp["gateways"].items():
        assert by_gw[gw].verified_messages == g["messages"]
        assert (by_gw[gw].farm, by_gw[gw].field, by_gw[gw].public_key) == (
            g["farm"], g["field"], g["public_key"])


# ------------------------------------------------------------------------------ enrollment


def test_enrollment_request(td: Path) -> None:
    exp = load(td, "enrollment/request.expected.json")
    raw = (td / "enrollment/request.cose").read_bytes()
    body = exp["body"]
    req = parse_request(raw, now=body["time"])
    assert (req.gateway, req.public_key.hex(), req.farm, req.field, req.location,
            req.installer, req.sensors, req.time, req.token_id) == (
        exp["gateway"], exp["public_key"], body["farm"], body["field"], body["location"],
        body["installer"], body["sensors"], body["time"], body["token"])
    assert req.body["nonce"].hex() == body["nonce"]
    assert req.body["csr"].hex() == body["csr"]
    assert common_name(req.csr.subject) == exp["csr_common_name"] == req.gateway
    assert req.csr.is_signature_valid
    token_id, mac_key = parse_token(exp["token"])
    assert (token_id, mac_key.hex()) == (body["token"], exp["token_mac_key"])
    assert check_token_mac(req, mac_key)
    assert not check_token_mac(req, bytes(32))
    s1 = parse_sign1(raw)
    assert (s1.protected_bytes.hex(), s1.payload.hex(), s1.signature.hex()) == (
        exp["protected"], exp["payload"], exp["signature"])
    # log entry 0 is the collector's enroll event carrying this very request
    event = parse_registry_event((td / "log/entries/00.cbor").read_bytes())
    assert event is not None and event["request"] == raw and event["pk"] == req.public_key


# ------------------------------------------------------------------------------ seal


def test_seal_reads_back_and_is_what_the_log_implies(td: Path) -> None:
    """The seal is a function of the entries before it: recomputing it from the log's files
    gives the same bytes; its records are proven into its root, and it into the checkpoint."""
    exp = load(td, "seal/seal.expected.json")
    log = [(td / f"log/entries/{i:02d}.cbor").read_bytes() for i in range(13)]
    log.append((td / "seal/entry-13.cbor").read_bytes())
    entry = (td / "seal/seal.cbor").read_bytes()
    acc = SealAccumulator()
    acc.add(log)
    again, records = acc.seal()
    assert again.encode() == entry
    seal = decode_seal(entry)
    want = exp["seal"]
    assert (seal.size, seal.farms, seal.root.hex()) == (want["size"], want["farms"], want["root"])
    for rec_exp, raw in zip(exp["records"], records, strict=True):
        assert (td / "seal" / rec_exp["file"]).read_bytes() == raw
        rec = decode_farm_record(raw)
        assert rec.farm == rec_exp["farm"]
        assert [[g.gateway, list(g.fields), g.first, g.latest, g.messages, g.registry]
                for g in rec.gateways] == [
            [g["gateway"], g["fields"], g["first"], g["latest"], g["messages"], g["registry"]]
            for g in rec_exp["gateways"]]
        verify_farm_record(raw, rec_exp["position"], seal,
                           [bytes.fromhex(h) for h in rec_exp["proof"]])
    cp_exp = exp["checkpoint"]
    vkey = (td / "log/vkey.txt").read_text().strip()
    cp = open_checkpoint((td / "seal" / cp_exp["file"]).read_bytes(),
                         Ed25519Verifier.from_vkey(vkey))
    assert (cp.size, cp.root_hash.hex()) == (cp_exp["size"], cp_exp["root_hash"]) == (
        len(log) + 1, merkle.root_from_leaves([*log, entry]).hex())
    merkle.verify_inclusion(merkle.leaf_hash(entry), seal.size, cp.size,
                            [bytes.fromhex(h) for h in cp_exp["seal_inclusion_proof"]],
                            cp.root_hash)
