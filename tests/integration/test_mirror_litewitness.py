"""``fieldproof log mirror --witness-key`` on cosignatures from real C2SP witnesses (torchwood's
litewitness, started by fieldproof.services, asked by the collector's own cosigning code): the
mirror keeps a given witness's real cosignature, drops the line of a witness it was not given,
and drops a given witness's line that no longer verifies (one byte of its signature changed by
the log before it re-publishes the note).

It starts services, so it is an integration test (the brief allowed new test files only here:
the lead may move it to tests/integration/). A missing litewitness build makes it fail (run
scripts/peers), never skip."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from anchor.tiles import write_tiles
from anchor.witness import Witnesses
from fieldproof.cli import cli
from fieldproof.config import WitnessConfig
from fieldproof.services import Litewitness, ServiceError
from tests.support.bundles import Farm

pytestmark = pytest.mark.integration


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path / "collector")
    f.run(f.enroll(), time.time() - 3600, 5)
    f.checkpoint()
    yield f
    f.close()


@pytest.fixture
def witnesses(tmp_path: Path, farm: Farm) -> Iterator[list[Litewitness]]:
    started: list[Litewitness] = []
    try:
        for n in ("a", "b"):
            w = Litewitness(tmp_path / f"w-{n}", witness_name=f"witness-{n}.example/w1",
                            logs=[(farm.config.log_origin, farm.vkey)])
            started.append(w)
            try:
                w.start()
            except ServiceError as exc:
                pytest.fail(str(exc), pytrace=False)
        yield started
    finally:
        for w in started:
            w.close()


def cosign(farm: Farm, ws: list[Litewitness]) -> bytes:
    """Both witnesses cosign the log's newest checkpoint; the cosigned note as stored."""
    configs = [WitnessConfig(name=w.witness_name, url=w.url, vkey=w.vkey, timeout_s=5,
                             retry_s=0) for w in ws]  # fmt: skip
    cosigner = Witnesses(farm.evidence.db, farm.evidence, configs)
    try:
        cosigner.cosign_latest()
        assert all(s == "ok" for s in cosigner.status().values()), cosigner.status()
    finally:
        cosigner.close()
    latest = farm.evidence.latest()
    assert latest is not None
    return latest.note


def sig_lines(note: bytes) -> list[str]:
    return note[note.rfind(b"\n\n") + 2 : -1].decode().split("\n")


def test_mirror_keeps_only_the_given_witness_real_cosignature(
    tmp_path: Path, farm: Farm, witnesses: list[Litewitness]
) -> None:
    a, b = witnesses
    note = cosign(farm, witnesses)
    log_line, *cosigs = sig_lines(note)
    by_name = {line.split(" ")[1]: line for line in cosigs}
    assert sorted(by_name) == [a.witness_name, b.witness_name]  # both really cosigned
    tiles, mirror = tmp_path / "tiles", tmp_path / "mirror"
    size = farm.evidence.latest().checkpoint.size  # type: ignore[union-attr]
    write_tiles(farm.evidence.log, size, note, tiles)
    args = ["log", "mirror", str(tiles), str(mirror), "--log-key", farm.vkey,
            "--witness-key", a.vkey]  # fmt: skip
    runner = CliRunner()
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert f"cosigned by 1 of 1 witness(es) ({a.witness_name}); 1 unverified" in first.output
    kept = (mirror / "checkpoint").read_bytes()
    assert sig_lines(kept) == [log_line, by_name[a.witness_name]]
    # the log re-publishes the note with a's signature altered: the kept valid line stays
    name, _, b64 = by_name[a.witness_name].removeprefix("\u2014 ").partition(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    forged = f"\u2014 {name} {base64.b64encode(bytes(raw)).decode()}"
    (tiles / "checkpoint").write_bytes(note.replace(by_name[a.witness_name].encode(),
                                                    forged.encode()))
    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    assert (mirror / "checkpoint").read_bytes() == kept
    assert "2 unverified line(s) dropped" in second.output  # the forged a and b's
