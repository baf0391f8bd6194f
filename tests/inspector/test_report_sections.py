"""The report's sections for the checks an inspector asks for (docs/bundle.md §5 steps 3a, 4a,
9) and for a bundle that cannot be read: each result is made by the real verifier on a bundle
the collector's own code exported, rendered to HTML, and the section's words are checked. The
sections that need a real peer (a witness's cosignature, a chain to scan) are checked where
those peers already run: tests/integration/test_verify_policy.py and
test_verify_all_anchors.py."""

from __future__ import annotations

import ast
import html
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import inspector.report
from anchor.chain_reader import explorer_url, network_label
from anchor.evidence import EvidenceLog
from anchor.tiles import write_tiles
from collector.export import export_bundle
from fieldproof.datadir import open_db
from fieldproof.formats.cosignature import CosignatureVerifier
from inspector.anchor_scan import ScanRange
from inspector.multi import verify_bundles
from inspector.policy import Policy
from inspector.report import render_html, render_multi_html
from inspector.results import VerificationResult, VerifyOptions
from inspector.verify import verify_bundle
from tests.support.bundles import Farm, rewrite

NOW = time.time()
T0 = NOW - 7200


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    f = Farm(tmp_path_factory.mktemp("sections"))
    north = f.enroll("farm-a", "north")
    south = f.enroll("farm-a", "south")
    f.run(north, T0, 6)
    f.run(south, T0 + 30, 5)  # logged last: its latest message is the log's last entry
    f.checkpoint()
    yield f
    f.close()


@pytest.fixture(scope="module")
def bundle(farm: Farm) -> bytes:
    return export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60)


def verify(farm: Farm, data: bytes, *, log_key: str | None = "pinned",
           known: tuple[bytes, ...] = (), **options: object) -> VerificationResult:
    return verify_bundle(data, nodes=[], chain=None, offline=True,
                         log_key=farm.vkey if log_key == "pinned" else log_key,
                         known_checkpoints=known,
                         options=VerifyOptions(**options))  # type: ignore[arg-type]


def text(page: str) -> str:
    """The page's words without tags, as a reader sees them (cells and paragraphs apart)."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.S)
    page = re.sub(r"</?(?:td|th|tr|p|h[1-6]|dt|dd|li|br|div|table)\b[^>]*>", " ", page)
    return " ".join(html.unescape(re.sub(r"<[^>]*>", "", page)).split())


# ----------------------------------------------------------------------------- chain display


def test_chain_display_lives_with_the_readers() -> None:
    thor_main = "0x00000000851caf3cfdb6e899cf5958bfb1ac3413d346d43539627e6be7ec1b4a"
    tx = "0x" + "ab" * 32
    assert explorer_url("thor", thor_main, tx) == f"https://explore.vechain.org/transactions/{tx}"
    assert explorer_url("evm", "11155111", tx) == f"https://sepolia.etherscan.io/tx/{tx}"
    assert explorer_url("evm", "31337", tx) is None  # a dev chain has no public explorer
    assert explorer_url("thor", "0x" + "00" * 32, tx) is None
    assert network_label("thor", thor_main) == "VeChainThor mainnet (genesis 0x0000000085…)"
    assert network_label("evm", "1", "0xd4e56740f876aef8c010b86a40d5f56745a118d0906a34e69aec8c0"
                         "db1cb8fa3") == "EVM chain id 1 (Ethereum mainnet), genesis 0xd4e56740f8…"
    assert network_label("evm", "31337", None) == "EVM chain id 31337 (no genesis recorded)"


def test_the_report_names_no_chain() -> None:
    """Which chain an anchor is on is the readers' business: the report compares no value
    with a chain's name (the display functions above do it once, next to the readers)."""
    tree = ast.parse(Path(inspector.report.__file__).read_text(encoding="utf-8"))
    named = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.Constant) and node.value in ("thor", "evm")]
    assert named == []


# ----------------------------------------------------------------------------- seal


def test_only_the_checks_that_ran_have_a_section(farm: Farm, bundle: bytes) -> None:
    page = text(render_html(verify(farm, bundle)))
    assert "Trust policy" not in page
    assert "Outside views" not in page
    assert "--all-anchors" not in page
    assert "could not be read" not in page
    # the seal is checked in every verification of a readable bundle
    assert "The log's completeness seal" in page


def test_seal_found_and_each_gateway_against_it(farm: Farm, bundle: bytes) -> None:
    r = verify(farm, bundle)
    assert r.seal is not None and r.seal["status"] == "sealed"
    page = text(render_html(r))
    assert f"Seal found at the proving checkpoint (tree size {r.seal['size']}" in page
    for g in farm.gateways:
        # gateway, state by the seal, the latest seq the log held, what the bundle holds
        assert f"{g.gateway} complete {g.seq} seq 1–{g.seq} ({g.seq:,} verified)" in page


def test_seal_shows_a_tail_cut_against_the_log(farm: Farm, bundle: bytes) -> None:
    """The exporter leaves out the log's last message (south's latest): by the seal the log
    held it, so the report sets south's sealed latest seq against what the bundle holds."""
    cut = rewrite(bundle, lambda b: b["messages"].remove(max(b["messages"])))
    r = verify(farm, cut)
    latest, south = farm.gateways[-1].seq, farm.gateways[-1].gateway
    assert r.seal is not None and r.seal["gateways"][south] == "tail cut"
    page = text(render_html(r))
    assert (f"Evidence WITHHELD: by the log's seal at tree size {r.seal['size']}, evidence of "
            f"{south} was left out") in page
    assert f"{south} TAIL CUT {latest} seq 1–{latest - 1}" in page


def test_no_seal_completeness_not_provable(farm: Farm, bundle: bytes) -> None:
    r = verify(farm, rewrite(bundle, lambda b: b.pop("seal")))
    assert r.seal is not None and r.seal["status"] == "absent"
    page = text(render_html(r))
    assert "Completeness not provable: the bundle carries no seal" in page
    assert "completeness_not_provable" in page  # the code stays in the findings table


# ----------------------------------------------------------------------------- policy


def _witness_vkey(name: str) -> str:
    pub = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return CosignatureVerifier(name, pub).vkey


def test_policy_quorum_not_met_names_the_missing_witnesses(farm: Farm, bundle: bytes) -> None:
    policy = Policy.parse(
        f"log {farm.vkey}\n"
        f"witness a {_witness_vkey('witness-a.example/w1')} https://a.example\n"
        f"witness b {_witness_vkey('witness-b.example/w1')} https://b.example\n"
        "group ab all a b\nquorum ab\n")
    r = verify(farm, bundle, log_key=None, policy=policy)
    assert r.policy is not None and r.policy["status"] == "not_met"
    page = text(render_html(r))
    assert "Trust policy (--policy)" in page
    assert f"your trust policy ({policy.describe()})" in page
    assert "anchors were not checked (offline)" in page
    size = r.checkpoints[-1].size
    assert f"Quorum NOT met: 1 checkpoint(s) count for nothing under the policy (#0 size {size})"\
        in page
    # per checkpoint: signed by the policy's log, cosigned by none, missing a and b
    assert f"#0 size {size} yes none a, b not met not checked (offline) counts for nothing" \
        in page
    assert "policy_quorum_not_met" in page


def test_policy_without_quorum_is_met(farm: Farm, bundle: bytes) -> None:
    r = verify(farm, bundle, log_key=None, policy=Policy.parse(f"log {farm.vkey}\nquorum none\n"))
    page = text(render_html(r))
    assert f"Quorum met: checkpoint #0 size {r.checkpoints[-1].size} counts" in page


# ----------------------------------------------------------------------------- anchor scan


def test_an_anchor_scan_no_node_answered(farm: Farm, bundle: bytes) -> None:
    """The scan's section when no node can be asked (a closed port); a scan that ran is checked
    on a real node in tests/integration/test_verify_all_anchors.py."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    r = verify_bundle(bundle, nodes=[url], chain="thor", offline=False, log_key=farm.vkey,
                      options=VerifyOptions(all_anchors=ScanRange(), node_timeout_s=2))
    assert r.all_anchors is not None and r.all_anchors["head"] is None
    page = text(render_html(r))
    assert (f"Every anchor of the log on chain (--all-anchors) Asked thor through {url} for "
            "every anchor of this log: no node could be scanned, so whether the chain holds "
            "other anchors of this log is not known") in page
    assert "node_unreachable" in page


# ----------------------------------------------------------------------------- outside views


def forged_log(farm: Farm, where: Path, size: int) -> EvidenceLog:
    """Another log under the farm's key and origin, other entries, signed at ``size`` entries
    (a checkpoint appends a seal, so it is grown until it lands there)."""
    where.mkdir(parents=True)
    key = where / "log.key"
    shutil.copy(farm.config.log_key_file, key)
    key.chmod(0o600)
    ev = EvidenceLog.open(open_db(where / "collector.sqlite"), farm.config.log_origin, key)
    n = 0
    while (latest := ev.latest()) is None or latest.checkpoint.size < size:
        with ev.db:
            ev.append([f"forged-{n}-{i}".encode()
                       for i in range(max(1, size - ev.log.size() - 1))])
        n += 1
        ev.checkpoint()
    assert latest.checkpoint.size == size
    return ev


def test_outside_views_linked_and_a_fork_naming_both_roots(
    farm: Farm, bundle: bytes, tmp_path: Path
) -> None:
    honest = farm.evidence.latest()
    assert honest is not None
    mirror = tmp_path / "mirror"
    write_tiles(farm.evidence.log, honest.checkpoint.size, honest.note, mirror)
    forged = forged_log(farm, tmp_path / "forged", honest.checkpoint.size)
    other = forged.latest()
    assert other is not None
    forged.db.close()

    size, honest_root = honest.checkpoint.size, honest.checkpoint.root_hash.hex()
    r = verify(farm, bundle, known=(honest.note,), mirrors=(str(mirror),))
    page = text(render_html(r))
    assert "Outside views of the log (split-view check)" in page
    assert ("compared with 2 checkpoint(s) from outside the bundle: No other history was "
            "found") in page
    assert f"known checkpoint #1 (--known-checkpoint) {size} {honest_root[:16]}… linked" in page
    assert f"mirror {mirror} {size} {honest_root[:16]}… linked: compared with" in page

    # the other history, as a witness's checkpoint: the fork names both roots and their places
    forged_root = other.checkpoint.root_hash.hex()
    r = verify(farm, bundle, witness_checkpoints=(("from-elsewhere.note", other.note),))
    page = text(render_html(r))
    assert "1 outside checkpoint(s) show another history" in page
    assert (f"witness checkpoint from-elsewhere.note {size} {forged_root[:16]}… LOG FORK: the "
            f"log key signed two histories. This view signs root {forged_root} for {size} "
            f"entries; bundle checkpoint 0 signs root {honest_root}.") in page
    assert "log_fork" in page


# ----------------------------------------------------------------------------- unreadable


def test_a_cut_short_bundle_says_why_not_an_empty_report(farm: Farm, bundle: bytes) -> None:
    r = verify(farm, bundle[: len(bundle) // 2])
    assert r.unreadable
    page = text(render_html(r))
    assert f"The bundle could not be read {r.unreadable}" in page
    assert "the file is cut short" in page and "copy it again" in page
    assert "Nothing in it was checked" in page
    for empty in ("Gateways", "Crop history", "Checkpoints and anchors", "completeness seal"):
        assert empty not in page


def test_a_cut_short_bundle_among_several(farm: Farm, bundle: bytes) -> None:
    multi = verify_bundles([("whole.cbor", bundle), ("cut.cbor", bundle[:200])], nodes=[],
                           chain=None, offline=True, log_keys=[farm.vkey])
    page = text(render_multi_html(multi))
    (cut,) = [b.result for b in multi.bundles if b.label == "cut.cbor"]
    assert f"Bundle cut.cbor: FAIL The bundle could not be read {cut.unreadable}" in page
    assert "The log's completeness seal" in page  # the whole bundle's sections are there
