"""Several logs, one history, from a REAL run: one Mosquitto and one InfluxDB, TWO collector
processes with their own data directories (own log, log key, checkpoints) on one MQTT shared
subscription, two gateway processes publishing so both collectors get a share
(tests/support/stack.py).
Each collector's final checkpoint is anchored on a real VeChainThor node (thor solo,
tests/support/thor_solo.py), driven to the node's own finality.

Each bundle alone shows the other's share as gaps; together they pass with every spooled
message verified once. Messages added to a copy of the second log (signed with the gateway's
own key file) give the redelivery info and the conflict error.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from anchor.evidence import EvidenceLog
from anchor.logkey import load_or_create_log_key
from collector.cli_common import open_registry
from collector.export import export_bundle
from collector.store import AcceptedRow, CollectorStore
from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats.bundle import decode_bundle
from fieldproof.formats.note import generate_key
from fieldproof.keys import load_key_file
from fieldproof.mqtt import wait_for_retained
from fieldproof.wire import Payload, Reading, encode_message, public_key_bytes
from inspector.cli import verify_command
from inspector.multi import verify_bundles
from inspector.verify import VerificationResult, VerifiedMessage, verify_bundle
from tests.support.bundles import THOR_KEY, thor_anchor
from tests.support.realrun import checkpoint_often, latest_checkpoint
from tests.support.stack import Stack, make_stack, wait_until
from tests.support.thor_solo import SoloChain

pytestmark = pytest.mark.integration

FARM = "test-farm"


@dataclass
class TwoLogs:
    stacks: tuple[Stack, Stack]
    configs: tuple[CollectorConfig, CollectorConfig]
    node: SoloChain
    start: float
    end: float
    data: tuple[bytes, bytes]
    vkeys: tuple[str, str]
    spooled: dict[str, int]  # gateway -> messages it spooled (seq 1..n)

    def export(self, which: int, **scope: object) -> bytes:
        args: dict[str, object] = {"farm": FARM, "field": None, "gateway": None,
                                   "start": self.start, "end": self.end}
        args.update(scope)
        return export_bundle(self.configs[which], **args)  # type: ignore[arg-type]


def _spooled(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]) - 1
    finally:
        db.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoLogs]:
    tmp = tmp_path_factory.mktemp("twologs")
    start = time.time() - 1
    one = make_stack(tmp)
    two = Stack(tmp / "second", one.broker, one.influx)  # same broker and database
    text = two.collector_config.read_text()
    two.collector_config.write_text(text.replace('collector_id = "demo-collector"',
                                                 'collector_id = "demo-collector-2"', 1))
    node: SoloChain | None = None
    try:
        node = SoloChain(tmp / "thor")
        node.fund(THOR_KEY.address)
        for s in (one, two):
            checkpoint_often(s.collector_config)
        configs = (load_collector_config(one.collector_config),
                   load_collector_config(two.collector_config))
        assert configs[0].log_origin != configs[1].log_origin
        assert configs[0].share_group == configs[1].share_group
        for i in range(2):
            # different rates, so the broker's round robin splits each gateway's messages
            g = one.add_gateway(interval=(0.1, 0.17)[i], farm=FARM, field_=f"f{i + 1}",
                                register=False)
            pub = public_key_bytes(load_key_file(g.config_path.parent / "gateway.key"))
            for cfg in configs:  # each collector enrolls it in its own log
                registry = open_registry(cfg)
                registry.add(g.gateway_id, pub, FARM, f"f{i + 1}", location="47.38,8.54")
                registry.db.close()
        one.start_collector()
        two.start_collector(wait=False)
        assert wait_for_retained("127.0.0.1", one.broker.port,
                                 "fieldproof/v1/_collector/demo-collector-2/status",
                                 b'"online": true', 60), two.log("collector.log")
        for g in one.gateways:
            one.start_gateway(g)
        wait_until(lambda: min(one.accepted_readings(), two.accepted_readings()) >= 150, 60,
                   "both collectors accepting readings")
        one.stop_gateways()
        published = sum(one.published().values())
        wait_until(lambda: one.accepted_readings() + two.accepted_readings() >= published, 60,
                   "both collectors together to accept every published reading")
        one.stop_collector()
        two.stop_collector()  # each signs a final checkpoint of everything
        for s, cfg in zip((one, two), configs, strict=True):
            cp, note = latest_checkpoint(s.db_path, cfg.log_origin)
            thor_anchor(cfg.data_dir / "anchors-thor.sqlite", cp, note, node.url, node.mine)
        end = time.time() + 1
        vkeys = tuple(load_or_create_log_key(c.log_key_file, c.log_origin).verifier().vkey
                      for c in configs)
        data = tuple(export_bundle(c, farm=FARM, field=None, gateway=None, start=start,
                                   end=end) for c in configs)
        spooled = {g.gateway_id: _spooled(g.spool_path) for g in one.gateways}
        yield TwoLogs((one, two), configs, node, start, end, (data[0], data[1]),
                      (vkeys[0], vkeys[1]), spooled)
    finally:
        two.shutdown()
        one.shutdown()
        one.broker.stop()
        one.influx.stop()
        if node is not None:
            node.close()


def _alone(run: TwoLogs, which: int) -> VerificationResult:
    return verify_bundle(run.data[which], nodes=[run.node.url], chain="thor", offline=False,
                         log_key=run.vkeys[which])


def _invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(verify_command, list(args))
    return res.exit_code, res.output


def _add_to_copy_of_second(run: TwoLogs, tmp: Path, rows: list[tuple[bytes, Payload]]
                           ) -> bytes:
    """The second collector's log, copied, with ``rows`` logged and a checkpoint signed (its
    own log key), exported: what a second collector that received these messages holds."""
    cfg = run.configs[1]
    copy = tmp / "copy"
    shutil.copytree(cfg.data_dir, copy)
    config = cfg.model_copy(update={"data_dir": copy})
    db = open_db(config.db_path)
    try:
        evidence = EvidenceLog.open(db, config.log_origin, config.log_key_file)
        CollectorStore(db, evidence).commit(
            [AcceptedRow(p.gateway, p.seq, p.boot, len(p.readings), m) for m, p in rows], [],
            {})
        assert evidence.checkpoint() is not None
    finally:
        db.close()
    return export_bundle(config, farm=FARM, field=None, gateway=None, start=run.start,
                         end=run.end)


def _only_in_first(run: TwoLogs) -> tuple[VerifiedMessage, bytes]:
    """A message the first log holds and the second does not, and its exact bytes."""
    first, second = _alone(run, 0), _alone(run, 1)
    theirs = {(m.gateway, m.seq) for m in second.messages}
    m = next(m for m in first.messages if (m.gateway, m.seq) not in theirs)
    data = next(e.data for e in decode_bundle(run.data[0]).messages if e.index == m.index)
    return m, data


# ------------------------------------------------------------------------------ tests


def test_each_bundle_alone_shows_the_others_share_as_gaps(run: TwoLogs) -> None:
    for which in (0, 1):
        alone = _alone(run, which)
        assert not alone.codes("error"), alone.findings
        assert "sequence_gap" in alone.codes("warning")
        assert 0 < len(alone.messages) < sum(run.spooled.values())


def test_both_together_pass_with_every_spooled_message_once(run: TwoLogs,
                                                            tmp_path: Path) -> None:
    files = [tmp_path / "c1.fpb", tmp_path / "c2.fpb"]
    for f, d in zip(files, run.data, strict=True):
        f.write_bytes(d)
    report = tmp_path / "both.html"
    # keys in the other order: they are matched by the log they name
    code, out = _invoke(str(files[0]), str(files[1]), "--log-key", run.vkeys[1], "--log-key",
                        run.vkeys[0], "--chain", "thor", "--node", run.node.url, "--json",
                        "--against-influx", run.stacks[0].influx.url, "--report", str(report),
                        "--no-pdf")
    doc = json.loads(out[out.index("{"):])
    assert code == 0, doc["findings"]
    assert doc["verdict"] == "pass", doc["findings"]
    assert [b["label"] for b in doc["bundles"]] == [str(f) for f in files]
    assert all(b["log"]["pinned"] and b["verdict"] == "pass" for b in doc["bundles"])
    assert all(a["verified"] for b in doc["bundles"] for c in b["checkpoints"]
               for a in c["anchors"])
    gws = {g["gateway"]: g for g in doc["combined"]["gateways"]}
    assert set(gws) == set(run.spooled)
    for gw, n in run.spooled.items():
        g = gws[gw]
        assert (g["first_seq"], g["last_seq"], g["verified_messages"]) == (1, n, n)
        assert g["gaps"] == [] and g["conflicts"] == 0
        # held once over the union: a message both logged is counted (and reported) once
        assert sum(g["bundles"].values()) == n + g["logged_twice"]
        assert all(v > 0 for v in g["bundles"].values())
    assert "sequence_gap" not in {f["code"] for f in doc["findings"]}
    influx = doc["influx"]
    assert influx["error"] is None
    assert (influx["changed"], influx["added"], influx["deleted"]) == (0, 0, 0)
    assert influx["matched"] == influx["evidence_points"] == \
        doc["combined"]["messages"]["readings_verified"]
    page = report.read_text()
    assert 'data-verdict="pass"' in page and str(files[1]) in page
    assert page.count("<h3>Checkpoints and anchors</h3>") == 2


def test_one_bundle_alone_keeps_todays_json(run: TwoLogs, tmp_path: Path) -> None:
    f = tmp_path / "c1.fpb"
    f.write_bytes(run.data[0])
    code, out = _invoke(str(f), "--log-key", run.vkeys[0], "--node", run.node.url, "--json")
    doc = json.loads(out[out.index("{"):])
    assert code == 0 and doc["verdict"] == "warn"  # the other collector's share: gaps
    assert "bundles" not in doc and "combined" not in doc
    assert all("bundles" not in f for f in doc["findings"])


def test_a_message_in_both_logs_is_a_redelivery_info(run: TwoLogs, tmp_path: Path) -> None:
    m, data = _only_in_first(run)
    payload = Payload(m.gateway, m.seq, m.boot, tuple(Reading(*r) for r in m.readings))
    second = _add_to_copy_of_second(run, tmp_path, [(data, payload)])
    multi = verify_bundles([("c1", run.data[0]), ("c2+", second)], nodes=[], chain=None,
                           offline=True, log_keys=run.vkeys)
    (f,) = [f for f in multi.all_findings() if f.code == "logged_twice"]
    assert f.severity == "info" and f.bundles == ("c1", "c2+") and f.gateway == m.gateway
    assert "two collectors both logged it" in f.message
    assert not multi.codes("error")
    g = next(g for g in multi.combined.gateways if g.gateway == m.gateway)
    assert g.verified_messages == run.spooled[m.gateway] and g.logged_twice == 1


def test_a_different_message_with_the_same_seq_is_an_error(run: TwoLogs,
                                                           tmp_path: Path) -> None:
    m, _ = _only_in_first(run)
    gw = next(g for g in run.stacks[0].gateways if g.gateway_id == m.gateway)
    key = load_key_file(gw.config_path.parent / "gateway.key")  # the gateway's own key
    r0 = m.readings[0]
    forged = Payload(m.gateway, m.seq, m.boot, (
        Reading(r0.sensor, r0.quantity, r0.unit, (r0.value or 0.0) + 1.0, r0.time),
        *(Reading(*r) for r in m.readings[1:])))
    second = _add_to_copy_of_second(run, tmp_path, [(encode_message(forged, key), forged)])
    alone = verify_bundle(second, nodes=[], chain=None, offline=True, log_key=run.vkeys[1])
    assert not alone.codes("error")  # validly signed: alone, nothing is wrong with it
    multi = verify_bundles([("c1", run.data[0]), ("c2 forged", second)], nodes=[],
                           chain=None, offline=True, log_keys=run.vkeys)
    (f,) = [f for f in multi.all_findings() if f.code == "conflicting_message"]
    assert f.severity == "error" and f.bundles == ("c1", "c2 forged")
    assert f"seq {m.seq}" in f.message and multi.verdict == "fail"


def test_mismatched_scopes_warn(run: TwoLogs) -> None:
    narrow = run.export(1, field="f1")
    multi = verify_bundles([("c1", run.data[0]), ("c2 f1", narrow)], nodes=[run.node.url],
                           chain="thor", offline=False, log_keys=run.vkeys)
    (f,) = [f for f in multi.all_findings() if f.code == "scope_mismatch"]
    assert f.severity == "warning" and f.bundles == ("c1", "c2 f1")
    assert "field f1" in f.message
    assert multi.verdict == "warn"


def test_a_malformed_second_bundle_fails_alone(run: TwoLogs) -> None:
    multi = verify_bundles([("c1", run.data[0]), ("junk", run.data[1][:5000])],
                           nodes=[run.node.url], chain="thor", offline=False,
                           log_keys=run.vkeys)
    first, junk = multi.bundles
    assert junk.verdict == "fail" and [f.code for f in junk.findings] == ["malformed_bundle"]
    assert first.verdict == "pass" and first.result.log_key_pinned
    assert len(first.result.messages) == len(_alone(run, 0).messages)
    # the second log's key is pinned but its bundle is unreadable: its share is missing
    missing = [f for f in multi.findings if f.code == "log_missing"]
    assert missing and run.configs[1].log_origin in missing[0].message
    assert multi.verdict == "fail"


def test_pinned_keys_are_matched_by_origin(run: TwoLogs, tmp_path: Path) -> None:
    files = [tmp_path / "c1.fpb", tmp_path / "c2.fpb"]
    for f, d in zip(files, run.data, strict=True):
        f.write_bytes(d)
    # only the first log's key: the second bundle's log was vouched for by nobody
    code, out = _invoke(*map(str, files), "--log-key", run.vkeys[0], "--offline")
    assert code == 1 and "log_not_pinned" in out and str(files[1]) in out
    # a key of a log no bundle is of: that log's share is missing
    code, out = _invoke(str(files[0]), "--log-key", run.vkeys[0], "--log-key", run.vkeys[1],
                        "--offline", "--json")
    doc = json.loads(out[out.index("{"):])
    assert code == 1 and "bundles" not in doc
    assert "log_missing" in {f["code"] for f in doc["findings"]}
    # two different keys for one log: which one did the operator publish?
    other = generate_key(run.configs[0].log_origin).verifier().vkey
    code, out = _invoke(*map(str, files), "--log-key", run.vkeys[0], "--log-key", other,
                        "--offline")
    assert code == 2 and "two different --log-key" in out
