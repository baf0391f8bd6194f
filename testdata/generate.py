#!/usr/bin/env python3
"""Generate fieldproof's known-answer files (testdata/README.md says what each one is).

    .venv/bin/python testdata/generate.py            # rewrite testdata/ in place
    .venv/bin/python testdata/generate.py --out DIR  # write the same files under DIR

Deterministic: every key is derived from a fixed string (``sha256(b"fieldproof testdata …")``),
every timestamp, nonce and random-looking value is fixed, and every signature scheme used is
deterministic (Ed25519; RFC 6979 ECDSA for secp256k1 and the P-256 CSR), so two runs give
byte-identical files. tests/fieldproof/test_testdata.py checks that, and that our own code reads
every file back to the values in its ``.expected.json`` sidecar; tests/interop/ checks the same
files with other people's libraries (Go: x/mod sumdb/note and tlog, transparency-dev,
fxamacker/cbor; JavaScript: @vechain/sdk-core).

The keys are test keys made from public strings: they protect nothing.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import itertools
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from anchor import thor  # noqa: E402
from fieldproof.formats import enrollment, merkle  # noqa: E402
from fieldproof.formats.anchor_record import MAGIC, VERSION, AnchorRecord  # noqa: E402
from fieldproof.formats.bundle import (  # noqa: E402
    AnchorRef,
    Bundle,
    BundleCheckpoint,
    Entry,
    Scope,
    encode_bundle,
)
from fieldproof.formats.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from fieldproof.formats.note import Ed25519Signer  # noqa: E402
from fieldproof.formats.registry_event import registry_event  # noqa: E402
from fieldproof.formats.seal import (  # noqa: E402
    SealAccumulator,
    decode_farm_record,
    farm_proofs,
)
from fieldproof.tls import common_name  # noqa: E402
from fieldproof.wire import (  # noqa: E402
    Payload,
    Reading,
    encode_message,
    encode_receipt,
    gateway_id_for,
    parse_sign1,
    public_key_bytes,
    sig_structure,
)

# ---------------------------------------------------------------------------------- fixed values

#: the log's origin and key name
ORIGIN = "fieldproof.example/log/testdata"
#: 2025-12-01T00:00:00Z: the first message's sample time
T0 = 1764547200.0
COLLECTOR_ID = "collector-testdata"
#: checkpoints of the log, and so of the bundle (sizes)
CHECKPOINT_SIZES = (5, 8, 13)
#: consistency proofs written to log/consistency.json (old size, new size)
CONSISTENCY_PAIRS = ((5, 8), (8, 13), (5, 13), (1, 13), (3, 7), (4, 13), (7, 8), (12, 13))
#: a fictional Thor dev chain (no public network has it): chain tag = last byte
THOR_CHAIN_TAG = 0xF6
THOR_GENESIS_TIME = int(T0)  # block n at T0 + 10 n s: every anchor after the samples it covers
SEED_STRINGS = {
    "gateway-1": "fieldproof testdata gateway 1",
    "gateway-2": "fieldproof testdata gateway 2",
    "gateway-1-tls": "fieldproof testdata gateway 1 tls",
    "log": "fieldproof testdata log key",
    "thor-origin": "fieldproof testdata thor origin",
    "thor-sponsor": "fieldproof testdata thor sponsor",
}


def sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def seed(name: str) -> bytes:
    return sha256(SEED_STRINGS[name])


def ed25519_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed(name))


def p256_key(name: str) -> ec.EllipticCurvePrivateKey:
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    return ec.derive_private_key(int.from_bytes(seed(name), "big") % (n - 1) + 1, ec.SECP256R1())


def hx(b: bytes) -> str:
    return b.hex()


def hx0(b: bytes) -> str:
    return "0x" + b.hex()


# ---------------------------------------------------------------------------------- output


class Out:
    """Collects files; writes them at the end (so a failure leaves the old set intact)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def bytes(self, rel: str, data: bytes) -> None:
        if rel in self.files:
            raise ValueError(f"{rel} written twice")
        self.files[rel] = data

    def json(self, rel: str, obj: Any) -> None:
        self.bytes(rel, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())

    def write(self, root: Path) -> None:
        for rel, data in sorted(self.files.items()):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)


# ---------------------------------------------------------------------------------- pieces


class _FixedSecrets:
    """Stands in for the ``secrets`` module inside fieldproof.formats.enrollment, so the
    request's 16-byte nonce is a fixed value instead of a random one."""

    def __init__(self, nonce: bytes) -> None:
        self.nonce = nonce

    def token_bytes(self, n: int) -> bytes:
        assert n == len(self.nonce)
        return self.nonce


@contextmanager
def fixed_nonce(nonce: bytes) -> Iterator[None]:
    with mock.patch.object(enrollment, "secrets", _FixedSecrets(nonce)):
        yield


def readings_json(p: Payload) -> list[dict[str, Any]]:
    out = []
    for r in p.readings:
        item: dict[str, Any] = {"name": r.name, "sensor": r.sensor, "quantity": r.quantity,
                                "unit": r.unit, "time": r.time}
        if r.value is None:
            item["missing"] = r.missing_reason
        else:
            item["value"] = r.value
        out.append(item)
    return out


def gateway_message(key: Ed25519PrivateKey, seq: int, t: float, k: int) -> tuple[bytes, Payload]:
    """One message as a gateway makes it: three readings, the third missing every fourth
    message and two seconds after the others (a SenML time offset)."""
    gw = gateway_id_for(public_key_bytes(key))
    third = (Reading("station", "air_humidity", "%RH", None, t + 2.0, "checksum")
             if k % 4 == 0 else Reading("station", "air_humidity", "%RH", 61.5 + k, t + 2.0))
    readings = (
        Reading("station", "soil_moisture", "/", round(0.31 + 0.01 * k, 4), t),
        Reading("station", "soil_temperature", "Cel", 18.5 + 0.25 * k, t),
        third,
    )
    payload = Payload(gw, seq, 3, readings)
    return encode_message(payload, key), payload


def message_sidecar(msg: bytes, payload: Payload, pub: bytes) -> dict[str, Any]:
    s1 = parse_sign1(msg)
    return {
        "gateway": payload.gateway,
        "public_key": hx(pub),
        "kid": s1.kid.decode() if s1.kid else None,
        "alg": s1.alg,
        "protected": hx(s1.protected_bytes),
        "payload": hx(s1.payload),
        "signature": hx(s1.signature),
        "sig_structure": hx(sig_structure(s1.protected_bytes, s1.payload)),
        "decoded_payload": {
            "v": 1,
            "gw": payload.gateway,
            "seq": payload.seq,
            "boot": payload.boot,
            "readings": readings_json(payload),
        },
        "sha256": hx(hashlib.sha256(msg).digest()),
        "leaf_hash": hx(merkle.leaf_hash(msg)),
    }


# ---------------------------------------------------------------------------------- main parts


def build(out: Out) -> None:
    gw1_key, gw2_key = ed25519_key("gateway-1"), ed25519_key("gateway-2")
    gw1_pub, gw2_pub = public_key_bytes(gw1_key), public_key_bytes(gw2_key)
    gw1, gw2 = gateway_id_for(gw1_pub), gateway_id_for(gw2_pub)
    log_signer = Ed25519Signer(ORIGIN, ed25519_key("log"))
    vkey = log_signer.verifier().vkey
    origin_secret = thor.SecretKey(seed("thor-origin"))
    sponsor_secret = thor.SecretKey(seed("thor-sponsor"))

    out.json("keys.expected.json", {
        "comment": "Test keys: each private key is SHA-256 of the string given (an Ed25519 "
                   "seed, a secp256k1 scalar; the P-256 scalar is that number mod (n-1), plus "
                   "1); they protect nothing.",
        "seeds": {k: f"sha256({v!r})" for k, v in SEED_STRINGS.items()},
        "gateway-1": {"gateway": gw1, "public_key": hx(gw1_pub)},
        "gateway-2": {"gateway": gw2, "public_key": hx(gw2_pub)},
        "log": {"origin": ORIGIN, "key_id": f"{log_signer.key_id:08x}", "vkey": vkey,
                "public_key": hx(log_signer.verifier().public_key)},
        "thor-origin": {"address": origin_secret.address_hex},
        "thor-sponsor": {"address": sponsor_secret.address_hex},
    })

    # -- enrollment request (gateway 1), with a one-time token
    token_raw = hashlib.sha256(b"fieldproof testdata enrollment token").digest()
    token_secret = base64.b32encode(token_raw[4:24]).decode().lower()
    token = f"fpe1.{token_raw[:4].hex()}.{token_secret}"
    token_id, mac_key = enrollment.parse_token(token)
    tls_key = p256_key("gateway-1-tls")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gw1)]))
        .sign(tls_key, hashes.SHA256(), ecdsa_deterministic=True)
    )
    nonce = hashlib.sha256(b"fieldproof testdata enrollment nonce").digest()[:16]
    sensors: list[dict[str, Any]] = [
        {"name": "station", "kind": "modbus_soil", "config": {"port": "/dev/ttyUSB0", "unit": 1}},
    ]
    request_time = T0 - 3600.0
    with fixed_nonce(nonce):
        request = enrollment.build_request(
            gw1_key, csr, farm="farm-a", field="north", location="45.07,7.69",
            installer="Ana (tech 7)", sensors=sensors, now=request_time, token=token,
        )
    req_s1 = parse_sign1(request)
    out.bytes("enrollment/request.cose", request)
    out.json("enrollment/request.expected.json", {
        "spec": "docs/enrollment.md (Enrollment request)",
        "gateway": gw1,
        "public_key": hx(gw1_pub),
        "kid": gw1,
        "protected": hx(req_s1.protected_bytes),
        "payload": hx(req_s1.payload),
        "signature": hx(req_s1.signature),
        "body": {
            "t": enrollment.REQUEST_TYPE, "gw": gw1, "pk": hx(gw1_pub), "farm": "farm-a",
            "field": "north", "location": "45.07,7.69", "installer": "Ana (tech 7)",
            "sensors": sensors, "time": request_time, "nonce": hx(nonce),
            "csr": hx(csr.public_bytes(Encoding.DER)), "token": token_id,
        },
        "csr_common_name": common_name(csr.subject),
        "token": token,
        "token_mac_key": hx(mac_key),
        "tmac_covers": "deterministic CBOR of the body without tmac",
    })

    # -- the log: two enrollments, then eleven messages of the two gateways
    entries: list[bytes] = []
    kinds: list[dict[str, Any]] = []
    entries.append(enrollment.registry_entry(
        "enroll", gw1, T0 - 3000.0, pk=gw1_pub, farm="farm-a", field="north",
        location="45.07,7.69", installer="Ana (tech 7)", sensors=sensors,
        approved=f"token:{token_id}", request=request,
    ))
    kinds.append({"kind": "registry", "event": "enroll", "gateway": gw1,
                  "embeds": "enrollment/request.cose"})
    entries.append(registry_event("enroll", gw2, public_key=gw2_pub, farm="farm-a",
                                  field="south", location="45.08,7.70", at=T0 - 2400.0))
    kinds.append({"kind": "registry", "event": "enroll", "gateway": gw2})
    messages: list[tuple[bytes, Payload, bytes]] = []
    seqs = {gw1: 0, gw2: 0}
    for k in range(11):
        key, pub = (gw1_key, gw1_pub) if k % 2 == 0 else (gw2_key, gw2_pub)
        gw = gateway_id_for(pub)
        seqs[gw] += 1
        t = T0 + 60.0 * (k // 2) + (30.0 if k % 2 else 0.0)
        msg, payload = gateway_message(key, seqs[gw], t, k)
        messages.append((msg, payload, pub))
        entries.append(msg)
        kinds.append({"kind": "message", "gateway": gw, "seq": seqs[gw]})

    # the first message on its own, with everything a decoder should find in it
    first_msg, first_payload, _ = messages[0]
    out.bytes("message/message.cose", first_msg)
    out.json("message/message.expected.json", {
        "spec": "docs/wire-format.md",
        "log_index": 2,
        **message_sidecar(first_msg, first_payload, gw1_pub),
    })

    # -- receipt
    receipt_seqs = [1, 2, 3, 5, 6, 9]
    out.bytes("receipt/receipt.json", encode_receipt(COLLECTOR_ID, receipt_seqs))
    out.json("receipt/receipt.expected.json", {
        "spec": "docs/wire-format.md (Receipts)",
        "collector": COLLECTOR_ID,
        "seqs": receipt_seqs,
        "ranges": [[1, 3], [5, 6], [9, 9]],
    })

    n = len(entries)
    leaf_hashes = [merkle.leaf_hash(e) for e in entries]

    def root(size: int) -> bytes:
        return merkle.root_from_leaf_hashes(leaf_hashes[:size])

    for i, e in enumerate(entries):
        out.bytes(f"log/entries/{i:02d}.cbor", e)
    out.bytes("log/vkey.txt", (vkey + "\n").encode())
    notes: dict[int, bytes] = {}
    for size in CHECKPOINT_SIZES:
        notes[size] = sign_checkpoint(Checkpoint(ORIGIN, size, root(size)), log_signer)
        out.bytes(f"log/checkpoint-{size}.note", notes[size])
    out.json("log/log.expected.json", {
        "spec": "docs/evidence-log.md (RFC 9162 tree, C2SP signed-note + tlog-checkpoint)",
        "origin": ORIGIN,
        "vkey": vkey,
        "key_id": f"{log_signer.key_id:08x}",
        "size": n,
        "entries": [
            {"index": i, "file": f"entries/{i:02d}.cbor", **kinds[i],
             "sha256": hx(hashlib.sha256(e).digest()), "leaf_hash": hx(leaf_hashes[i])}
            for i, e in enumerate(entries)
        ],
        "roots": {str(s): hx(root(s)) for s in range(n + 1)},
        "checkpoints": [
            {"file": f"checkpoint-{s}.note", "size": s, "root_hash": hx(root(s)),
             "root_hash_base64": base64.b64encode(root(s)).decode(),
             "body": Checkpoint(ORIGIN, s, root(s)).body().decode(),
             "signature_line_key_id": f"{log_signer.key_id:08x}"}
            for s in CHECKPOINT_SIZES
        ],
    })

    # inclusion proofs: every entry into the full tree and into each checkpoint covering it,
    # then cases that must fail
    inclusion: list[dict[str, Any]] = []
    for size in (n, *CHECKPOINT_SIZES[:-1]):
        for i in range(size):
            inclusion.append({
                "index": i, "tree_size": size, "leaf_hash": hx(leaf_hashes[i]),
                "proof": [hx(h) for h in merkle.reference_inclusion_proof(entries[:size], i)],
                "root_hash": hx(root(size)), "valid": True,
            })
    good = next(c for c in inclusion if c["index"] == 3 and c["tree_size"] == n)
    flipped = bytearray(bytes.fromhex(good["proof"][1]))
    flipped[0] ^= 0x01
    inclusion += [
        {**good, "proof": [good["proof"][0], hx(bytes(flipped)), *good["proof"][2:]],
         "valid": False, "why": "one proof hash has a flipped bit"},
        {**good, "index": 2, "leaf_hash": good["leaf_hash"], "valid": False,
         "why": "right leaf and path, wrong index"},
        {**good, "proof": good["proof"][:-1], "valid": False, "why": "last hash missing"},
        {**good, "proof": [*good["proof"], good["proof"][0]], "valid": False,
         "why": "one hash too many"},
        {**good, "leaf_hash": hx(merkle.leaf_hash(entries[4])), "valid": False,
         "why": "another entry's leaf hash"},
    ]
    out.json("log/inclusion.json", {
        "spec": "RFC 9162 §2.1.3 (PATH, bottom-up); docs/evidence-log.md §2",
        "leaf_hash": "SHA-256(0x00 || entry)",
        "proofs": inclusion,
    })

    consistency: list[dict[str, Any]] = []
    for a, b in CONSISTENCY_PAIRS:
        consistency.append({
            "size1": a, "size2": b, "root1": hx(root(a)), "root2": hx(root(b)),
            "proof": [hx(h) for h in merkle.reference_consistency_proof(entries[:b], a)],
            "valid": True,
        })
    good_c = next(c for c in consistency if (c["size1"], c["size2"]) == (5, 13))
    bad = bytearray(bytes.fromhex(good_c["proof"][-1]))
    bad[31] ^= 0x80
    consistency += [
        {**good_c, "proof": [*good_c["proof"][:-1], hx(bytes(bad))], "valid": False,
         "why": "one proof hash has a flipped bit"},
        {**good_c, "root1": hx(root(6)), "valid": False, "why": "old root is of another size"},
        {**good_c, "proof": good_c["proof"][1:], "valid": False, "why": "first hash missing"},
        {**good_c, "size1": 6, "valid": False, "why": "proof is for another old size"},
    ]
    out.json("log/consistency.json", {
        "spec": "RFC 9162 §2.1.4 (PROOF/SUBPROOF); docs/evidence-log.md §2",
        "proofs": consistency,
    })

    # -- anchor record of the newest checkpoint
    record = AnchorRecord.for_checkpoint(ORIGIN, n, root(n))
    record_bytes = record.encode()
    out.bytes("anchor-record/record.bin", record_bytes)
    out.json("anchor-record/record.expected.json", {
        "spec": "docs/anchor-record.md §1",
        "length": len(record_bytes),
        "magic": MAGIC.decode(),
        "version": VERSION,
        "tree_size": n,
        "root_hash": hx(root(n)),
        "origin": ORIGIN,
        "origin_hash": hx(record.origin_hash),
        "checkpoint": f"log/checkpoint-{n}.note",
        "hex": hx(record_bytes),
    })

    # -- Thor anchor transactions, one per checkpoint
    genesis = b"\x00" * 4 + thor.blake2b256(b"fieldproof testdata genesis")[4:31] + bytes(
        [THOR_CHAIN_TAG])
    anchors: dict[int, AnchorRef] = {}
    variants = (
        ("legacy", CHECKPOINT_SIZES[0], thor.TYPE_LEGACY, False, 100),
        ("dynamic-fee", CHECKPOINT_SIZES[1], thor.TYPE_DYNAMIC_FEE, False, 200),
        ("delegated", CHECKPOINT_SIZES[2], thor.TYPE_DYNAMIC_FEE, True, 300),
    )
    for name, size, tx_type, delegated, ref_block in variants:
        rec = AnchorRecord.for_checkpoint(ORIGIN, size, root(size)).encode()
        clause = thor.Clause(origin_secret.address, 0, rec)
        block_ref = ref_block.to_bytes(4, "big") + hashlib.sha256(
            f"fieldproof testdata block {ref_block}".encode()).digest()[:4]
        tx = thor.Transaction(
            chain_tag=THOR_CHAIN_TAG,
            block_ref=block_ref,
            expiration=720,
            clauses=(clause,),
            gas=thor.intrinsic_gas([clause]),
            nonce=int.from_bytes(sha256(f"fieldproof testdata thor nonce {name}")[:8], "big"),
            tx_type=tx_type,
            gas_price_coef=128 if tx_type == thor.TYPE_LEGACY else 0,
            max_fee_per_gas=10_000_000_000_000 if tx_type == thor.TYPE_DYNAMIC_FEE else 0,
            max_priority_fee_per_gas=1_000_000_000 if tx_type == thor.TYPE_DYNAMIC_FEE else 0,
            features=thor.DELEGATION_FEATURE if delegated else 0,
        )
        signed = thor.sign_transaction(
            tx, origin_secret.secret_bytes(),
            sponsor_secret.secret_bytes() if delegated else None,
        )
        raw = signed.encode()
        out.bytes(f"thor/{name}.tx", raw)
        body: dict[str, Any] = {
            "spec": "docs/anchor-record.md §2 (VeChainThor transactions)",
            "file": f"{name}.tx",
            "raw": hx(raw),
            "type": tx_type,
            "chain_tag": THOR_CHAIN_TAG,
            "block_ref": hx0(block_ref),
            "expiration": 720,
            "clauses": [{"to": hx0(origin_secret.address), "value": "0", "data": hx0(rec)}],
        }
        if tx_type == thor.TYPE_LEGACY:
            body["gas_price_coef"] = tx.gas_price_coef
        else:
            body["max_fee_per_gas"] = str(tx.max_fee_per_gas)
            body["max_priority_fee_per_gas"] = str(tx.max_priority_fee_per_gas)
        body.update({
            "gas": tx.gas,
            "depends_on": None,
            "nonce": str(tx.nonce),
            "features": tx.features,
            "delegated": delegated,
            "unsigned": hx(signed.signing_payload()),
            "signing_hash": hx0(signed.signing_hash()),
            "signature": hx(signed.signature),
            "id": signed.id_hex(),
            "origin": origin_secret.address_hex,
            "delegator": sponsor_secret.address_hex if delegated else None,
            "record": {"tree_size": size, "root_hash": hx(root(size)), "origin": ORIGIN,
                       "origin_hash": hx(hashlib.sha256(ORIGIN.encode()).digest()),
                       "checkpoint": f"log/checkpoint-{size}.note"},
        })
        out.json(f"thor/{name}.expected.json", body)
        block_number = ref_block + 3
        anchors[size] = AnchorRef(
            chain="thor",
            network=hx0(genesis),
            tx=signed.id_hex(),
            block_number=block_number,
            block_id=hx0(block_number.to_bytes(4, "big") + hashlib.sha256(
                f"fieldproof testdata block id {block_number}".encode()).digest()[:28]),
            block_time=THOR_GENESIS_TIME + 10 * block_number,
        )

    # -- the evidence bundle over the whole log (as collector/export.py builds one)
    sizes = list(CHECKPOINT_SIZES)
    subtrees: dict[tuple[int, int], bytes] = {}
    for i in range(n):
        covering = next(s for s in sizes if s > i)
        for begin, end in merkle.inclusion_proof_ranges(i, covering):
            subtrees[(begin, end)] = merkle.root_from_leaf_hashes(leaf_hashes[begin:end])
    bundle = Bundle(
        origin=ORIGIN,
        vkey=vkey,
        scope=Scope("farm-a", None, None, T0, T0 + 3600.0),
        created=T0 + 7200.0,
        checkpoints=tuple(BundleCheckpoint(notes[s], (anchors[s],)) for s in sizes),
        consistency=tuple(
            tuple(merkle.reference_consistency_proof(entries[:b], a))
            for a, b in itertools.pairwise(sizes)
        ),
        hashes=subtrees,
        registry=(Entry(0, entries[0]), Entry(1, entries[1])),
        messages=tuple(Entry(i, entries[i]) for i in range(2, n)),
        notes=("known-answer bundle: fictional chain, blocks and anchors (testdata/README.md)",),
        # docs/bundle.md version 1, named rather than defaulted: a new version of the format
        # gets known-answer files of its own instead of silently changing these
        version=1,
    )
    out.bytes("bundle/bundle.fpb", encode_bundle(bundle))
    build_seal(out, entries, gw2_pub, log_signer)
    out.json("bundle/bundle.expected.json", {
        "spec": "docs/bundle.md",
        "format": "fieldproof/bundle",
        "version": 1,
        "origin": ORIGIN,
        "vkey": vkey,
        "created": bundle.created,
        "scope": {"farm": "farm-a", "field": None, "gateway": None, "from": T0,
                  "to": T0 + 3600.0},
        "checkpoints": [
            {"size": s, "root_hash": hx(root(s)), "note_file": f"log/checkpoint-{s}.note",
             "anchors": [anchors[s].to_obj()]}
            for s in sizes
        ],
        "consistency": [
            {"size1": a, "size2": b, "proof": [hx(h) for h in p]}
            for (a, b), p in zip(itertools.pairwise(sizes), bundle.consistency, strict=True)
        ],
        "hashes": [{"begin": b, "end": e, "hash": hx(h)}
                   for (b, e), h in sorted(subtrees.items())],
        "registry": [{"index": 0, "gateway": gw1, "event": "enroll"},
                     {"index": 1, "gateway": gw2, "event": "enroll"}],
        "messages": [
            {"index": 2 + k, "gateway": p.gateway, "seq": p.seq, "boot": p.boot,
             "readings": len(p.readings), "sha256": hx(hashlib.sha256(m).digest())}
            for k, (m, p, _) in enumerate(messages)
        ],
        "gateways": {gw1: {"public_key": hx(gw1_pub), "farm": "farm-a", "field": "north",
                           "messages": seqs[gw1]},
                     gw2: {"public_key": hx(gw2_pub), "farm": "farm-a", "field": "south",
                           "messages": seqs[gw2]}},
        "notes": list(bundle.notes),
        "verification": {
            "checkpoints_valid": len(sizes),
            "consistency_valid": len(sizes) - 1,
            "inclusion_valid": n,
            "messages_verified": len(messages),
            "errors": [],
        },
    })


def build_seal(out: Out, entries: list[bytes], gw2_pub: bytes,
               log_signer: Ed25519Signer) -> None:
    """A completeness seal (docs/bundle.md §4b) over the known-answer log plus one more entry:
    gateway 2 is enrolled again into farm-b (so the seal has two farm records and gateway 2 is
    in both). The seal is entry 14, the last leaf of the checkpoint of size 15."""
    gw2 = gateway_id_for(gw2_pub)
    moved = registry_event("enroll", gw2, public_key=gw2_pub, farm="farm-b", field="east",
                           location="45.10,7.72", at=T0 + 3000.0)
    log = [*entries, moved]
    acc = SealAccumulator()
    acc.add(log)
    seal, records = acc.seal()
    entry = seal.encode()
    full = [*log, entry]
    size = len(full)
    root = merkle.root_from_leaves(full)
    note = sign_checkpoint(Checkpoint(ORIGIN, size, root), log_signer)
    out.bytes("seal/entry-13.cbor", moved)
    out.bytes("seal/seal.cbor", entry)
    for i, r in enumerate(records):
        out.bytes(f"seal/farm-{i}.cbor", r)
    out.bytes(f"seal/checkpoint-{size}.note", note)
    proofs = farm_proofs(records, range(len(records)))
    out.json("seal/seal.expected.json", {
        "spec": "docs/bundle.md §4b, docs/evidence-log.md §11",
        "log": "log/entries/00.cbor … 12.cbor, then seal/entry-13.cbor (gateway 2 enrolled "
               "into farm-b), then seal/seal.cbor",
        "seal": {"index": seal.size, "t": "fieldproof/seal/v1", "size": seal.size,
                 "farms": seal.farms, "root": hx(seal.root), "sha256": hx(
                     hashlib.sha256(entry).digest()), "leaf_hash": hx(merkle.leaf_hash(entry))},
        "records": [
            {"file": f"farm-{i}.cbor", "position": i, "farm": rec.farm,
             "leaf_hash": hx(merkle.leaf_hash(r)), "proof": [hx(h) for h in proofs[i]],
             "gateways": [{"gateway": g.gateway, "fields": list(g.fields), "first": g.first,
                           "latest": g.latest, "messages": g.messages,
                           "registry": g.registry} for g in rec.gateways]}
            for i, (r, rec) in enumerate((r, decode_farm_record(r)) for r in records)
        ],
        "checkpoint": {"file": f"checkpoint-{size}.note", "size": size, "root_hash": hx(root),
                       "seal_inclusion_proof": [
                           hx(h) for h in merkle.reference_inclusion_proof(full, seal.size)]},
    })


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                    help="directory to write into (default: testdata/ itself)")
    args = ap.parse_args(argv)
    out = Out()
    build(out)
    out.write(args.out)
    print(f"wrote {len(out.files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
