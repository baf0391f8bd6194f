"""A third-party tiles client reads our public tiles: ``fpcheck -tiles`` (tests/interop/go,
tiles.go) opens the ``checkpoint`` written by anchor/tiles.py with golang.org/x/mod's
``note.Open`` under the log's vkey, checks a real litewitness's cosignature on it, rebuilds the
signed root with ``tlog.TreeHash`` over ``tlog.TileHashReader`` (Go's "tile/8/L/N" paths mapped
to C2SP's "tile/L/N"), and hashes every entry of every entry bundle to its authenticated leaf.
The directory is made by the collector's own code (``Collector.maybe_checkpoint``); copies with
one byte changed must make it fail, saying where."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchor.logkey import load_or_create_log_key
from collector.service import Collector
from fieldproof.config import CollectorConfig, LogConfig, WitnessConfig
from fieldproof.formats.tiles import entries_path, tile_path
from fieldproof.services import Litewitness, ServiceError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GO_DIR = ROOT / "tests" / "interop" / "go"
COLLECTOR_ID = "c-tiles"
ORIGIN = f"fieldproof.example/log/{COLLECTOR_ID}"
WITNESS = "witness.fieldproof.example/tiles"


class NullWriter:
    def write(self, lines: object) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def fpcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checker, built from tests/interop/go with its pinned modules (go.sum committed)."""
    go = shutil.which("go")
    if go is None:
        pytest.fail("Go is not installed: scripts/bootstrap installs what the tests need")
    out = tmp_path_factory.mktemp("fpcheck") / "fpcheck"
    env = {**os.environ, "GOFLAGS": os.environ.get("GOFLAGS", "") + " -mod=readonly"}
    t = time.monotonic()
    built = subprocess.run(
        [go, "build", "-o", str(out), "."],
        cwd=GO_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, f"go build failed:\n{built.stderr}"
    print(f"go build: {time.monotonic() - t:.1f} s")
    return out


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, str, int]]:
    """A tiles directory the collector published for a log of 700 entries (seals included),
    checkpointed at several sizes and cosigned by a real litewitness: (directory, log vkey,
    witness vkey, size)."""
    base = tmp_path_factory.mktemp("published")
    data = base / "data"
    log_vkey = load_or_create_log_key(data / "log.key", ORIGIN).verifier().vkey
    w = Litewitness(base / "witness", witness_name=WITNESS, logs=[(ORIGIN, log_vkey)])
    try:
        w.start()
    except ServiceError as exc:
        w.close()
        pytest.fail(str(exc), pytrace=False)
    try:
        wc = WitnessConfig(name=WITNESS, url=w.url, vkey=w.vkey, retry_s=0)
        cfg = CollectorConfig(
            collector_id=COLLECTOR_ID,
            data_dir=data,
            log=LogConfig(checkpoint_every_entries=1, witnesses=[wc]),
        )
        c = Collector(cfg, writer=NullWriter())
        rng = random.Random(17)
        try:
            # checkpoints at these sizes, each ending with its seal (so never two in a row)
            for size in (2, 254, 256, 258, 512, 700):
                n = size - 1 - c.evidence.log.size()
                with c.db:
                    c.evidence.append([rng.randbytes(rng.randint(1, 300)) for _ in range(n)])
                c.maybe_checkpoint(force=True)
                # cosigning runs in the witness's thread: let it catch up with each size
                assert c.witness_worker.wait_idle(60)
            assert c.witnesses.status() == {WITNESS: "ok"}
        finally:
            c.stop_witnesses()
            c.db.close()
        yield c.tiles_dir, log_vkey, w.vkey, 700
    finally:
        w.close()


def run(fpcheck: Path, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(fpcheck), *args], capture_output=True, text=True, timeout=120)
    print(r.stdout[-2000:], r.stderr[-2000:])
    return r


def test_go_tlog_reads_our_tiles(fpcheck: Path, published: tuple[Path, str, str, int]) -> None:
    tiles, vkey, witness_vkey, size = published
    r = run(fpcheck, "-vkey", vkey, "-witness", witness_vkey, "-tiles", str(tiles))
    assert r.returncode == 0, r.stderr
    assert f"size {size}," in r.stdout and f"{size} entries, 1 cosignature(s)" in r.stdout


def tampered(src: Path, dst: Path, rel: str, offset: int) -> Path:
    shutil.copytree(src, dst)
    p = dst / rel
    data = bytearray(p.read_bytes())
    data[offset] ^= 0x01
    p.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    ("what", "rel", "offset", "says"),
    [
        ("full hash tile", tile_path(0, 1), 100, "inconsistent tile"),
        ("level-1 tile", tile_path(1, 0, 2), 40, "tlog.TreeHash"),
        ("entry bundle", entries_path(2, 188), 5, "entries/002.p/188"),
        ("checkpoint root", "checkpoint", 40, "note.Open"),
        ("cosignature", "checkpoint", -3, "note.Open"),
    ],
)
def test_go_refuses_altered_tiles(
    fpcheck: Path,
    published: tuple[Path, str, str, int],
    tmp_path: Path,
    what: str,
    rel: str,
    offset: int,
    says: str,
) -> None:
    tiles, vkey, witness_vkey, _ = published
    bad = tampered(tiles, tmp_path / "bad", rel, offset)
    r = run(fpcheck, "-vkey", vkey, "-witness", witness_vkey, "-tiles", str(bad))
    assert r.returncode == 1, f"{what}: {r.stdout}"
    assert "FAIL:" in r.stderr and says in r.stderr, r.stderr


def test_go_requires_the_witness_cosignature(
    fpcheck: Path, published: tuple[Path, str, str, int], tmp_path: Path
) -> None:
    tiles, vkey, witness_vkey, _ = published
    bad = tmp_path / "uncosigned"
    shutil.copytree(tiles, bad)
    note = (bad / "checkpoint").read_bytes()
    (bad / "checkpoint").write_bytes(note[: note.rstrip(b"\n").rfind(b"\n") + 1])
    r = run(fpcheck, "-vkey", vkey, "-witness", witness_vkey, "-tiles", str(bad))
    assert r.returncode == 1 and "no valid cosignature by witness" in r.stderr, r.stderr
    # without -witness the log's own signature is enough
    assert run(fpcheck, "-vkey", vkey, "-tiles", str(bad)).returncode == 0
