"""Split views caught by the verifier (docs/bundle.md §5 step 3a): a second log under the same
key and origin with other entries, built with the project's own log code (``EvidenceLog``), is
shown to the verifier as a mirror (tiles in a directory and over HTTP) and as a witness's
checkpoint; two roots for one size, or a mirror's tree that does not extend the bundle's, is
``log_fork`` naming both sources. An honest mirror larger than the bundle proves it consistent."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from anchor.evidence import EvidenceLog
from anchor.logkey import load_or_create_log_key
from anchor.tiles import write_tiles
from collector.export import export_bundle
from fieldproof.cli import cli
from fieldproof.datadir import open_db
from fieldproof.formats.checkpoint import Checkpoint, sign_checkpoint
from fieldproof.formats.note import generate_key
from inspector.results import VerificationResult, VerifyOptions
from inspector.verify import verify_bundle
from tests.support.bundles import Farm

NOW = time.time()
T0 = NOW - 7200


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path / "honest")
    g = f.enroll()
    f.run(g, T0, 6)
    f.checkpoint()
    f.run(g, T0 + 600, 4)
    f.checkpoint()
    yield f
    f.close()


def export(farm: Farm) -> bytes:
    return export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60)


def forged_log(farm: Farm, where: Path, size: int) -> EvidenceLog:
    """Another log with the honest log's key and origin and other entries, signed at ``size``
    entries exactly (a checkpoint appends a seal, so it is grown until it lands there)."""
    where.mkdir(parents=True)
    key = where / "log.key"
    shutil.copy(farm.config.log_key_file, key)
    key.chmod(0o600)
    ev = EvidenceLog.open(open_db(where / "collector.sqlite"), farm.config.log_origin, key)
    n = 0
    while True:
        have = ev.log.size()
        with ev.db:
            ev.append([f"forged-{n}-{i}".encode() for i in range(max(1, size - have - 1))])
        n += 1
        stored = ev.checkpoint()
        assert stored is not None
        if stored.checkpoint.size == size:
            return ev
        assert stored.checkpoint.size < size, "overshot: pick another size"


def tiles_of(ev: EvidenceLog, directory: Path) -> Path:
    latest = ev.latest()
    assert latest is not None
    write_tiles(ev.log, latest.checkpoint.size, latest.note, directory)
    return directory


def verify(farm: Farm, data: bytes, **options: object) -> VerificationResult:
    return verify_bundle(data, nodes=[], chain=None, offline=True, log_key=farm.vkey,
                         options=VerifyOptions(**options))  # type: ignore[arg-type]


def forks(r: VerificationResult) -> list[str]:
    return [f.message for f in r.findings if f.code == "log_fork"]


def test_an_honest_mirror_larger_than_the_bundle_proves_it_consistent(
    farm: Farm, tmp_path: Path
) -> None:
    data = export(farm)
    g = farm.gateways[0]
    farm.run(g, T0 + 1200, 3)
    farm.checkpoint()
    mirror = tiles_of(farm.evidence, tmp_path / "mirror")
    r = verify(farm, data, mirrors=(str(mirror),))
    assert forks(r) == [] and r.verdict != "fail", [f.message for f in r.findings]
    (view,) = r.outside_checkpoints
    assert view["status"] == "consistent" and view["size"] == farm.evidence.log.size()
    assert "2 other signed checkpoint" in view["detail"]  # both of the bundle's, by proof


def test_a_forked_mirror_is_a_log_fork_in_a_directory_and_over_http(
    farm: Farm, tmp_path: Path
) -> None:
    data = export(farm)
    newest = farm.evidence.latest()
    assert newest is not None
    bigger = forged_log(farm, tmp_path / "forged", newest.checkpoint.size + 5)
    mirror = tiles_of(bigger, tmp_path / "mirror")
    r = verify(farm, data, mirrors=(str(mirror),))
    assert r.verdict == "fail"
    found = forks(r)
    assert found and all(f"mirror {mirror}" in m for m in found)
    assert any("bundle checkpoint 1" in m for m in found), found
    assert r.outside_checkpoints[0]["status"] == "fork"

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        r = verify(farm, data, mirrors=(url,))
    finally:
        server.shutdown()
        server.server_close()
    assert r.verdict == "fail" and any(f"mirror {url}" in m for m in forks(r))


def test_same_size_other_root_from_a_mirror_and_a_witness_checkpoint(
    farm: Farm, tmp_path: Path
) -> None:
    data = export(farm)
    newest = farm.evidence.latest()
    assert newest is not None
    size = newest.checkpoint.size
    same = forged_log(farm, tmp_path / "forged", size)
    forged = same.latest()
    assert forged is not None and forged.checkpoint.root_hash != newest.checkpoint.root_hash
    mirror = tiles_of(same, tmp_path / "mirror")

    r = verify(farm, data, witness_checkpoints=(("w1.note", forged.note),))
    (msg,) = forks(r)
    assert f"two different trees of {size} entries" in msg
    assert "witness checkpoint w1.note" in msg and "bundle checkpoint 1" in msg
    assert forged.checkpoint.root_hash.hex() in msg and newest.checkpoint.root_hash.hex() in msg

    r = verify(farm, data, mirrors=(str(mirror),))
    assert any(f"mirror {mirror}" in m and "bundle checkpoint 1" in m for m in forks(r))
    # the bundle's checkpoint 0 is smaller than the mirror: its tiles must extend it, and don't
    assert any("does not extend" in m and "bundle checkpoint 0" in m for m in forks(r))


def test_unusable_and_unlinked_outside_views_are_said_so(farm: Farm, tmp_path: Path) -> None:
    data = export(farm)
    # a witness checkpoint of a later size: nothing to compare it with, so a warning
    g = farm.gateways[0]
    farm.run(g, T0 + 1200, 2)
    farm.checkpoint()
    later = farm.evidence.latest()
    assert later is not None
    r = verify(farm, data, witness_checkpoints=(("later.note", later.note),))
    assert "outside_checkpoint_unlinked" in r.codes("warning") and not forks(r)

    # a checkpoint of another log: invalid; tiles that do not rebuild the root: invalid
    other = sign_checkpoint(Checkpoint("other.example/log", 3, b"\1" * 32),
                            generate_key("other.example/log"))
    broken = tiles_of(farm.evidence, tmp_path / "broken")
    tile = next(p for p in sorted((broken / "tile" / "0").rglob("*")) if p.is_file())
    tile.write_bytes(b"\0" * len(tile.read_bytes()))
    r = verify(farm, data, witness_checkpoints=(("other.note", other),),
               mirrors=(str(broken), str(tmp_path / "absent")))
    invalid = [f.message for f in r.findings if f.code == "outside_checkpoint_invalid"]
    assert len(invalid) == 3, invalid
    assert any("other.note" in m for m in invalid)
    assert any(str(tmp_path / "absent") in m and "cannot be read" in m for m in invalid)


def test_the_command_line(farm: Farm, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.fpb"
    bundle.write_bytes(export(farm))
    newest = farm.evidence.latest()
    assert newest is not None
    mirror = tiles_of(forged_log(farm, tmp_path / "forged", newest.checkpoint.size),
                      tmp_path / "mirror")
    base = ["verify", str(bundle), "--offline", "--log-key", farm.vkey]
    got = CliRunner().invoke(cli, [*base, "--mirror", str(mirror), "--json"])
    assert got.exit_code == 1 and '"code": "log_fork"' in got.output, got.output
    assert '"status": "fork"' in got.output
    human = CliRunner().invoke(cli, [*base, "--mirror", str(mirror)])
    assert f"mirror {mirror} size {newest.checkpoint.size}: FORK" in human.output

    for wrong, says in (
        (["--require-quorum"], "--require-quorum needs --policy"),
        (["--all-anchors"], "drop --offline"),
        (["--from-block", "3"], "go with --all-anchors"),
        (["--mirror", str(mirror), str(bundle)], "verify each log's bundle on its own"),
    ):
        got = CliRunner().invoke(cli, [*base, *wrong])
        assert got.exit_code == 2 and says in got.output, (wrong, got.output)


def test_a_mirror_between_the_bundles_checkpoints_links_only_the_smaller(
    farm: Farm, tmp_path: Path
) -> None:
    """A mirror at a size the bundle holds no checkpoint of proves the smaller checkpoints
    consistent, but cannot link the larger ones: both may extend a common tree and differ
    after it. That is said, not passed over."""
    data = export(farm)
    small, large = (c.checkpoint.size for c in farm.evidence.checkpoints())
    between = small + 2
    assert between < large
    signer = load_or_create_log_key(farm.config.log_key_file, farm.config.log_origin)
    note = sign_checkpoint(
        Checkpoint(farm.config.log_origin, between, farm.evidence.log.root(between)), signer)
    mirror = tmp_path / "mirror"
    write_tiles(farm.evidence.log, between, note, mirror)
    r = verify(farm, data, mirrors=(str(mirror),))
    assert forks(r) == []
    (view,) = r.outside_checkpoints
    assert view["status"] == "consistent" and "1 other signed checkpoint" in view["detail"]
    (msg,) = [f.message for f in r.findings if f.code == "outside_checkpoint_unlinked"]
    assert f"checkpoint(s) of {large} entries" in msg and f"(size {between})" in msg
