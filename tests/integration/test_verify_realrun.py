"""The tamper matrix, on evidence from a REAL run: Mosquitto, InfluxDB, a collector process and
two gateway processes (tests/support/stack.py), checkpoints anchored on a real EVM dev chain (anvil,
anchor/devchain.py) and on a real VeChainThor node (thor solo, tests/support/thor_solo.py; each
anchor driven to the node's own finality). The run is built once for the module.

Each tampering is caught with its own finding; the untouched bundle passes. That includes
withholding (issue 13, finding 3): a gateway dropped entirely, the last third or the first
messages of a gateway dropped, one message taken out — each fails with its completeness finding
(docs/bundle.md §4a).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.devchain import DevChain
from anchor.evidence import EvidenceLog
from anchor.logkey import load_or_create_log_key
from anchor.logstore import SqliteLogStore
from collector.export import build_bundle, export_bundle
from collector.export_cli import export_command
from collector.registry import Registry
from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats.anchor_record import AnchorRecord
from fieldproof.formats.bundle import decode_bundle, encode_bundle
from fieldproof.formats.checkpoint import Checkpoint, sign_checkpoint
from fieldproof.formats.note import generate_key
from fieldproof.formats.registry_event import parse_registry_event, registry_event
from fieldproof.keys import load_key_file
from fieldproof.wire import (
    COSE_SIGN1_TAG,
    Payload,
    Reading,
    encode_deterministic,
    encode_message,
    parse_sign1,
    payload_from_cbor,
    public_key_bytes,
)
from inspector.cli import verify_command
from inspector.report import write_report
from inspector.verify import (
    VerificationResult,
    VerifiedReading,
    check_against_influx,
    verify_bundle,
)
from tests.support.bundles import (
    THOR_KEY,
    LyingProxy,
    evm_anchor,
    rewrite,
    rewrite_json,
    thor_anchor,
)
from tests.support.realrun import checkpoint_often, latest_checkpoint
from tests.support.stack import Stack, make_stack, wait_until
from tests.support.thor_solo import SoloChain

pytestmark = pytest.mark.integration

FARM = "test-farm"


@dataclass
class RealRun:
    stack: Stack
    config: CollectorConfig
    chain: DevChain
    node: SoloChain
    start: float
    end: float
    data: bytes
    vkey: str
    gateway_keys: dict[str, Ed25519PrivateKey]
    thor_txs: list[str]
    evm_txs: list[str]
    accepted_messages: int

    def verify(self, data: bytes | None = None, *, chain: str = "thor",
               nodes: list[str] | None = None, **kw: Any) -> VerificationResult:
        if nodes is None:
            nodes = [self.node.url] if chain == "thor" else [self.chain.url]
        args: dict[str, Any] = {"nodes": nodes, "chain": chain, "offline": False,
                                "log_key": self.vkey}
        args.update(kw)
        return verify_bundle(self.data if data is None else data, **args)




def _anchor_both(run_dir: Path, cp: Checkpoint, note: bytes, node: SoloChain,
                 chain: DevChain) -> tuple[str, str]:
    thor_tx = thor_anchor(run_dir / "anchors-thor.sqlite", cp, note, node.url, node.mine)
    evm_tx = evm_anchor(run_dir / "anchors-evm.sqlite", cp, chain)
    return thor_tx, evm_tx




@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealRun]:
    tmp = tmp_path_factory.mktemp("realrun")
    start = time.time() - 1
    stack = make_stack(tmp)
    chain = DevChain(tmp / "chain", automine=False, slots_in_an_epoch=1)
    node: SoloChain | None = None
    try:
        chain.start()
        node = SoloChain(tmp / "thor")
        node.fund(THOR_KEY.address)
        checkpoint_often(stack.collector_config)
        config = load_collector_config(stack.collector_config)
        keys: dict[str, Ed25519PrivateKey] = {}
        for i in range(2):
            g = stack.add_gateway(interval=0.2, farm=FARM, field_=f"f{i + 1}", register=False)
            key = load_key_file(g.config_path.parent / "gateway.key")
            keys[g.gateway_id] = key
            # enrolled the way `fieldproof collector devices add` does: logged as evidence
            db = open_db(stack.db_path)
            Registry(db, EvidenceLog(db, config.log_origin, None)).add(
                g.gateway_id, public_key_bytes(key), FARM, f"f{i + 1}", location="47.38,8.54")
            db.close()
        stack.start_collector()
        for g in stack.gateways:
            stack.start_gateway(g)
        wait_until(lambda: stack.accepted_readings() >= 60, 60, "first readings accepted")
        wait_until(lambda: latest_checkpoint(stack.db_path, config.log_origin)[0].size >= 12, 30,
                   "a checkpoint of the first readings")
        cp_a, note_a = latest_checkpoint(stack.db_path, config.log_origin)
        txs_a = _anchor_both(config.data_dir, cp_a, note_a, node, chain)
        seen = stack.accepted_readings()
        wait_until(lambda: stack.accepted_readings() >= seen + 60, 60, "more readings")
        stack.stop_gateways()
        stack.wait_caught_up()
        stack.stop_collector()  # signs a final checkpoint of everything
        cp_b, note_b = latest_checkpoint(stack.db_path, config.log_origin)
        assert cp_b.size > cp_a.size
        txs_b = _anchor_both(config.data_dir, cp_b, note_b, node, chain)
        end = time.time() + 1
        store = stack.store()
        accepted = store.accepted_count()[0]
        store.db.close()
        vkey = load_or_create_log_key(config.log_key_file, config.log_origin).verifier().vkey
        data = export_bundle(config, farm=FARM, field=None, gateway=None, start=start, end=end)
        yield RealRun(stack, config, chain, node, start, end, data, vkey, keys,
                      [txs_a[0], txs_b[0]], [txs_a[1], txs_b[1]], accepted)
    finally:
        stack.shutdown()
        stack.broker.stop()
        stack.influx.stop()
        if node is not None:
            node.close()
        chain.close()


def _errors(r: VerificationResult) -> set[str]:
    return r.codes("error")


# ------------------------------------------------------------------------------ untouched


def test_untouched_bundle_passes_on_both_chains(run: RealRun) -> None:
    b = decode_bundle(run.data)
    assert len(b.checkpoints) == 2 and all(len(c.anchors) == 2 for c in b.checkpoints)
    assert len(b.registry) == 2
    honest_thor = LyingProxy(run.node.url, lambda m, p, q, s, body: body)
    honest_evm = LyingProxy(run.chain.url, lambda m, p, q, s, body: body)
    try:
        for chain, nodes in (("thor", [run.node.url, honest_thor.url]),
                             ("evm", [run.chain.url, honest_evm.url])):
            r = run.verify(chain=chain, nodes=nodes)
            assert r.verdict == "pass", [f.message for f in r.findings]
            assert r.codes("warning") == set()
            assert r.codes("info") == {"anchors_not_checked"}  # the other chain's anchors
            assert len(r.messages) == r.total_messages == run.accepted_messages
            assert all(m.anchored for m in r.messages)
            assert [c.anchored for c in r.checkpoints] == [True, True]
            assert all(len(a.answers) == 2 for c in r.checkpoints for a in c.anchors
                       if a.checked)
            assert {g.farm for g in r.gateways} == {FARM}
            assert all(g.gaps == [] for g in r.gateways)
            assert r.completeness.status == "complete"
            assert sorted(r.completeness.gateways) == sorted(run.gateway_keys)
            assert all(g.completeness == "complete" for g in r.gateways)
    finally:
        honest_thor.close()
        honest_evm.close()


# ------------------------------------------------------------------------------ tampering


def _message(run: RealRun, gateway_no: int, nth: int) -> tuple[int, int, bytes]:
    """(position in the bundle's message list, log index, bytes) of a gateway's nth message."""
    gw = sorted(run.gateway_keys)[gateway_no]
    b = decode_bundle(run.data)
    mine = [(i, e) for i, e in enumerate(b.messages)
            if payload_from_cbor(parse_sign1(e.data).payload).gateway == gw]
    pos, e = mine[nth]
    return pos, e.index, e.data


def test_edit_one_reading(run: RealRun) -> None:
    pos, index, raw = _message(run, 0, 5)
    s = parse_sign1(raw)
    p = payload_from_cbor(s.payload)
    r0 = p.readings[0]
    edited = Payload(p.gateway, p.seq, p.boot,
                     (Reading(r0.sensor, r0.quantity, r0.unit, 0.05, r0.time), *p.readings[1:]))
    forged = encode_deterministic(cbor2.CBORTag(COSE_SIGN1_TAG, [
        s.protected_bytes, {}, edited.to_cbor(), s.signature]))

    def edit(o: dict[str, Any]) -> None:
        o["messages"][pos][1] = forged

    r = run.verify(rewrite(run.data, edit))
    assert r.verdict == "fail"
    assert _errors(r) == {"bad_signature", "inclusion_failed"}
    assert all(str(index) in f.message for f in r.findings if f.severity == "error")
    assert len(r.messages) == run.accepted_messages - 1


def test_drop_one_message(run: RealRun) -> None:
    """A gap alone is not proof of tampering; against the exporter's signed claim that the
    run is complete, it is."""
    pos, _, raw = _message(run, 1, 4)
    seq = payload_from_cbor(parse_sign1(raw).payload).seq

    def drop(o: dict[str, Any]) -> None:
        del o["messages"][pos]

    r = run.verify(rewrite(run.data, drop))
    assert r.verdict == "fail"
    assert _errors(r) == {"messages_withheld"}
    assert r.codes("warning") == {"sequence_gap"}  # still shown where it is
    (gap,) = [g for x in r.gateways for g in x.gaps]
    assert (gap.first_missing, gap.last_missing) == (seq, seq)
    assert gap.after_time < gap.before_time
    (f,) = [f for f in r.findings if f.code == "messages_withheld"]
    assert f"{seq}–{seq}" in f.message


def _gateway_seqs(run: RealRun, gateway_no: int) -> tuple[str, list[int]]:
    gw = sorted(run.gateway_keys)[gateway_no]
    seqs = sorted(p.seq for p in (payload_from_cbor(parse_sign1(e.data).payload)
                                  for e in decode_bundle(run.data).messages) if p.gateway == gw)
    return gw, seqs


def _drop_messages(run: RealRun, gw: str, drop: set[int]) -> bytes:
    """The bundle without the messages of ``gw`` whose seq is in ``drop`` (nothing re-signed)."""
    def kept(raw: bytes) -> bool:
        p = payload_from_cbor(parse_sign1(raw).payload)
        return p.gateway != gw or p.seq not in drop

    def edit(o: dict[str, Any]) -> None:
        o["messages"] = [m for m in o["messages"] if kept(m[1])]
    return rewrite(run.data, edit)


def test_drop_one_gateway_entirely(run: RealRun) -> None:
    """Its enrollment and all its messages, as if it never existed: the registry count and
    the claim's record for it both show it."""
    gw, _ = _gateway_seqs(run, 1)

    def edit(o: dict[str, Any]) -> None:
        o["registry"] = [e for e in o["registry"]
                         if (parse_registry_event(e[1]) or {}).get("gw") != gw]

    bad = rewrite(_drop_messages(run, gw, set(range(10**6))), edit)
    assert len(decode_bundle(bad).registry) == len(decode_bundle(run.data).registry) - 1
    for chain in ("thor", "evm"):
        r = run.verify(bad, chain=chain)
        assert r.verdict == "fail"
        assert _errors(r) == {"registry_withheld", "gateway_withheld"}
        assert r.completeness.status == "withheld"
        assert any(f.gateway == gw for f in r.findings if f.code == "gateway_withheld")
        other = next(g for g in r.gateways if g.gateway != gw)
        assert other.completeness == "complete" and other.verified_messages > 0


def test_drop_the_last_third_of_a_gateway(run: RealRun) -> None:
    gw, seqs = _gateway_seqs(run, 0)
    tail = set(seqs[len(seqs) * 2 // 3:])
    r = run.verify(_drop_messages(run, gw, tail))
    assert r.verdict == "fail"
    assert _errors(r) == {"period_cut"}
    (f,) = [f for f in r.findings if f.code == "period_cut"]
    assert f.gateway == gw and "period's end" in f.message
    assert next(g for g in r.gateways if g.gateway == gw).completeness == "tail cut"
    assert len(r.messages) == run.accepted_messages - len(tail)


def test_drop_the_first_messages_of_a_gateway(run: RealRun) -> None:
    gw, seqs = _gateway_seqs(run, 1)
    r = run.verify(_drop_messages(run, gw, set(seqs[:5])))
    assert r.verdict == "fail"
    assert _errors(r) == {"period_cut"}
    (f,) = [f for f in r.findings if f.code == "period_cut"]
    assert f.gateway == gw and "period's start" in f.message
    assert next(g for g in r.gateways if g.gateway == gw).completeness == "head cut"


def test_reorder_two_messages(run: RealRun) -> None:
    pos_a, _, raw_a = _message(run, 0, 2)
    pos_b, _, raw_b = _message(run, 0, 3)

    def swap(o: dict[str, Any]) -> None:
        o["messages"][pos_a][1], o["messages"][pos_b][1] = raw_b, raw_a

    r = run.verify(rewrite(run.data, swap))
    assert _errors(r) == {"inclusion_failed"}
    assert sum(1 for f in r.findings if f.code == "inclusion_failed") == 2


def test_swap_a_gateway_key(run: RealRun) -> None:
    """The enrollment names another key and the gateway's messages are re-signed with it."""
    gw = sorted(run.gateway_keys)[0]
    thief = Ed25519PrivateKey.generate()
    b = decode_bundle(run.data)
    (enroll,) = [e for e in b.registry if gw.encode() in e.data]
    fake = registry_event("enroll", gw, public_key=public_key_bytes(thief), farm=FARM,
                          field="f1", at=time.time())

    def swap(o: dict[str, Any]) -> None:
        for item in o["registry"]:
            if item[0] == enroll.index:
                item[1] = fake
        for item in o["messages"]:
            p = payload_from_cbor(parse_sign1(item[1]).payload)
            if p.gateway == gw:
                item[1] = encode_message(p, thief)

    r = run.verify(rewrite(run.data, swap))
    assert r.verdict == "fail"
    assert {"registry_invalid", "unknown_key"} <= _errors(r)
    assert {m.gateway for m in r.messages} == {sorted(run.gateway_keys)[1]}


def test_forged_checkpoint_with_another_key(run: RealRun) -> None:
    b = decode_bundle(run.data)
    cp = Checkpoint(run.config.log_origin, 5, b"\x42" * 32)
    forged = sign_checkpoint(cp, generate_key(run.config.log_origin))

    def forge(o: dict[str, Any]) -> None:
        o["checkpoints"][0]["note"] = forged

    r = run.verify(rewrite(run.data, forge))
    # the enrollments proven into it no longer count either, so their messages lose their key
    assert {"checkpoint_invalid", "inclusion_failed"} <= _errors(r)
    assert _errors(r) <= {"checkpoint_invalid", "inclusion_failed", "unknown_key"}
    assert not r.checkpoints[0].valid and r.checkpoints[1].valid
    assert len(b.checkpoints) == 2


def test_operator_signs_a_different_root(run: RealRun) -> None:
    """The operator holds the log key: a re-signed checkpoint with another root passes the
    signature check but matches neither its anchor nor its entries."""
    b = decode_bundle(run.data)
    signer = load_or_create_log_key(run.config.log_key_file, run.config.log_origin)
    size = run.verify().checkpoints[0].size
    assert size is not None
    forged = sign_checkpoint(Checkpoint(run.config.log_origin, size, b"\x42" * 32), signer)

    def forge(o: dict[str, Any]) -> None:
        o["checkpoints"][0]["note"] = forged

    for chain in ("thor", "evm"):
        r = run.verify(rewrite(run.data, forge), chain=chain)
        assert {"anchor_invalid", "inclusion_failed", "consistency_failed"} <= _errors(r)
        assert _errors(r) <= {"anchor_invalid", "inclusion_failed", "consistency_failed",
                              "unknown_key"}
        assert not r.checkpoints[0].anchored
    assert b.checkpoints[0].note != forged


def test_anchor_pointing_at_another_tx(run: RealRun) -> None:
    def repoint(o: dict[str, Any]) -> None:
        for a in o["checkpoints"][0]["anchors"]:
            a["tx"] = (run.thor_txs if a["chain"] == "thor" else run.evm_txs)[1]

    bad = rewrite(run.data, repoint)
    for chain in ("thor", "evm"):
        r = run.verify(bad, chain=chain)
        assert _errors(r) == {"anchor_invalid"}, r.findings
        assert [c.anchored for c in r.checkpoints] == [False, True]
        # entries before the first checkpoint are still bound by the second one
        assert all(m.anchored for m in r.messages)


def test_one_of_two_thor_nodes_lies(run: RealRun) -> None:
    """The liar moves every block an hour later; the honest node does not. Neither answer is
    trusted, and both are shown."""
    def later_blocks(method: str, path: str, q: bytes, status: int, body: bytes) -> bytes:
        if method == "GET" and path.startswith("/blocks/0x") and body.strip() != b"null":
            return rewrite_json(body, lambda b: {**b, "timestamp": b["timestamp"] + 3600})
        return body

    liar = LyingProxy(run.node.url, later_blocks)
    try:
        r = run.verify(nodes=[run.node.url, liar.url])
    finally:
        liar.close()
    assert liar.lies > 0
    assert _errors(r) == {"node_disagreement"}
    assert not any(c.anchored for c in r.checkpoints)
    assert liar.url in next(f.message for f in r.findings if f.code == "node_disagreement")


def test_one_of_two_evm_nodes_lies(run: RealRun) -> None:
    """The liar serves the anchor tx with another record in its calldata."""
    other = AnchorRecord.for_checkpoint(run.config.log_origin, 1, b"\x13" * 32).encode()

    def other_input(method: str, path: str, q: bytes, status: int, body: bytes) -> bytes:
        try:
            req = json.loads(q)
        except ValueError:
            return body
        if isinstance(req, dict) and req.get("method") == "eth_getTransactionByHash":
            return rewrite_json(body, lambda b: {**b, "result": {**b["result"],
                                                                  "input": "0x" + other.hex()}})
        return body

    liar = LyingProxy(run.chain.url, other_input)
    try:
        r = run.verify(chain="evm", nodes=[liar.url, run.chain.url])
    finally:
        liar.close()
    assert liar.lies > 0
    assert _errors(r) == {"node_disagreement"}
    assert not any(c.anchored for c in r.checkpoints)


def test_rewritten_history_behind_an_anchored_checkpoint(run: RealRun, tmp_path: Path) -> None:
    """The operator deletes one early message from its log, rebuilds the tree, signs and
    anchors a new checkpoint, and exports. The old anchored checkpoint stays in the bundle,
    so the consistency proof to the new one cannot hold."""
    src = run.config.data_dir
    dst = tmp_path / "rewritten"
    dst.mkdir()
    for f in src.iterdir():
        if f.name.startswith(("collector.sqlite", "log.key", "anchors-")) and f.is_file():
            shutil.copy2(f, dst / f.name)
    cfg = run.config.model_copy(update={"data_dir": dst})
    first = run.verify().checkpoints[0]
    assert first.size is not None
    db = open_db(cfg.db_path)
    try:
        k = db.execute("SELECT min(log_index) FROM received WHERE log_index > 5").fetchone()[0]
        assert k < first.size
        entries = [bytes(r[0]) for r in db.execute(
            "SELECT entry FROM fp_log_entries ORDER BY idx")]
        del entries[k]
        with db:
            db.execute("DELETE FROM fp_log_entries")
            db.execute("DELETE FROM fp_log_nodes")
            SqliteLogStore(db).append(entries)
            db.execute("DELETE FROM received WHERE log_index = ?", (k,))
            db.execute("UPDATE received SET log_index = log_index - 1 WHERE log_index > ?", (k,))
            db.execute("DELETE FROM checkpoints WHERE size > ?", (first.size,))
        evidence = EvidenceLog.open(db, cfg.log_origin, cfg.log_key_file)
        new = evidence.checkpoint()
        # the rewritten entries and the seal the new checkpoint ends with
        assert new is not None and new.checkpoint.size == len(entries) + 1
    finally:
        db.close()
    for store, anchors, txs in (("anchors-thor.sqlite", "anchors", "anchor_txs"),
                                ("anchors-evm.sqlite", "evm_anchors", "evm_anchor_txs")):
        s = sqlite3.connect(dst / store)
        with s:
            s.execute(f"DELETE FROM {txs} WHERE anchor_id IN "
                      f"(SELECT id FROM {anchors} WHERE tree_size > ?)", (first.size,))
            s.execute(f"DELETE FROM {anchors} WHERE tree_size > ?", (first.size,))
        s.close()
    _anchor_both(dst, new.checkpoint, new.note, run.node, run.chain)
    bundle, _ = build_bundle(cfg, farm=FARM, field=None, gateway=None, start=run.start,
                             end=run.end)
    assert [c.anchors != () for c in bundle.checkpoints] == [True, True]
    for chain in ("thor", "evm"):
        r = run.verify(encode_bundle(bundle), chain=chain)
        assert "consistency_failed" in _errors(r)
        # proofs into the old checkpoint fail too, and with them the enrollments they carry
        assert _errors(r) <= {"consistency_failed", "inclusion_failed", "unknown_key"}
        assert [c.anchored for c in r.checkpoints] == [True, True]  # both anchors are real
        assert r.checkpoints[0].consistent_with_next is False


# ------------------------------------------------------------------------------ InfluxDB


def _write(run: RealRun, line: str) -> None:
    r = httpx.post(f"{run.stack.influx.url}/write",
                   params={"db": run.stack.database, "precision": "ns"}, content=line)
    assert r.status_code == 204, r.text


def test_against_influx_lists_changed_added_and_deleted_points(run: RealRun) -> None:
    clean = run.verify()
    cmp = check_against_influx(clean, run.stack.influx.url, run.stack.database)
    assert cmp.error is None
    assert (cmp.changed, cmp.added, cmp.deleted) == (0, 0, 0)
    assert cmp.matched == cmp.evidence_points == clean.verified_readings
    assert clean.verdict == "pass"

    gw_info = {g.gateway: g for g in clean.gateways}
    m = clean.messages[10]
    r_change, r_delete = m.readings[0], m.readings[2]
    g = gw_info[m.gateway]

    def tags(r: Reading | VerifiedReading) -> str:
        return (f"farm={g.farm},field={g.field},gateway={m.gateway},sensor={r.sensor},"
                f"unit={r.unit}")

    _write(run, f"{r_change.quantity},{tags(r_change)} value=0.99 {round(r_change.time * 1e9)}")
    t_del = round(r_delete.time * 1e9)
    q = (f'DELETE FROM "{r_delete.quantity}" WHERE "gateway" = \'{m.gateway}\' '
         f"AND time >= {t_del} AND time <= {t_del}")
    assert httpx.post(f"{run.stack.influx.url}/query",
                      params={"db": run.stack.database, "q": q}).status_code == 200
    t_add = round((r_change.time + 0.5) * 1e9)
    _write(run, f"{r_change.quantity},{tags(r_change)} value=0.2,seq=424242i {t_add}")

    again = run.verify()
    cmp = check_against_influx(again, run.stack.influx.url, run.stack.database)
    assert (cmp.changed, cmp.added, cmp.deleted) == (1, 1, 1)
    assert again.verdict == "fail"
    assert {"influx_changed", "influx_added", "influx_deleted"} == _errors(again)
    by_kind = {d.kind: d for d in cmp.diffs}
    assert by_kind["changed"].fields == ("value",)
    changed = by_kind["changed"].database
    assert changed is not None and changed == {**changed, "value": 0.99}
    assert by_kind["deleted"].time_ns == t_del
    assert by_kind["added"].time_ns == t_add


# ------------------------------------------------------------------------------ CLI, report


def test_cli_export_and_verify(run: RealRun, tmp_path: Path) -> None:
    cli = CliRunner()
    out = tmp_path / "farm.fpb"
    res = cli.invoke(export_command, [
        "--config", str(run.stack.collector_config), "--farm", FARM,
        "--from", str(run.start), "--to", str(run.end), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "2 checkpoint(s) of which 2 anchored" in res.output
    assert decode_bundle(out.read_bytes()).messages == decode_bundle(run.data).messages

    res = cli.invoke(verify_command, [str(out), "--node", run.node.url, "--chain", "thor",
                                      "--log-key", run.vkey, "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["verdict"] == "pass" and doc["passed"] is True
    assert doc["messages"]["verified"] == run.accepted_messages

    res = cli.invoke(verify_command, [str(out), "--node", run.chain.url, "--chain", "evm",
                                      "--log-key", run.vkey])
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith("PASS:")

    tampered = tmp_path / "tampered.fpb"
    pos, _, _ = _message(run, 0, 1)
    tampered.write_bytes(rewrite(run.data, lambda o: o["messages"].__setitem__(
        pos, [o["messages"][pos][0], o["messages"][pos + 1][1]])))
    res = cli.invoke(verify_command, [str(tampered), "--offline", "--log-key", run.vkey])
    assert res.exit_code == 1
    assert res.stdout.startswith("FAIL:") and "inclusion_failed" in res.stdout

    res = cli.invoke(verify_command, [str(out), "--offline"])  # key not pinned: a warning
    assert res.exit_code == 0 and "log_key_not_pinned" in res.stdout
    res = cli.invoke(verify_command, [str(out), "--offline", "--strict"])
    assert res.exit_code == 1

    for args in ([str(out)],  # anchored, but no node to ask and not --offline
                 [str(out), "--offline", "--log-key", "garbage"],
                 [str(tmp_path / "missing.fpb"), "--offline"]):
        res = cli.invoke(verify_command, args)
        assert res.exit_code == 2, (args, res.output)
    res = cli.invoke(export_command, ["--config", str(run.stack.collector_config),
                                      "--farm", "nowhere", "--from", "2025-01-01",
                                      "-o", str(tmp_path / "x.fpb")])
    assert res.exit_code == 2 and "no gateway is enrolled" in res.output


def test_report_html_and_pdf(run: RealRun, tmp_path: Path) -> None:
    pos, _, _ = _message(run, 0, 7)
    dropped = rewrite(run.data, lambda o: o["messages"].__delitem__(pos))
    r = run.verify(dropped)
    files = write_report(r, tmp_path / "report.html", pdf=True)
    page = files.html.read_text()
    # withheld against the signed completeness claim: a failing report that says so
    assert 'data-verdict="fail"' in page and "#cf222e" in page
    assert "messages_withheld" in page and "MESSAGES WITHHELD" in page
    assert page.count('<svg class="chart"') == 10  # 5 quantities x 2 fields
    assert page.count('class="gap"') == 5  # the dropped message, on each chart of its field
    for tx in run.thor_txs:
        assert tx in page
    # nothing fetched from outside: no scripts, stylesheets or images by URL
    assert not re.search(r"<script|<link|<img|src=|url\(", page)
    assert files.pdf is not None and files.pdf_engine in ("weasyprint", "chromium")
    pdf = files.pdf.read_bytes()
    assert pdf.startswith(b"%PDF-") and len(pdf) > 20_000
    assert _pdf_pages(pdf) >= 3  # summary, charts, anchors do not fit on one page


def _pdf_pages(pdf: bytes) -> int:
    """Page objects in a PDF, also inside compressed object streams."""
    text = pdf
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            text += zlib.decompress(m.group(1))
        except zlib.error:
            continue
    return len(re.findall(rb"/Type\s*/Page\b", text))
