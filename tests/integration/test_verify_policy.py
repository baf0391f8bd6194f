"""``fieldproof verify --policy`` on a bundle the collector's own code exported, its checkpoints
cosigned by real C2SP witnesses (torchwood's litewitness, started by fieldproof.services), and a
split view caught through a witness: a second log under the same key and origin, cosigned by a
witness that never saw the honest one, contradicts the bundle (docs/bundle.md §5 steps 3a, 4a).

A missing litewitness build makes these tests fail (run scripts/peers), never skip."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from anchor.evidence import EvidenceLog
from anchor.witness import Witnesses
from collector.export import export_bundle
from fieldproof.cli import cli
from fieldproof.config import WitnessConfig
from fieldproof.services import Litewitness, ServiceError
from inspector.policy import Policy
from inspector.report import render_html
from inspector.results import VerificationResult, VerifyOptions
from inspector.verify import verify_bundle
from tests.support.anchoring import forged_checkpoint
from tests.support.bundles import Farm

pytestmark = pytest.mark.integration

NOW = time.time()
T0 = NOW - 7200


def start_witness(workdir: Path, name: str, logs: list[tuple[str, str]]) -> Litewitness:
    w = Litewitness(workdir, witness_name=name, logs=logs)
    try:
        w.start()
    except ServiceError as exc:
        w.close()
        pytest.fail(str(exc), pytrace=False)
    return w


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path / "collector")
    g = f.enroll()
    f.run(g, T0, 8)
    f.checkpoint()
    yield f
    f.close()


@pytest.fixture
def witnesses(tmp_path: Path, farm: Farm) -> Iterator[list[Litewitness]]:
    logs = [(farm.config.log_origin, farm.vkey)]
    started: list[Litewitness] = []
    try:
        for n in ("a", "b", "c"):
            started.append(start_witness(tmp_path / f"w-{n}", f"witness-{n}.example/w1", logs))
        yield started
    finally:
        for w in started:
            w.close()


def cosign(db_owner: EvidenceLog, *ws: Litewitness) -> None:
    """Ask each witness to cosign the log's newest checkpoint (the collector's own code)."""
    configs = [WitnessConfig(name=w.witness_name, url=w.url, vkey=w.vkey, timeout_s=5,
                             retry_s=0) for w in ws]
    cosigner = Witnesses(db_owner.db, db_owner, configs)
    try:
        cosigner.cosign_latest()
        assert all(s == "ok" for s in cosigner.status().values()), cosigner.status()
    finally:
        cosigner.close()


def policy_text(farm: Farm, ws: list[Litewitness], threshold: str) -> str:
    """Witnesses a, b, c; the quorum: ``threshold`` (all, any, k) of a and b."""
    lines = [f"log {farm.vkey}"]
    lines += [f"witness {n} {w.vkey} {w.url}" for n, w in zip("abc", ws, strict=True)]
    lines += [f"group ab {threshold} a b", "quorum ab"]
    return "\n".join(lines) + "\n"


def export(farm: Farm) -> bytes:
    return export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60)


def verify(data: bytes, policy: str, **options: object) -> VerificationResult:
    return verify_bundle(data, nodes=[], chain=None, offline=True, log_key=None,
                         options=VerifyOptions(policy=Policy.parse(policy),
                                               **options))  # type: ignore[arg-type]


def test_quorum_met_and_not_met_with_real_cosignatures(
    farm: Farm, witnesses: list[Litewitness], tmp_path: Path
) -> None:
    a, b, _ = witnesses
    cosign(farm.evidence, a)
    data = export(farm)
    note = farm.evidence.latest()
    assert note is not None and a.witness_name.encode() in note.note

    # all of a and b: b never cosigned
    r = verify(data, policy_text(farm, witnesses, "all"))
    (msg,) = [f.message for f in r.findings if f.code == "policy_quorum_not_met"]
    assert "cosigned by a;" in msg and "missing b, c" in msg and "--offline" in msg
    assert r.verdict == "fail" and r.policy is not None and r.policy["status"] == "not_met"
    # the policy's log line pinned the key: no log_key_not_pinned
    assert "log_key_not_pinned" not in r.codes() and r.log_key_pinned

    # any of a and b: a's cosignature is enough
    r = verify(data, policy_text(farm, witnesses, "any"))
    assert "policy_quorum_not_met" not in r.codes() and "policy_quorum_met" in r.codes("info")
    assert r.policy is not None and r.policy["checkpoints"][-1]["signed"] == ["a"]
    # the report's policy section: who cosigned, who is missing, the quorum, per checkpoint
    page = render_html(r)
    assert "<h2>Trust policy (--policy)</h2>" in page and "Quorum met</span>: checkpoint #0" in page
    assert '<td>a</td><td>b, c</td><td><span class="ok">met</span></td>' in page

    # b cosigns too: all of a and b is met; through the command line, in --json
    cosign(farm.evidence, b)
    bundle = tmp_path / "bundle.cbor"
    bundle.write_bytes(export(farm))
    policy = tmp_path / "policy.txt"
    policy.write_text(policy_text(farm, witnesses, "all"))
    got = CliRunner().invoke(cli, ["verify", str(bundle), "--offline", "--policy", str(policy),
                                   "--json"])
    assert '"policy_quorum_met"' in got.output, got.output
    assert '"policy_quorum_not_met"' not in got.output
    human = CliRunner().invoke(cli, ["verify", str(bundle), "--offline", "--policy",
                                     str(policy)])
    assert "cosigned by a, b; missing c; counts" in human.output, human.output
    # a --log-key the policy does not list is a usage error
    wrong = CliRunner().invoke(cli, ["verify", str(bundle), "--offline", "--policy",
                                     str(policy), "--log-key", a.vkey])
    assert wrong.exit_code == 2


def test_a_split_view_cosigned_by_another_witness_is_caught(
    farm: Farm, witnesses: list[Litewitness], tmp_path: Path
) -> None:
    a, _, c = witnesses
    cosign(farm.evidence, a)
    honest = farm.evidence.latest()
    assert honest is not None
    size = honest.checkpoint.size
    data = export(farm)

    # the same key and origin, other entries, grown to the honest size; witness c sees it first
    forged = forged_checkpoint(farm.config, tmp_path / "forged", size)
    cosign(forged, c)
    other = forged.latest()
    assert other is not None and c.witness_name.encode() in other.note

    r = verify(data, policy_text(farm, witnesses, "any"),
               witness_checkpoints=(("from-witness-c.note", other.note),))
    (msg,) = [f.message for f in r.findings if f.code == "log_fork"]
    assert f"two different trees of {size} entries" in msg
    assert "witness checkpoint from-witness-c.note, cosigned by c" in msg
    assert "bundle checkpoint 0" in msg and other.checkpoint.root_hash.hex() in msg
    assert r.verdict == "fail" and r.outside_checkpoints[0]["status"] == "fork"
    forged.db.close()
