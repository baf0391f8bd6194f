"""``fieldproof verify --all-anchors`` on a real VeChainThor node (thor solo, and an EVM dev
chain, anvil, behind the same chain-reader protocol): the verifier reads
every block of a range through the chain reader, finds every anchor of the bundle's log, and
checks the bundle against each (docs/bundle.md §5 step 4b). A second log under the same key and
origin anchored by the operator's account is ``anchor_conflict`` (an error); the same record
sent by a stranger's account is a warning; a block budget too small for the range is said so."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from anchor import thor
from anchor.chain_reader import make_reader
from anchor.devchain import DevChain
from collector.export import evm_genesis_of, export_bundle
from fieldproof.formats.anchor_record import AnchorRecord
from fieldproof.formats.bundle import decode_bundle
from inspector.anchor_scan import ScanRange
from inspector.report import render_html
from inspector.results import VerificationResult, VerifyOptions
from inspector.verify import verify_bundle
from tests.support import thor_solo
from tests.support.anchoring import anchor_on_evm, forged_checkpoint
from tests.support.bundles import THOR_KEY, Farm, anchor_thor, evm_anchor, thor_anchor
from tests.support.thor_solo import DEV_KEYS, SoloChain, finalize, signed

pytestmark = pytest.mark.integration

NOW = time.time()
T0 = NOW - 7200
STRANGER = DEV_KEYS[3]


node = thor_solo.farm_node  # the rig's fixture: a node with THOR_KEY funded, bound by name


@pytest.fixture
def farm(tmp_path: Path, node: SoloChain) -> Iterator[Farm]:
    f = Farm(tmp_path / "collector")
    g = f.enroll()
    f.run(g, T0, 6)
    f.checkpoint()
    anchor_thor(f, node.url, node.mine)
    yield f
    f.close()


def export(farm: Farm) -> bytes:
    return export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60)


def verify(farm: Farm, node: SoloChain, data: bytes, rng: ScanRange) -> VerificationResult:
    return verify_bundle(data, nodes=[node.url], chain="thor", offline=False,
                         log_key=farm.vkey, options=VerifyOptions(all_anchors=rng))


def test_every_anchor_is_found_and_a_second_history_is_caught(
    farm: Farm, node: SoloChain, tmp_path: Path
) -> None:
    data = export(farm)
    honest = farm.evidence.latest()
    assert honest is not None
    r = verify(farm, node, data, ScanRange(from_block=0))
    assert r.verdict != "fail", [f.message for f in r.findings]
    scan = r.all_anchors
    assert scan is not None and scan["complete"] and scan["first_block"] == 0
    assert [a["status"] for a in scan["anchors"]] == ["matches"]
    assert scan["anchors"][0]["size"] == honest.checkpoint.size
    assert scan["anchors"][0]["root"] == honest.checkpoint.root_hash.hex()
    page = render_html(r)  # the report's scan section: range, completeness, what was found
    assert "<h2>Every anchor of the log on chain (--all-anchors)</h2>" in page
    assert f"blocks 0–{scan['last_block']:,}" in page and "complete</span>: every block" in page
    assert "1 anchor(s) of this log found: 1 match the signed checkpoints, 0 conflict" in page

    # the operator's account anchors another tree of the same size
    forged = forged_checkpoint(farm.config, tmp_path / "forged", honest.checkpoint.size)
    other = forged.latest()
    assert other is not None
    tx = thor_anchor(tmp_path / "forged" / "anchors.sqlite", other.checkpoint, other.note,
                     node.url, node.mine)
    # from here on the default range: from the lowest block the bundle's anchors claim
    r = verify(farm, node, data, ScanRange())
    assert r.all_anchors is not None and r.all_anchors["first_block"] > 0
    (msg,) = [f.message for f in r.findings if f.code == "anchor_conflict"]
    assert r.verdict == "fail" and "anchor_conflict" in r.codes("error")
    assert tx in msg and other.checkpoint.root_hash.hex() in msg and "bundle checkpoint 0" in msg
    assert "the operator anchored two histories" in msg
    page = render_html(r)  # the conflict names both roots and the operator's account
    assert (f"CONFLICT</b>: it anchors root <code>{other.checkpoint.root_hash.hex()}</code>, but "
            f"bundle checkpoint 0 signs root <code>{honest.checkpoint.root_hash.hex()}</code>"
            ) in page
    assert "(the account that sent this bundle's anchors)" in page
    forged.db.close()

    # a stranger's account anchors a made-up root for the same size: a warning only
    record = AnchorRecord.for_checkpoint(farm.config.log_origin, honest.checkpoint.size,
                                         b"\x42" * 32).encode()
    me = thor.address_of(STRANGER)
    stranger_tx = signed(node.client, STRANGER, clauses=(thor.Clause(me, 0, record),))
    node.client.send_raw(stranger_tx.encode())
    finalize(node.client)
    r = verify(farm, node, data, ScanRange())
    conflicts = {f.message.split()[2]: f.severity for f in r.findings
                 if f.code == "anchor_conflict"}
    assert conflicts == {tx: "error", stranger_tx.id_hex(): "warning"}, conflicts


def test_the_block_budget_bounds_the_scan(farm: Farm, node: SoloChain) -> None:
    data = export(farm)
    r = verify(farm, node, data, ScanRange(from_block=0, max_blocks=5))
    scan = r.all_anchors
    assert scan is not None and not scan["complete"] and scan["last_block"] == 4
    (msg,) = [f.message for f in r.findings if f.code == "anchor_scan_incomplete"]
    assert "--from-block 5" in msg
    page = render_html(r)
    assert "NOT complete</b>: the scan stopped at block 4" in page and "--from-block 5" in page


def test_the_reader_scans_through_the_chain_protocol(farm: Farm, node: SoloChain) -> None:
    honest = farm.evidence.latest()
    assert honest is not None
    (claimed,) = decode_bundle(export(farm)).checkpoints[0].anchors
    first = claimed.block_number - 3
    reader = make_reader("thor", node.url, network=claimed.network)
    try:
        head = node.client.best_block().number
        scan = reader.scan_anchors(farm.config.log_origin, first, head)
        assert scan.complete and (scan.first_block, scan.last_block) == (first, head)
        # every tx of every block read (solo also packs an empty block every 10 s)
        in_range = sum(len(b.transactions) for n in range(first, head + 1)
                       if (b := node.client.block(n)) is not None)
        assert scan.transactions_seen == in_range > 0
        mine = [a for a in scan.anchors
                if a.record == AnchorRecord.for_checkpoint(
                    honest.checkpoint.origin, honest.checkpoint.size,
                    honest.checkpoint.root_hash)]
        assert len(mine) == 1 and mine[0].finalized
        assert mine[0].sender == "0x" + THOR_KEY.address.hex()
        assert reader.scan_anchors("nobody.example/log", first, head).anchors == []
    finally:
        reader.close()


@pytest.fixture(scope="module")
def evm_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevChain]:
    with DevChain(tmp_path_factory.mktemp("anvil"), automine=False, slots_in_an_epoch=1) as c:
        yield c


def test_every_anchor_on_an_evm_chain(tmp_path: Path, evm_chain: DevChain) -> None:
    """The same scan behind the same protocol on an EVM dev chain (anvil): the honest anchor
    matches, a second history anchored from the operator's account is an error."""
    farm = Farm(tmp_path / "collector")
    try:
        honest = anchor_on_evm(farm, evm_chain, T0, 4)
        data = export_bundle(farm.config, farm=None, field=None, gateway=None,
                             start=T0 - 60, end=NOW + 60,
                             evm_genesis=dict([evm_genesis_of(evm_chain.url)]))

        def verify_evm() -> VerificationResult:
            return verify_bundle(data, nodes=[evm_chain.url], chain="evm", offline=False,
                                 log_key=farm.vkey,
                                 options=VerifyOptions(all_anchors=ScanRange(from_block=0)))

        r = verify_evm()
        assert r.all_anchors is not None and r.all_anchors["complete"]
        assert [a["status"] for a in r.all_anchors["anchors"]] == ["matches"], r.findings

        forged = forged_checkpoint(farm.config, tmp_path / "forged", honest.checkpoint.size)
        other = forged.latest()
        assert other is not None
        tx = evm_anchor(tmp_path / "forged" / "anchors-evm.sqlite", other.checkpoint, evm_chain)
        forged.db.close()
        r = verify_evm()
        (msg,) = [f.message for f in r.findings if f.code == "anchor_conflict"]
        assert "anchor_conflict" in r.codes("error") and tx.lower() in msg.lower()
        assert other.checkpoint.root_hash.hex() in msg
    finally:
        farm.close()
