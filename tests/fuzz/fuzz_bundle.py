"""Fuzz the inspector's side: ``fieldproof.formats.bundle.decode_bundle`` and
``inspector.verify.verify_bundle`` (offline, no nodes) on bytes that start from a small real bundle.

The seed bundle is built at start in a temp dir with the collector's own classes (registry
with its evidence log, accepted-message store, log key, checkpoints) and ``export_bundle``:
two gateways, a key rotation, a revocation, messages in two checkpoints and after the last,
plus anchor claims on both chains (offline they are only read). Properties:

* ``decode_bundle`` raises only ``BundleError``; what it reads encodes back to the same bundle;
* ``verify_bundle`` returns a result (pass/warn/fail) and never raises; a bundle it cannot read
  fails with ``malformed_bundle``; its JSON report serialises;
* no forgery: every message it reports verified is byte for byte one the gateways signed.

Odd-length inputs are verified with the log key pinned and the first checkpoint given as known
(the inspector's usual call), even-length ones with the bundle's own key.

Run:  .venv/bin/python tests/fuzz/fuzz_bundle.py [libFuzzer flags] [corpus_dir]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import atheris
import cbor2

from tests.fuzz._common import PRODUCT_PACKAGES, CborMutator, main

with atheris.instrument_imports(include=PRODUCT_PACKAGES):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from anchor.evidence import EvidenceLog
    from collector.export import export_bundle
    from collector.registry import Registry
    from collector.store import AcceptedRow, CollectorStore
    from fieldproof import wire
    from fieldproof.config import CollectorConfig
    from fieldproof.datadir import open_db
    from fieldproof.formats.bundle import AnchorRef, BundleError, decode_bundle, encode_bundle
    from inspector.verify import VerifyOptions, verify_bundle

T0 = 1_750_000_000.0
NOW = T0 + 7200
OPTIONS = VerifyOptions(workers=1)


def _key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([0x40 + n]) * 32)


def _message(key: Ed25519PrivateKey, gw: str, seq: int, t: float, n: int = 2) -> bytes:
    readings = tuple(
        wire.Reading("station", q, u, round(0.1 * seq + i, 3), t)
        for i, (q, u) in enumerate((("soil_moisture", "/"), ("air_temperature", "Cel"))[:n]))
    return wire.encode_message(wire.Payload(gw, seq, 1, readings), key)


def build() -> tuple[list[bytes], set[bytes], str]:
    """Seed bundles, every message the gateways signed, and the log's verifier key."""
    with tempfile.TemporaryDirectory(prefix="fieldproof-fuzz-bundle-") as tmp:
        config = CollectorConfig(collector_id="fuzz", data_dir=Path(tmp))
        db = open_db(config.db_path)
        evidence = EvidenceLog.open(db, config.log_origin, config.log_key_file)
        registry = Registry(db, evidence)
        store = CollectorStore(db, evidence)
        a_old, a_new, b = _key(1), _key(2), _key(3)
        a = wire.gateway_id_for(wire.public_key_bytes(a_old))
        gb = wire.gateway_id_for(wire.public_key_bytes(b))
        registry.add(a, wire.public_key_bytes(a_old), "farm", "north", location="47.1,8.2")
        registry.add(gb, wire.public_key_bytes(b), "farm", "south")
        signed: set[bytes] = set()

        def accept(key: Ed25519PrivateKey, gw: str, seqs: range, t: float) -> None:
            rows = []
            for seq in seqs:
                m = _message(key, gw, seq, t + 60 * seq, n=1 + seq % 2)
                signed.add(m)
                rows.append(AcceptedRow(gw, seq, 1, 1 + seq % 2, m))
            store.commit(rows, [], {})

        accept(a_old, a, range(1, 4), T0)
        accept(b, gb, range(1, 3), T0)
        evidence.checkpoint()
        rotate = wire.encode_deterministic({
            "t": "fieldproof/registry/v1", "event": "rotate", "gw": a, "time": T0 + 300,
            "pk": wire.public_key_bytes(a_new), "prev_pk": wire.public_key_bytes(a_old),
            "from_seq": 4})
        with db:
            evidence.append([rotate])
        accept(a_new, a, range(4, 6), T0)
        accept(b, gb, range(4, 5), T0)  # seq 3 of b is a gap
        registry.revoke(gb)
        evidence.checkpoint()
        accept(a_new, a, range(6, 8), T0)  # after the last checkpoint: verified, not anchored
        vkey = evidence.verifier().vkey
        db.close()
        full = export_bundle(config, farm=None, field=None, gateway=None, start=T0,
                             end=T0 + 3600)
        one = export_bundle(config, farm=None, field=None, gateway=gb, start=T0, end=T0 + 3600)
    bundle = decode_bundle(full)
    anchors = (
        AnchorRef("thor", "0x" + "11" * 32, "0x" + "22" * 32, 100, "0x" + "33" * 32,
                  int(T0 + 400)),
        AnchorRef("evm", "31337", "0x" + "44" * 32, 7, "0x" + "55" * 32, int(T0 + 500),
                  genesis="0x" + "66" * 32),
    )
    first, *rest = bundle.checkpoints
    anchored = dataclasses.replace(
        bundle, checkpoints=(dataclasses.replace(first, anchors=anchors), *rest),
        notes=("fuzz seed",))
    return [full, one, encode_bundle(anchored)], signed, vkey


SEEDS, SIGNED, VKEY = build()
KNOWN = (decode_bundle(SEEDS[0]).checkpoints[0].note,)


def test_one_input(data: bytes) -> None:
    try:
        bundle = decode_bundle(data)
    except BundleError:
        bundle = None
    if bundle is not None:
        assert decode_bundle(encode_bundle(bundle)) == bundle, data.hex()
    pinned = len(data) % 2 == 1
    result = verify_bundle(data, nodes=[], chain=None, offline=True,
                           log_key=VKEY if pinned else None, options=OPTIONS, now=NOW,
                           known_checkpoints=KNOWN if pinned else ())
    assert result.verdict in ("pass", "warn", "fail"), result.verdict
    if bundle is None:
        assert result.verdict == "fail" and result.codes() == {"malformed_bundle"}
        return
    by_index = {e.index: e.data for e in bundle.messages}
    for m in result.messages:
        assert by_index[m.index] in SIGNED, f"forged message verified: {data.hex()}"
    json.dumps(result.to_json())
    result.summary()


MUTATOR = CborMutator(
    lambda obj: bytes(cbor2.dumps(obj, canonical=True)),
    strings=["fieldproof/bundle", "thor", "evm", "0x" + "00" * 32, VKEY, "farm", "north"],
    keys=["format", "version", "created", "scope", "log", "checkpoints", "consistency", "hashes",
          "registry", "messages", "notes", "farm", "field", "gateway", "from", "to", "origin",
          "vkey", "note", "anchors", "chain", "tx", "genesis", "chain_id", "block_number",
          "block_id", "block_time"],
)


if __name__ == "__main__":
    main("bundle", test_one_input, lambda: SEEDS, MUTATOR)
