"""The collector's /metrics and /healthz, served from a real Collector object (not running its
MQTT loop) over a database with known content: accepted, quarantined by reason, gaps, the
evidence log and a checkpoint, anchors, devices, gateway status, the CRL."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client.parser import text_string_to_metric_families

from anchor.anchoring import AnchorState, AnchorStore
from collector.ca import CertificateAuthority
from collector.metrics import CollectorMetrics, MetricsServer, start_metrics_server
from collector.seqranges import ReceivedRanges
from collector.service import Collector
from collector.store import AcceptedRow, QuarantineRow
from fieldproof import wire
from fieldproof.config import CollectorConfig


class NullWriter:
    def write(self, lines: Sequence[str]) -> None:
        pass

    def close(self) -> None:
        pass


def _gateway() -> tuple[str, bytes, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    pk = wire.public_key_bytes(key)
    return wire.gateway_id_for(pk), pk, key


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    anchor_db = tmp_path / "anchors.sqlite"
    cfg = CollectorConfig.model_validate(
        {
            "collector_id": "c1",
            "data_dir": str(tmp_path / "c"),
            "metrics": {"anchor_db": str(anchor_db)},
        }
    )
    CertificateAuthority.create(cfg.data_dir / "ca", crl_days=30)
    c = Collector(cfg, writer=NullWriter())
    gw, pk, key = _gateway()
    c.registry.add(gw, pk, "farm", "field")
    gw2, pk2, _ = _gateway()
    c.registry.add(gw2, pk2, "farm", "field")
    c.registry.revoke(gw2)

    def msg(seq: int) -> AcceptedRow:
        reading = wire.Reading("s", "soil_moisture", "/", 0.3, time.time())
        m = wire.encode_message(wire.Payload(gw, seq, 1, (reading,)), key)
        return AcceptedRow(gw, seq, 1, 1, m)

    c.store.commit(
        [msg(1), msg(2), msg(5)],  # seqs 3 and 4 never arrived
        [
            QuarantineRow("t", gw, "bad_signature", "x", b""),
            QuarantineRow("t", gw, "bad_signature", "x", b""),
            QuarantineRow("t", gw, "replay", "x", b""),
        ],
        {"accepted": 3, "quarantined:bad_signature": 2, "quarantined:replay": 1},
    )
    # written behind the running collector's back: read the ranges again, as it does at start
    c.received = ReceivedRanges.load(c.db)
    cp = c.evidence.checkpoint()
    assert cp is not None
    with AnchorStore(anchor_db) as anchors:
        row = anchors.create(cfg.log_origin, 2, b"\x00" * 32, b"rec", cp.note, None, time.time())
        anchors.update(row.id, state=AnchorState.FINALIZED, finalized_at=time.time())
        anchors.create(cfg.log_origin, 4, b"\x01" * 32, b"rec", cp.note, None, time.time())
    c.status.take(
        [
            (f"fieldproof/v1/{gw}/status", b'{"online": true, "spool_depth": 7}', time.time()),
            (f"fieldproof/v1/{gw}/status", b'{"online": true, "spool_depth": []}', time.time()),
        ]
    )
    c.lag_s = 1.5
    c.connected.set()
    try:
        yield c
    finally:
        c.db.close()


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_metrics_report_what_the_database_holds(collector: Collector) -> None:
    server = start_metrics_server(collector, port=0)
    assert server is not None
    try:
        m = scrape(server.port)
    finally:
        server.stop()
    assert m["fieldproof_accepted_messages_total"][()] == 3
    q = m["fieldproof_quarantined_messages_total"]
    assert q[(("reason", "bad_signature"),)] == 2 and q[(("reason", "replay"),)] == 1
    assert q[(("reason", "revoked"),)] == 0  # every reason present, so alerts can use rate()
    assert m["fieldproof_sequence_gaps"][()] == 1
    assert m["fieldproof_missing_messages"][()] == 2
    assert m["fieldproof_ingest_lag_seconds"][()] == 1.5
    assert m["fieldproof_mqtt_connected"][()] == 1
    # 2 enrollments, 1 revocation, 3 messages and the seal the checkpoint ends with
    assert m["fieldproof_log_entries"][()] == 7
    assert m["fieldproof_checkpoint_entries"][()] == m["fieldproof_log_entries"][()]
    assert m["fieldproof_anchors"][(("state", "finalized"),)] == 1
    assert m["fieldproof_anchors"][(("state", "pending"),)] == 1
    assert m["fieldproof_anchored_entries"][()] == 2
    assert m["fieldproof_unanchored_entries"][()] == m["fieldproof_log_entries"][()] - 2
    assert m["fieldproof_devices"][(("status", "active"),)] == 1
    assert m["fieldproof_devices"][(("status", "revoked"),)] == 1
    (gw_labels,) = m["fieldproof_gateway_spool_messages"]
    assert m["fieldproof_gateway_spool_messages"][gw_labels] == 7
    ignored = m["fieldproof_status_ignored_total"]
    assert ignored[(("reason", "bad_field"),)] == 1 and ignored[(("reason", "too_large"),)] == 0
    assert 29 * 86400 < m["fieldproof_crl_expiry_seconds"][()] <= 30 * 86400


def test_crl_expiry_is_read_from_the_copy_the_broker_reads(tmp_path: Path) -> None:
    """With ``[enrollment] crl_copy`` set, the broker reads that file: its expiry is the one that
    locks every client out, whatever the CA directory's own crl.pem says."""
    crl_copy = tmp_path / "broker" / "crl.pem"
    crl_copy.parent.mkdir()
    cfg = CollectorConfig.model_validate(
        {
            "collector_id": "c1",
            "data_dir": str(tmp_path / "c"),
            "enrollment": {"ca_dir": str(tmp_path / "ca"), "crl_copy": str(crl_copy)},
        }
    )
    ca = CertificateAuthority.create(tmp_path / "ca", crl_days=30)
    ca.write_crl(days=3, copy_to=crl_copy)  # the broker's copy: 3 days left
    ca.write_crl(days=30)  # the CA directory's own: 30 days left
    c = Collector(cfg, writer=NullWriter())
    try:
        left = CollectorMetrics(c).crl_seconds_left()
    finally:
        c.db.close()
    assert left is not None and 2 * 86400 < left <= 3 * 86400


def test_log_entries_count_matches_the_log(collector: Collector) -> None:
    metrics = CollectorMetrics(collector)
    size, cp_size, _ = metrics.log_state()
    assert size == collector.evidence.log.size() and cp_size == size
    metrics.close()


def test_healthz_follows_broker_and_influx(collector: Collector) -> None:
    now = [1000.0]
    metrics = CollectorMetrics(collector, clock=lambda: now[0])
    server = MetricsServer(metrics, "127.0.0.1", 0)
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.port}/healthz"
    limit = collector.config.metrics.unhealthy_after_s
    try:
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200 and r.json()["status"] == "ok"
        collector.connected.clear()
        assert httpx.get(url, timeout=10).status_code == 200  # a short blip is tolerated
        now[0] += limit + 1
        r = httpx.get(url, timeout=10)
        assert r.status_code == 503 and "broker" in r.json()["problems"][0]
        collector.connected.set()
        assert httpx.get(url, timeout=10).status_code == 200
        collector.ingestor.influx_down_since = now[0] - limit - 5
        r = httpx.get(url, timeout=10)
        assert r.status_code == 503 and "InfluxDB" in r.json()["problems"][0]
        assert httpx.get(f"http://127.0.0.1:{server.port}/nope", timeout=10).status_code == 404
    finally:
        server.stop()


def test_busy_port_does_not_stop_the_collector(collector: Collector) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert start_metrics_server(collector, port=s.getsockname()[1]) is None


def test_off_unless_configured(collector: Collector) -> None:
    assert collector.config.metrics.port is None
    assert start_metrics_server(collector) is None
