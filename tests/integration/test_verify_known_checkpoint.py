"""Checkpoints the inspector already trusts (``verify --known-checkpoint``, ``export
--since-checkpoint``): a bundle must prove it extends them, and one built on a rewritten
history fails with its own finding (docs/bundle.md §5 step 3, §9).

Collector state is built with the collector's own classes (tests/support/bundles.Farm) and
anchored on a real VeChainThor node: thor solo, one for the module (tests/support/thor_solo.py),
each anchor driven to the node's own finality. The rewritten log is a second collector database
signed with the same log key: what an operator who rewrote history and re-signed it would hand
over.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from collector.export import ExportError, build_bundle, export_bundle
from collector.export_cli import export_command
from fieldproof.formats.bundle import decode_bundle
from fieldproof.formats.note import generate_key
from inspector.cli import verify_command
from inspector.verify import VerificationResult, verify_bundle
from tests.support import thor_solo
from tests.support.bundles import Farm, anchor_thor, rewrite
from tests.support.thor_solo import SoloChain

pytestmark = pytest.mark.integration

NOW = time.time()
T0 = NOW - 7200


node = thor_solo.farm_node  # the rig's fixture: a node with THOR_KEY funded, bound by name


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path / "honest")
    yield f
    f.close()


def _history(farm: Farm, node: SoloChain) -> bytes:
    """Two checkpoints; only the second is anchored, so a plain export leaves the first out.
    Returns the first one's note: what an inspector kept from an earlier audit."""
    g = farm.enroll()
    farm.run(g, T0, 6)
    farm.checkpoint()
    latest = farm.evidence.latest()
    assert latest is not None
    known = latest.note
    farm.run(g, T0 + 600, 6)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    return known


def _export(farm: Farm, since: tuple[bytes, ...] = ()) -> bytes:
    return export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60, since=since)


def _verify(farm: Farm, node: SoloChain, data: bytes, known: list[bytes]) -> VerificationResult:
    return verify_bundle(data, nodes=[node.url], chain="thor", offline=False, log_key=farm.vkey,
                         known_checkpoints=known)


def test_linked_only_when_the_bundle_holds_the_known_checkpoint(farm: Farm,
                                                                 node: SoloChain) -> None:
    known = _history(farm, node)
    plain = _export(farm)
    assert len(decode_bundle(plain).checkpoints) == 1  # the earlier one is not needed
    r = _verify(farm, node, plain, [known])
    assert r.verdict == "fail" and r.codes("error") == {"known_checkpoint_unlinked"}
    assert [k.status for k in r.known_checkpoints] == ["unlinked"]
    assert "--since-checkpoint" in next(f.message for f in r.findings
                                        if f.code == "known_checkpoint_unlinked")
    assert len(r.messages) == 12  # the evidence itself still verifies

    linked = _export(farm, since=(known,))
    assert len(decode_bundle(linked).checkpoints) == 2
    r = _verify(farm, node, linked, [known])
    assert r.verdict == "pass", [f.message for f in r.findings]
    (k,) = r.known_checkpoints
    assert (k.status, k.position, k.size) == ("linked", 0, 8)  # enrollment, 6 messages, seal
    # entries before the known checkpoint are proven into it, and still bounded by the anchor
    assert all(m.anchored for m in r.messages) and len(r.messages) == 12
    assert r.to_json()["known_checkpoints"][0]["status"] == "linked"


def _rewritten(tmp_path: Path, farm: Farm, node: SoloChain) -> Farm:
    """The same log (origin and key) with a different history behind the known checkpoint:
    the first six messages are replaced by others, then everything is re-signed."""
    evil = Farm(tmp_path / "rewritten")
    shutil.copy(farm.config.log_key_file, evil.config.log_key_file)
    evil.close()
    evil = Farm(tmp_path / "rewritten")  # reopened: the copied key is now the log key
    g = evil.enroll()
    evil.run(g, T0, 6, step=30.0)
    evil.checkpoint()
    anchor_thor(evil, node.url, node.mine)  # both anchored: a plain export carries both
    evil.run(g, T0 + 600, 6)
    evil.checkpoint()
    anchor_thor(evil, node.url, node.mine)
    return evil


def test_rewritten_history_conflicts_with_the_known_checkpoint(tmp_path: Path, farm: Farm,
                                                                node: SoloChain) -> None:
    known = _history(farm, node)
    evil = _rewritten(tmp_path, farm, node)
    try:
        assert evil.vkey == farm.vkey
        # the operator's own tool refuses to link the rewritten log to the old checkpoint
        with pytest.raises(ExportError, match="history differs"):
            build_bundle(evil.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60, since=[known])
        # a bundle of the rewritten log: a checkpoint of the same size with another root
        forked = export_bundle(evil.config, farm=None, field=None, gateway=None,
                               start=T0 - 60, end=NOW + 60)
        assert [len(c.anchors) for c in decode_bundle(forked).checkpoints] == [1, 1]
        r = _verify(farm, node, forked, [known])
        assert r.codes("error") == {"known_checkpoint_conflict"}
        assert r.known_checkpoints[0].status == "conflict"
        # without the known checkpoint the rewritten history passes: nothing else can tell
        assert _verify(farm, node, forked, []).verdict == "pass"

        # the original note put in place of the rewritten one of its size: the consistency
        # proof cannot link it to the later checkpoint, and the known checkpoint names the break
        def splice(o: dict[str, Any]) -> None:
            o["checkpoints"][0] = {"note": known, "anchors": []}

        spliced = rewrite(forked, splice)
        r = _verify(farm, node, spliced, [known])
        assert {"consistency_failed", "known_checkpoint_conflict"} <= r.codes("error")
        assert r.known_checkpoints[0].status == "conflict"
        assert "checkpoint(s) 1 (size 15)" in next(
            f.message for f in r.findings if f.code == "known_checkpoint_conflict")
    finally:
        evil.close()


def test_a_checkpoint_of_another_log_key_is_refused(farm: Farm, node: SoloChain) -> None:
    known = _history(farm, node)
    other = generate_key(farm.config.log_origin)
    from fieldproof.formats.checkpoint import open_checkpoint, sign_checkpoint

    cp = open_checkpoint(known, farm.evidence.verifier())
    forged = sign_checkpoint(cp, other)
    r = _verify(farm, node, _export(farm, since=(known,)), [forged, b"not a note"])
    assert r.codes("error") == {"known_checkpoint_invalid"}
    assert [k.status for k in r.known_checkpoints] == ["invalid", "invalid"]
    with pytest.raises(ExportError, match="signed by its key"):
        _export(farm, since=(forged,))


def test_cli_saves_and_links_checkpoints(tmp_path: Path, farm: Farm, node: SoloChain) -> None:
    """The inspector's round trip: verify and keep a checkpoint, later verify a newer bundle
    exported --since that checkpoint."""
    g = farm.enroll()
    for start in (T0, T0 + 300):
        farm.run(g, start, 4)
        farm.checkpoint()
        anchor_thor(farm, node.url, node.mine)
    first = tmp_path / "first.fpb"
    first.write_bytes(_export(farm))
    kept = tmp_path / "kept.note"
    runner = CliRunner()
    res = runner.invoke(verify_command, [str(first), "--log-key", farm.vkey, "--node",
                                         node.url, "--save-checkpoint", str(kept)])
    assert res.exit_code == 0, res.output
    assert kept.read_bytes() == farm.evidence.checkpoints()[-1].note

    later = farm.enroll()  # a gateway installed after the audit: the next bundle is its own
    farm.run(later, T0 + 900, 4)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    config = tmp_path / "collector.toml"
    config.write_text(f'collector_id = "{farm.config.collector_id}"\n'
                      f'data_dir = "{farm.root}"\n')
    scope = ["--config", str(config), "--gateway", later.gateway, "--from", str(T0), "--to",
             str(NOW + 60)]
    second = tmp_path / "second.fpb"
    res = runner.invoke(export_command, [*scope, "-o", str(second), "--since-checkpoint",
                                         str(kept)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(verify_command, [str(second), "--log-key", farm.vkey, "--node",
                                         node.url, "--known-checkpoint", str(kept)])
    assert res.exit_code == 0, res.output
    assert "known checkpoint #1 size 11: LINKED" in res.output  # 1 + 4 + seal + 4 + seal
    # without --since-checkpoint the newer bundle cannot be linked: exit 1, and it says why
    plain = tmp_path / "plain.fpb"
    res = runner.invoke(export_command, [*scope, "-o", str(plain)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(verify_command, [str(plain), "--log-key", farm.vkey, "--node",
                                         node.url, "--known-checkpoint", str(kept)])
    assert res.exit_code == 1 and "known_checkpoint_unlinked" in res.output
    res = runner.invoke(verify_command, [str(plain), "--offline", "--known-checkpoint",
                                         str(tmp_path / "missing.note")])
    assert res.exit_code == 2 and "cannot read" in res.output
