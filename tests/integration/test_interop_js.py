"""Other people's JavaScript reads our Thor transactions: tests/interop/js/check_thor.mjs decodes
every anchor transaction of testdata/thor (legacy, dynamic-fee 0x51, VIP-191 delegated) with the
official VeChain SDK (@vechain/sdk-core, pinned in package-lock.json), recovers origin and
sponsor, recomputes signing hash, id and intrinsic gas, and reads our 78-byte anchor record from
the clause. It must agree with every sidecar; a tampered copy must make it fail. It also reads
transactions our own Anchorer built and sent to the Thor node double."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from anchor import thor
from anchor.anchoring import AnchorConfig, Anchorer, AnchorState, AnchorStore
from anchor.thor_client import ThorClient
from fieldproof.formats.anchor_record import AnchorRecord
from tests.support.bundles import THOR_KEY, Farm, FixedSource
from tests.support.thor_solo import SoloChain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"
JS_DIR = ROOT / "tests" / "interop" / "js"
SPONSOR = thor.SecretKey(bytes.fromhex(
    "321d6443bc6177273b5abf54210fe806d451d6b7973bccc2384ef78bbcd0bf51"))


@pytest.fixture(scope="module")
def node_bin() -> str:
    """node, with the pinned SDK installed by `npm ci` when node_modules is missing or older
    than the lockfile (scripts/bootstrap does the same)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("Node.js and npm are needed (scripts/bootstrap installs them)")
    if not (TESTDATA / "thor").is_dir():
        pytest.fail(f"known-answer files not found at {TESTDATA}")
    stamp = JS_DIR / "node_modules" / ".package-lock.json"
    lock = JS_DIR / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        t = time.monotonic()
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"npm ci failed:\n{r.stdout}\n{r.stderr}"
        print(f"npm ci: {time.monotonic() - t:.1f} s")
    return node


def run(node: str, testdata: Path, *names: str) -> subprocess.CompletedProcess[str]:
    t = time.monotonic()
    r = subprocess.run([node, "check_thor.mjs", str(testdata), *names], cwd=JS_DIR,
                       capture_output=True, text=True, timeout=120)
    print(f"check_thor.mjs {' '.join(names) or 'all'}: {time.monotonic() - t:.2f} s, "
          f"exit {r.returncode}")
    return r


def test_sdk_is_the_pinned_one(node_bin: str) -> None:
    lock = json.loads((JS_DIR / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@vechain/sdk-core"]["version"]
    installed = json.loads(
        (JS_DIR / "node_modules/@vechain/sdk-core/package.json").read_text())["version"]
    assert installed == pinned == json.loads(
        (JS_DIR / "package.json").read_text())["dependencies"]["@vechain/sdk-core"]


def test_sdk_agrees_with_every_thor_transaction(node_bin: str) -> None:
    r = run(node_bin, TESTDATA)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout + r.stderr
    assert "thor/legacy.tx (legacy)" in r.stdout
    assert "thor/dynamic-fee.tx (eip1559)" in r.stdout
    sponsor = json.loads((TESTDATA / "thor/delegated.expected.json").read_text())["delegator"]
    assert "thor/delegated.tx (eip1559)" in r.stdout and f"sponsor {sponsor}" in r.stdout
    assert r.stdout.rstrip().endswith("all 3 transactions agree (@vechain/sdk-core)")


def _flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def _sidecar(td: Path, name: str) -> dict[str, Any]:
    return dict(json.loads((td / f"thor/{name}.expected.json").read_text()))


def tamper_record(td: Path) -> str:
    """One byte of the anchor record's root inside the signed tx: the signature no longer
    covers these bytes, so another origin is recovered, and the record differs."""
    raw = (td / "thor/dynamic-fee.tx").read_bytes()
    _flip(td / "thor/dynamic-fee.tx", raw.index(b"FPAN") + 20)
    return "FAIL: thor/dynamic-fee.tx: origin is"


def tamper_sponsor_signature(td: Path) -> str:
    """One byte of the sponsor's s value: another gas payer is recovered."""
    raw = (td / "thor/delegated.tx").read_bytes()
    _flip(td / "thor/delegated.tx", len(raw) - 10)
    return "FAIL: thor/delegated.tx: delegator (gas payer) is"


def tamper_sidecar_id(td: Path) -> str:
    exp = _sidecar(td, "legacy")
    exp["id"] = exp["id"][:-1] + ("0" if exp["id"][-1] != "0" else "1")
    (td / "thor/legacy.expected.json").write_text(json.dumps(exp))
    return "FAIL: thor/legacy.tx: id is"


def tamper_checkpoint(td: Path) -> str:
    """The record no longer matches the checkpoint it names (its root line changed)."""
    note = td / "log/checkpoint-13.note"
    _flip(note, note.read_bytes().index(b"\n13\n") + 6)
    return "FAIL: thor/delegated.tx: record vs log/checkpoint-13.note root"


def tamper_truncate(td: Path) -> str:
    tx = td / "thor/legacy.tx"
    tx.write_bytes(tx.read_bytes()[:-1])
    return "FAIL: thor/legacy.tx: @vechain/sdk-core cannot decode it"


TAMPERINGS = {
    "record byte": tamper_record,
    "sponsor signature": tamper_sponsor_signature,
    "expected id": tamper_sidecar_id,
    "checkpoint": tamper_checkpoint,
    "truncated": tamper_truncate,
}


@pytest.mark.parametrize("what", sorted(TAMPERINGS))
def test_a_tampered_copy_makes_the_sdk_check_fail(node_bin: str, tmp_path: Path,
                                                   what: str) -> None:
    td = tmp_path / "testdata"
    shutil.copytree(TESTDATA, td)
    expected = TAMPERINGS[what](td)
    r = run(node_bin, td)
    assert r.returncode == 1, r.stdout + r.stderr
    assert expected in r.stderr, r.stderr
    assert "mismatch(es)" in r.stderr


def test_usage_error(node_bin: str, tmp_path: Path) -> None:
    r = subprocess.run([node_bin, "check_thor.mjs"], cwd=JS_DIR, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr
    assert run(node_bin, tmp_path).returncode == 2  # no thor/ there


# ------------------------------------------------------------------ our Anchorer's own transactions


def sidecar_for(raw: bytes, tx_id: str, origin: thor.SecretKey, sponsor: thor.SecretKey | None,
                record: bytes, size: int, root: bytes, origin_name: str) -> dict[str, Any]:
    """What check_thor.mjs compares with: addresses, id and record from what we know
    independently of the tx codec; the other body fields from our decoder."""
    tx = thor.decode(raw)
    body: dict[str, Any] = {
        "raw": raw.hex(), "type": tx.tx_type, "chain_tag": tx.chain_tag,
        "block_ref": "0x" + tx.block_ref.hex(), "expiration": tx.expiration,
        "clauses": [{"to": "0x" + (c.to or b"").hex(), "value": str(c.value),
                     "data": "0x" + c.data.hex()} for c in tx.clauses],
        "gas": tx.gas, "depends_on": None, "nonce": str(tx.nonce), "features": tx.features,
        "delegated": sponsor is not None, "signing_hash": "0x" + tx.signing_hash().hex(),
        "id": tx_id, "origin": origin.address_hex,
        "delegator": None if sponsor is None else sponsor.address_hex,
        "record": {"tree_size": size, "root_hash": root.hex(), "origin": origin_name,
                   "origin_hash": record[46:].hex(), "checkpoint": f"log/checkpoint-{size}.note"},
    }
    if tx.tx_type == thor.TYPE_LEGACY:
        body["gas_price_coef"] = tx.gas_price_coef
    else:
        body["max_fee_per_gas"] = str(tx.max_fee_per_gas)
        body["max_priority_fee_per_gas"] = str(tx.max_priority_fee_per_gas)
    return body


def test_sdk_reads_what_our_anchorer_sent(node_bin: str, tmp_path: Path) -> None:
    """The Anchorer builds, signs and sends anchor txs (legacy; 0x51 with a VIP-191 sponsor)
    to a real thor solo node, which includes them; the SDK decodes the raw bytes the node
    returns."""
    farm = Farm(tmp_path / "farm")
    td = tmp_path / "td"
    (td / "thor").mkdir(parents=True)
    (td / "log").mkdir()
    g = farm.enroll()
    names = []
    try:
        with closing(SoloChain(tmp_path / "thor")) as node:
            node.fund(THOR_KEY.address, SPONSOR.address)
            for name, sponsor, config in (
                ("anchorer-legacy", None, AnchorConfig(dynamic_fee=False)),
                ("anchorer-sponsored", SPONSOR, AnchorConfig()),
            ):
                farm.run(g, time.time() - 3600, 3)
                farm.checkpoint()
                latest = farm.evidence.latest()
                assert latest is not None
                cp, note = latest.checkpoint, latest.note
                with (AnchorStore(tmp_path / f"{name}.sqlite") as store,
                      ThorClient(node.url, retries=1, sleep=lambda s: None) as client):
                    anchorer = Anchorer(store, client, FixedSource(cp, note), THOR_KEY,
                                        sponsor=sponsor, config=config)
                    try:
                        for _ in range(3):  # posted; packed on demand; seen in its block
                            report = anchorer.step()
                            assert report.node_ok and not report.errors, report
                            row = store.find(cp.origin, cp.size, cp.root_hash)
                            if row is not None and row.state is AnchorState.INCLUDED:
                                break
                        assert row is not None and row.tx_id is not None
                        assert row.state is AnchorState.INCLUDED
                    finally:
                        anchorer.close()
                    got = client.raw_transaction(row.tx_id)
                assert got is not None
                raw = got[0]
                record = AnchorRecord.for_checkpoint(cp.origin, cp.size, cp.root_hash).encode()
                (td / f"thor/{name}.tx").write_bytes(raw)
                (td / f"log/checkpoint-{cp.size}.note").write_bytes(note)
                (td / f"thor/{name}.expected.json").write_text(json.dumps(sidecar_for(
                    raw, row.tx_id, THOR_KEY, sponsor, record, cp.size, cp.root_hash,
                    cp.origin)))
                names.append(name)
    finally:
        farm.close()
    r = run(node_bin, td, *names)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "thor/anchorer-legacy.tx (legacy)" in r.stdout
    assert "thor/anchorer-sponsored.tx (eip1559)" in r.stdout
    assert f"sponsor {SPONSOR.address_hex}" in r.stdout
