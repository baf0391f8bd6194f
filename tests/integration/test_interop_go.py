"""Other people's Go code reads our formats: tests/interop/go (``fpcheck``) verifies testdata/
and a bundle exported by the collector's own code with golang.org/x/mod sumdb/note and tlog,
transparency-dev formats/log and merkle/proof, and fxamacker/cbor (pinned in its go.mod/go.sum,
fetched from the Go module proxy). It must agree with every known-answer file, and a copy with
one byte flipped (in a note, a proof, a bundle) must make it fail, saying where."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.ca import CertificateAuthority
from collector.enrollment import Enroller
from collector.export import export_bundle
from fieldproof.formats.bundle import decode_bundle
from fieldproof.formats.enrollment import build_request
from fieldproof.tls import make_csr, new_tls_key
from fieldproof.wire import gateway_id_for, public_key_bytes
from tests.support.bundles import THOR_KEY, Farm, Gateway, anchor_thor
from tests.support.thor_solo import SoloChain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TESTDATA = ROOT / "testdata"
GO_DIR = ROOT / "tests" / "interop" / "go"


@pytest.fixture(scope="module")
def fpcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checker, built from tests/interop/go with the pinned modules (go.sum is committed:
    the build refuses any other version). The binary goes to a temporary directory and Go's
    caches to their usual place, never into the repository."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("Go is not installed: scripts/bootstrap installs what the tests need "
                    "(Go >= 1.26, see scripts/peers)")
    if not (TESTDATA / "log" / "vkey.txt").is_file():
        pytest.fail(f"known-answer files not found at {TESTDATA}")
    out = tmp_path_factory.mktemp("fpcheck") / "fpcheck"
    env = {**os.environ, "GOFLAGS": os.environ.get("GOFLAGS", "") + " -mod=readonly"}
    t = time.monotonic()
    built = subprocess.run([go, "build", "-o", str(out), "."], cwd=GO_DIR, env=env,
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, f"go build failed:\n{built.stderr}"
    print(f"go build: {time.monotonic() - t:.1f} s")
    return out


def run(fpcheck: Path, *args: str) -> subprocess.CompletedProcess[str]:
    t = time.monotonic()
    r = subprocess.run([str(fpcheck), *args], capture_output=True, text=True, timeout=120)
    print(f"fpcheck {' '.join(a[-40:] for a in args)}: {time.monotonic() - t:.2f} s, "
          f"exit {r.returncode}\n{r.stdout[-600:]}{r.stderr[-2000:]}")
    return r


def test_go_agrees_with_every_known_answer_file(fpcheck: Path) -> None:
    r = run(fpcheck, str(TESTDATA))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout + r.stderr
    oks = [line for line in r.stdout.splitlines() if line.startswith("ok: ")]
    assert len(oks) == 11, r.stdout
    for what in ("checkpoint-5.note", "checkpoint-8.note", "checkpoint-13.note",
                 "26 valid ones accepted, 5 invalid ones rejected",
                 "8 valid ones accepted, 4 invalid ones rejected",
                 "record.bin", "message.cose", "request.cose",
                 "3 checkpoints [5 8 13]", "13 entries proven", "11 messages"):
        assert what in r.stdout, what
    assert r.stdout.rstrip().endswith("all 11 checks agree")


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def flip_hex_in_json(path: Path, hex_value: str) -> None:
    """Change one hex digit of a proof hash in a JSON file (its first occurrence)."""
    text = path.read_text()
    assert hex_value in text
    i = text.index(hex_value) + 10
    path.write_text(text[:i] + ("0" if text[i] != "0" else "1") + text[i + 1 :])


def first_valid_hash(path: Path) -> str:
    import json

    return str(next(p for p in json.loads(path.read_text())["proofs"] if p["valid"]
                    and p["proof"])["proof"][0])


def tamper_note(td: Path) -> None:
    note = td / "log" / "checkpoint-8.note"
    flip(note, note.read_bytes().index(b"\n8\n") + 5)  # inside the base64 root line


def tamper_inclusion(td: Path) -> None:
    f = td / "log" / "inclusion.json"
    flip_hex_in_json(f, first_valid_hash(f))


def tamper_consistency(td: Path) -> None:
    f = td / "log" / "consistency.json"
    flip_hex_in_json(f, first_valid_hash(f))


def _in_bundle(td: Path, needle: bytes) -> int:
    data = (td / "bundle" / "bundle.fpb").read_bytes()
    assert data.count(needle) == 1
    return data.index(needle)


def tamper_bundle_hash(td: Path) -> None:
    """One byte of a subtree hash in the bundle's table: the proofs through it fail."""
    import json

    exp = json.loads((td / "bundle" / "bundle.expected.json").read_text())
    h = bytes.fromhex(exp["hashes"][0]["hash"])
    flip(td / "bundle" / "bundle.fpb", _in_bundle(td, h) + 7)


def tamper_bundle_note(td: Path) -> None:
    """One byte of the root line of the bundle's second checkpoint."""
    note = (td / "log" / "checkpoint-8.note").read_bytes()
    flip(td / "bundle" / "bundle.fpb", _in_bundle(td, note) + note.index(b"\n8\n") + 5)


def tamper_bundle_message(td: Path) -> None:
    """The last byte of one message's signature, inside the bundle."""
    msg = (td / "log" / "entries" / "07.cbor").read_bytes()
    flip(td / "bundle" / "bundle.fpb", _in_bundle(td, msg) + len(msg) - 1)


def tamper_message(td: Path) -> None:
    msg = td / "message" / "message.cose"
    flip(msg, msg.read_bytes().index(b"station/soil_temperature") + 3)


def tamper_record(td: Path) -> None:
    flip(td / "anchor-record" / "record.bin", 20)


TAMPERINGS: dict[str, tuple[Callable[[Path], None], str]] = {
    "note": (tamper_note, "FAIL: log/checkpoint-8.note: note.Open"),
    "inclusion proof": (tamper_inclusion, "FAIL: inclusion.json #0"),
    "consistency proof": (tamper_consistency, "FAIL: consistency.json #0"),
    "bundle subtree hash": (tamper_bundle_hash, "tlog.CheckRecord: invalid transparency proof"),
    "bundle checkpoint": (tamper_bundle_note, "checkpoints[1]: log.ParseCheckpoint"),
    "bundle message": (tamper_bundle_message, "message 7 of gw-"),
    "message": (tamper_message, "FAIL: message/message.cose"),
    "anchor record": (tamper_record, "FAIL: anchor-record/record.bin"),
}


@pytest.mark.parametrize("what", sorted(TAMPERINGS))
def test_one_flipped_byte_makes_go_fail(fpcheck: Path, tmp_path: Path, what: str) -> None:
    td = tmp_path / "testdata"
    shutil.copytree(TESTDATA, td)
    tamper, expected = TAMPERINGS[what]
    tamper(td)
    r = run(fpcheck, str(td))
    assert r.returncode == 1, r.stdout + r.stderr
    assert expected in r.stderr, r.stderr
    assert "mismatch(es)" in r.stderr


def test_go_usage_errors(fpcheck: Path, tmp_path: Path) -> None:
    assert run(fpcheck).returncode == 2
    assert run(fpcheck, str(tmp_path / "nothing")).returncode == 2
    r = run(fpcheck, "-bundle", str(TESTDATA / "bundle" / "bundle.fpb"))
    assert r.returncode == 2 and "needs -vkey" in r.stderr


# ------------------------------------------------------------------ a bundle from our own exporter


@pytest.fixture
def exported(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A bundle as `fieldproof export` makes it, from the collector's own classes (registry and
    evidence log, the real enroller, checkpoints, the Thor anchorer on a real thor solo node):
    two gateways, one enrolled with a signed request, four checkpoints, two of them anchored
    (the exporter leaves out the one that an anchored one after it covers)."""
    now = time.time()
    t0 = now - 7200
    farm = Farm(tmp_path / "farm")
    CertificateAuthority.create(farm.config.data_dir / "ca")
    key = Ed25519PrivateKey.generate()
    gw = gateway_id_for(public_key_bytes(key))
    request = build_request(key, make_csr(new_tls_key(), gw), farm="farm-a", field="north",
                            location="47.1,8.2", installer="Ana", sensors=[{"name": "station"}],
                            now=t0 - 600)
    Enroller.from_config(farm.config, farm.registry).approve(request, operator="olga")
    g1 = Gateway(gw, key, "farm-a", "north")
    farm.gateways.append(g1)
    g2 = farm.enroll("farm-a", "south")
    try:
        with closing(SoloChain(tmp_path / "thor")) as node:
            node.fund(THOR_KEY.address)
            farm.run(g1, t0, 7)
            farm.run(g2, t0 + 5, 4)
            farm.checkpoint()
            anchor_thor(farm, node.url, node.mine)
            farm.run(g1, t0 + 600, 9)
            farm.checkpoint()
            farm.run(g2, t0 + 900, 6)
            farm.checkpoint()
            anchor_thor(farm, node.url, node.mine)
            farm.run(g1, t0 + 1800, 3)
            farm.checkpoint()  # signed, not anchored
            farm.run(g2, t0 + 2400, 2)  # newer than every checkpoint: travel unproven
        data = export_bundle(farm.config, farm=None, field=None, gateway=None,
                             start=t0 - 3600, end=now + 60)
        path = tmp_path / "export.fpb"
        path.write_bytes(data)
        yield path, farm.vkey
    finally:
        farm.close()


def test_go_reads_a_bundle_from_our_exporter(fpcheck: Path, exported: tuple[Path, str]) -> None:
    path, vkey = exported
    r = run(fpcheck, "-vkey", vkey, "-bundle", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    # each checkpoint ends with the collector's completeness seal (one leaf more each)
    assert "3 checkpoints [14 31 35]" in r.stdout, r.stdout
    assert "2 consistency proofs, 31 entries proven" in r.stdout, r.stdout
    assert "(2 without a checkpoint), 2 registry events" in r.stdout, r.stdout
    assert "31 messages with valid COSE signatures from 2 gateways" in r.stdout, r.stdout
    # a version 3 bundle carries the exporter's completeness claim (its note must verify with
    # the log key and commit to the claim's bytes) and the log's seal: the checkpoint's last
    # leaf, its farm record proven into the seal's inner tree by transparency-dev/merkle
    assert "version 3," in r.stdout, r.stdout
    assert "completeness claim signed by the log key" in r.stdout, r.stdout
    assert "seal proven as its checkpoint's last leaf with 1 farm record(s)" in r.stdout

    # one flipped byte in the seal's farm record is found by the inner proof
    sealed = decode_bundle(path.read_bytes()).seal
    assert sealed is not None
    record = sealed.farms[0].record
    data = bytearray(path.read_bytes())
    assert data.count(record) == 1
    data[data.index(record) + len(record) - 1] ^= 0x01
    bad_seal = path.with_name("bad-seal.fpb")
    bad_seal.write_bytes(bytes(data))
    r = run(fpcheck, "-vkey", vkey, "-bundle", str(bad_seal))
    assert r.returncode == 1 and "seal farm record 0" in r.stderr, r.stderr

    # the same bundle pinned to another log's key fails on every checkpoint
    other = (TESTDATA / "log" / "vkey.txt").read_text().strip()
    r = run(fpcheck, "-vkey", other, "-bundle", str(path))
    assert r.returncode == 1 and "log.ParseCheckpoint" in r.stderr, r.stderr

    # and one flipped byte in one message's signature is found
    data = bytearray(path.read_bytes())
    msg = decode_bundle(bytes(data)).messages[5].data
    assert data.count(msg) == 1
    data[data.index(msg) + len(msg) - 1] ^= 0x01  # the last byte of its signature
    bad = path.with_name("tampered.fpb")
    bad.write_bytes(bytes(data))
    r = run(fpcheck, "-vkey", vkey, "-bundle", str(bad))
    assert r.returncode == 1 and "FAIL:" in r.stderr, r.stderr
