"""The verifier's findings, one situation at a time, on collector state built with the
collector's own classes (tests/support/bundles.Farm) and anchored on a real VeChainThor node:
thor solo, one for the module (tests/support/thor_solo.py), each anchor driven to the node's own
finality. The node dates its blocks by the real clock (and ahead of it as blocks are driven), so
samples are stamped relative to now or to the node's head."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.export import export_bundle
from collector.registry import Registry
from collector.store import message_digest
from fieldproof.formats.note import generate_key
from fieldproof.services import free_port
from fieldproof.wire import encode_deterministic, gateway_id_for, public_key_bytes
from inspector.verify import UsageError, VerificationResult, VerifyOptions, verify_bundle
from tests.support import thor_solo
from tests.support.bundles import Farm, Gateway, anchor_thor, rewrite
from tests.support.thor_solo import SoloChain

pytestmark = pytest.mark.integration

NOW = time.time()
T0 = NOW - 7200  # samples two hours ago; the node's blocks are dated now or later


node = thor_solo.farm_node  # the rig's fixture: a node with THOR_KEY funded, bound by name


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path)
    yield f
    f.close()


def verify(farm: Farm, node: SoloChain | None, **kw: object) -> VerificationResult:
    data = export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 86_400,
                         end=NOW + 86_400)
    args: dict[str, object] = {"nodes": [node.url] if node else [], "chain": None,
                               "offline": node is None, "log_key": farm.vkey}
    args.update(kw)
    return verify_bundle(data, **args)  # type: ignore[arg-type]


def test_clean_history_passes_without_findings(farm: Farm, node: SoloChain) -> None:
    g = farm.enroll()
    farm.run(g, T0, 20)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    r = verify(farm, node)
    assert r.verdict == "pass", r.findings
    assert r.findings == []
    assert len(r.messages) == 20 and r.verified_readings == 100
    (cp,) = r.checkpoints
    assert cp.anchored and cp.anchors[0].verified and cp.anchor_time is not None
    assert all(m.anchored and m.anchor_time == cp.anchor_time for m in r.messages)
    assert r.summary_line().startswith("PASS: 20/20 messages (100 readings)")


def test_key_not_pinned_or_wrong_key(farm: Farm, node: SoloChain) -> None:
    g = farm.enroll()
    farm.run(g, T0, 3)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    r = verify(farm, node, log_key=None)
    assert r.verdict == "warn" and r.codes() == {"log_key_not_pinned"}
    impostor = generate_key(farm.config.log_origin).verifier().vkey
    r = verify(farm, node, log_key=impostor)
    assert r.verdict == "fail"
    # one cause, not an error per checkpoint and entry (tests/inspector/test_wrong_inputs.py)
    assert r.codes() == {"log_key_mismatch"}
    assert r.messages == []


def test_usage_errors(farm: Farm, node: SoloChain) -> None:
    g = farm.enroll()
    farm.run(g, T0, 2)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    data = export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0, end=NOW)
    with pytest.raises(UsageError, match="--log-key"):
        verify_bundle(data, nodes=[], chain=None, offline=True, log_key="not a key")
    with pytest.raises(UsageError, match="--node"):
        verify_bundle(data, nodes=[], chain=None, offline=False, log_key=farm.vkey)
    with pytest.raises(UsageError, match="--chain"):
        verify_bundle(data, nodes=[], chain="btc", offline=True, log_key=farm.vkey)


def test_unreachable_node_is_an_error(farm: Farm, node: SoloChain) -> None:
    g = farm.enroll()
    farm.run(g, T0, 2)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    dead = f"http://127.0.0.1:{free_port()}"
    r = verify(farm, node, nodes=[node.url, dead])
    assert r.verdict == "fail" and r.codes("error") == {"node_unreachable"}
    assert r.checkpoints[0].anchored  # the node that answered still verified it


def test_revoked_gateway(farm: Farm, node: SoloChain) -> None:
    g = farm.enroll()
    farm.run(g, T0, 5)
    farm.registry.revoke(g.gateway)
    farm.run(g, T0 + 300, 2)  # accepted anyway: a collector that ignored the revocation
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    r = verify(farm, node)
    assert r.verdict == "fail" and r.codes("error") == {"revoked_key"}
    assert len(r.messages) == 5
    assert r.gateways[0].revoked_index is not None


def test_gateway_without_enrollment_in_the_log(farm: Farm, node: SoloChain) -> None:
    """Registered before the log existed (as tests/support/stack.py still does): its messages are in
    the bundle, but nothing in the evidence says whose key they need."""
    key = Ed25519PrivateKey.generate()
    g = Gateway(gateway_id_for(public_key_bytes(key)), key, "farm-a", "north")
    Registry(farm.db).add(g.gateway, public_key_bytes(key), "farm-a", "north")
    farm.run(g, T0, 3)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    r = verify(farm, node)
    assert r.verdict == "fail" and r.codes("error") == {"unknown_key"}
    gw = next(x for x in r.gateways if x.gateway == g.gateway)
    assert gw.messages == 3 and gw.verified_messages == 0 and not gw.public_key


def test_clock_anomalies(farm: Farm, node: SoloChain) -> None:
    g = farm.enroll()
    items = [g.message(T0 + 60 * i) for i in range(5)]
    items.append(g.message(T0 + 60))  # the clock stepped back four minutes, same boot
    items.append(g.message(T0 + 600, boot=0))  # boot counter went down
    items.append(g.message(86_400.0 * 3))  # 1970: the Pi booted without a clock
    farm.accept(items)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    ahead = g.message(NOW + 30 * 86_400)  # a month ahead of every block
    farm.accept([ahead])
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    r = verify(farm, node)
    assert r.verdict == "warn"
    assert r.codes("warning") == {"clock_backwards", "boot_backwards", "clock_past",
                                  "clock_future"}
    assert dict(r.gateways[0].clock) == {"backwards": 1, "boot_backwards": 1, "past": 1,
                                         "future": 1}


def test_samples_after_their_anchor_block(farm: Farm, node: SoloChain) -> None:
    """A block fixes the latest time a message existed: samples stamped later than it mean
    the gateway clock ran ahead (here: a day past the node's head, which is at or after now)."""
    head = node.client.best_block().timestamp
    ahead = head + 86_400
    g = farm.enroll()
    farm.run(g, ahead, 4)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    data = export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0,
                         end=ahead + 86_400)
    r = verify_bundle(data, nodes=[node.url], chain=None, offline=False, log_key=farm.vkey)
    (cp,) = r.checkpoints
    assert cp.anchor_time is not None and head <= cp.anchor_time < ahead
    assert r.codes("warning") == {"clock_future"}
    assert r.gateways[0].clock["future"] == 4


def test_duplicate_sequence_number(farm: Farm, node: SoloChain) -> None:
    """Two validly signed messages claiming one seq (a replay the collector should have
    refused, logged through a side door) are a contradiction."""
    g = farm.enroll()
    farm.run(g, T0, 3)
    twin, _ = g.message(T0 + 500, seq=2)
    with farm.db:
        first = farm.evidence.append([twin])
        farm.db.execute("INSERT INTO received VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (g.gateway, 10**6, 1, 5, message_digest(twin), first, NOW))
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    r = verify(farm, node)
    # the side door also put seq 10**6 in the collector's table, so the exporter's claim says
    # the log's run goes on to seq 10**6, which the bundle (rightly) cannot show, and which the
    # log's own seal (computed from the entries themselves) contradicts
    assert r.codes("error") == {"duplicate_seq", "period_cut", "seal_claim_mismatch"}
    assert r.gateways[0].verified_messages == 3


def test_key_rotation(farm: Farm, node: SoloChain) -> None:
    """A rotation event (collector/enrollment.py) hands seq >= from_seq to the new key; the
    old key keeps verifying what it signed before, and cannot sign after."""
    g = farm.enroll()
    farm.run(g, T0, 3)
    new = Ed25519PrivateKey.generate()
    event = encode_deterministic({
        "t": "fieldproof/registry/v1", "event": "rotate", "gw": g.gateway, "time": T0 + 200,
        "pk": public_key_bytes(new), "prev_pk": public_key_bytes(g.key), "from_seq": 4})
    with farm.db:
        farm.evidence.append([event])
    old_key, g.key = g.key, new
    farm.run(g, T0 + 240, 3)  # seq 4..6 with the new key
    g.key = old_key
    forged = g.message(T0 + 500, seq=7)  # seq 7 signed with the retired key
    farm.accept([forged])
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    r = verify(farm, node)
    assert r.codes("error") == {"bad_signature"}
    assert sorted(m.seq for m in r.messages) == [1, 2, 3, 4, 5, 6]


def test_tampered_consistency_proof(farm: Farm, node: SoloChain) -> None:
    g = farm.enroll()
    farm.run(g, T0, 5)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    farm.run(g, T0 + 300, 5)
    farm.checkpoint()
    anchor_thor(farm, node.url, node.mine)
    data = export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0, end=NOW)

    def swap(o: dict[str, Any]) -> None:
        (proof,) = o["consistency"]
        o["consistency"] = [list(reversed(proof))]

    bad = rewrite(data, swap)
    r = verify_bundle(bad, nodes=[node.url], chain="thor", offline=False, log_key=farm.vkey)
    assert r.codes("error") == {"consistency_failed"}
    assert r.checkpoints[0].consistent_with_next is False
    # both anchors still verify; each message is still proven into its own checkpoint
    assert len(r.messages) == 10


def test_large_bundle_uses_worker_processes(farm: Farm) -> None:
    """Above a few thousand messages signature checks go to a process pool; the result is
    the same as checking in this process."""
    gws = [farm.enroll() for _ in range(2)]
    for g in gws:
        farm.run(g, T0, 2100, step=1.0)
    farm.checkpoint()
    data = export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 10,
                         end=NOW)
    pooled = verify_bundle(data, nodes=[], chain=None, offline=True, log_key=farm.vkey,
                           options=VerifyOptions(workers=2))
    single = verify_bundle(data, nodes=[], chain=None, offline=True, log_key=farm.vkey,
                           options=VerifyOptions(workers=1))
    assert len(pooled.messages) == len(single.messages) == 4200
    assert pooled.to_json()["gateways"] == single.to_json()["gateways"]
