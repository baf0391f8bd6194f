"""End to end over real parts: gateway processes → real Mosquitto → collector process → real
InfluxDB 1.x, with the broker restarted, the collector killed -9 and InfluxDB taken away."""

from __future__ import annotations

import hashlib
import itertools
import random
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from anchor.evidence import EvidenceLog
from fieldproof import wire
from fieldproof.config import load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats import merkle
from fieldproof.formats.checkpoint import open_checkpoint
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.formats.seal import is_seal_entry
from fieldproof.keys import load_key_file
from tests.support.stack import Stack, started_stack, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with started_stack(tmp_path) as s:
        yield s


def assert_all_delivered(stack: Stack) -> None:
    """Every acknowledged reading is in InfluxDB and accepted exactly once; none left over."""
    stack.wait_caught_up()
    published = stack.published()
    assert sum(published.values()) > 0
    assert stack.still_spooled() == 0
    stored = stack.stored()
    for gw, n in published.items():
        assert stored.get(gw, 0) == n, f"{gw}: published {n}, InfluxDB has {stored.get(gw, 0)}"
    store = stack.store()
    _, readings = store.accepted_count()
    assert readings == sum(published.values())  # primary key (gateway, seq): never twice
    assert store.gaps() == []
    store.db.close()
    stack.stop_collector()  # signs a final checkpoint
    assert_log_consistent(stack)


def assert_log_consistent(stack: Stack) -> None:
    """The evidence log holds every accepted message exactly once plus the enrollments and
    each checkpoint's seal, each provably included under the final checkpoint, and every
    checkpoint extends the previous."""
    cfg = load_collector_config(stack.collector_config)
    db = open_db(cfg.db_path)
    ev = EvidenceLog.open(db, cfg.log_origin, key_file=None)
    checkpoints = ev.checkpoints()
    assert checkpoints, "the collector signed no checkpoint"
    final = checkpoints[-1]
    size = ev.log.size()
    assert final.checkpoint.size == size
    rows = db.execute("SELECT log_index, digest FROM received ORDER BY log_index").fetchall()
    indexes = [r[0] for r in rows]
    assert None not in indexes and len(set(indexes)) == len(indexes)
    enrolls = [i for i in range(size) if parse_registry_event(ev.log.entry(i)) is not None]
    assert len(enrolls) == len(stack.gateways)
    # and one completeness seal per checkpoint: its last leaf, nowhere else
    seals = [i for i in range(size) if is_seal_entry(ev.log.entry(i))]
    assert seals == [c.checkpoint.size - 1 for c in checkpoints]
    assert sorted(indexes + enrolls + seals) == list(range(size))
    for index, digest in rows:
        entry = ev.log.entry(index)
        assert hashlib.sha256(entry).digest() == bytes(digest)
        merkle.verify_inclusion(
            merkle.leaf_hash(entry),
            index,
            size,
            ev.log.inclusion_proof(index, size),
            final.checkpoint.root_hash,
        )
    verifier = EvidenceLog.open(db, cfg.log_origin, cfg.log_key_file).verifier()
    for older, newer in itertools.pairwise(checkpoints):
        open_checkpoint(newer.note, verifier, origin=cfg.log_origin)
        merkle.verify_consistency(
            older.checkpoint.size,
            newer.checkpoint.size,
            ev.log.consistency_proof(older.checkpoint.size, newer.checkpoint.size),
            older.checkpoint.root_hash,
            newer.checkpoint.root_hash,
        )
    db.close()


def test_end_to_end_delivery(stack: Stack) -> None:
    stack.start_collector()
    for _ in range(2):
        stack.start_gateway(stack.add_gateway(interval=0.2))
    # both gateways delivering (a gateway still starting when SIGTERM comes dies without a
    # spool), then everything spooled so far held, so the shutdown drain has little to do
    wait_until(
        lambda: (
            len(stack.accepted_by_gateway()) == 2
            and min(stack.accepted_by_gateway().values()) >= 10
        ),
        60,
        "10 messages accepted from each of the 2 gateways",
    )
    stack.wait_holds_spooled()
    stack.stop_gateways()
    assert_all_delivered(stack)
    # the points carry the registry's tags and the SenML units
    rows = stack.influx.query(
        'SELECT last("value"), "unit", "farm", "field" FROM "soil_moisture" GROUP BY "gateway"'
    )
    assert len(rows) == 2
    for series in rows:
        _, value, unit, farm, field = series["values"][0]  # type: ignore[index]
        assert unit == "/" and farm == "test-farm" and field == "f1"
        assert 0.05 < value < 0.6


def test_broker_restart_mid_stream(stack: Stack) -> None:
    """Gateways keep sampling while the broker is away and drain in order when it returns.
    Mosquitto 2.0 drops shared-subscription messages for offline sessions after a restart; the
    collector's receipts make the gateways resend exactly those."""
    stack.start_collector()
    gws = [stack.add_gateway(interval=0.1) for _ in range(2)]
    for g in gws:
        stack.start_gateway(g)
    time.sleep(2)
    stack.broker.stop()
    before = stack.accepted_readings()
    time.sleep(3)
    stack.broker.start()
    # paho reconnects with backoff; wait until the backlog flows again
    wait_until(lambda: stack.accepted_readings() > before + 200, 60, "backlog draining")
    # Messages the broker dropped come back only when the gateway's confirm timeout (10 s)
    # passes without a receipt; a stopping gateway keeps them spooled for its next start. So
    # wait, with the gateways running, until the collector holds everything spooled so far.
    stack.wait_holds_spooled()
    stack.stop_gateways()
    assert_all_delivered(stack)


def test_collector_kill9_loses_and_duplicates_nothing(stack: Stack) -> None:
    """kill -9 the collector repeatedly under load; on restart nothing is lost or stored twice."""
    stack.start_collector()
    for _ in range(2):
        stack.start_gateway(stack.add_gateway(interval=0.05))
    rng = random.Random(7)
    for _ in range(4):
        time.sleep(rng.uniform(0.5, 1.5))
        stack.kill_collector()
        time.sleep(rng.uniform(0.1, 0.8))
        stack.start_collector()
    # the backlog of the last outage held before the gateways stop (their drain lasts 10 s)
    stack.wait_holds_spooled()
    stack.stop_gateways()
    assert_all_delivered(stack)


def test_influxdb_down_holds_acks_then_catches_up(stack: Stack) -> None:
    stack.start_collector()
    stack.start_gateway(stack.add_gateway(interval=0.1))
    # readings flowing, so the collector meets the outage with messages to write
    wait_until(lambda: stack.accepted_readings() > 0, 60, "first readings accepted")
    stack.influx.stop()
    before = stack.accepted_readings()
    wait_until(
        lambda: "holding acks" in stack.log("collector.log"),
        60,
        "the collector to hold acks (log 'holding acks') while InfluxDB is down",
    )
    time.sleep(4)  # an outage of a few seconds, watched
    # nothing is committed (so nothing acked) while InfluxDB cannot take it; at most the batch
    # that was already being committed when it went away
    assert stack.accepted_readings() - before <= 100
    stack.influx.start()
    # what was held during the outage is written once InfluxDB is back (after the collector's
    # retry backoff) before the gateways stop (their drain lasts 10 s)
    stack.wait_holds_spooled()
    stack.stop_gateways()
    assert_all_delivered(stack)


def _raw_client(port: int, client_id: str) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def test_hostile_messages_quarantined_good_traffic_unaffected(stack: Stack) -> None:
    """Forged, unknown, garbled, oversized, mis-topiced and replayed messages each land in
    quarantine with their reason while a real gateway's readings all arrive."""
    stack.start_collector()
    good = stack.add_gateway(interval=0.1)
    victim = stack.add_gateway(interval=1.0)  # registered; its key is not used by the attacker
    stack.start_gateway(good)
    time.sleep(1)
    attacker = Ed25519PrivateKey.generate()
    unknown_key = Ed25519PrivateKey.generate()
    unknown_id = wire.gateway_id_for(wire.public_key_bytes(unknown_key))
    good_key = load_key_file(good.config_path.parent / "gateway.key")

    def msg(gw: str, key: Ed25519PrivateKey, seq: int) -> bytes:
        return wire.encode_message(
            wire.Payload(gw, seq, 1, (wire.Reading("x", "soil_moisture", "/", 0.2, time.time()),)),
            key,
        )

    prefix = "fieldproof/v1"
    c = _raw_client(stack.broker.port, "attacker")
    sent = {
        "bad_signature": [
            (f"{prefix}/{victim.gateway_id}/readings", msg(victim.gateway_id, attacker, 5))
        ],
        "unknown_gateway": [(f"{prefix}/{unknown_id}/readings", msg(unknown_id, unknown_key, 1))],
        "malformed": [
            (f"{prefix}/{victim.gateway_id}/readings", b"\xd2\x84garbage"),
            (f"{prefix}/{victim.gateway_id}/readings", b""),
        ],
        "oversized": [(f"{prefix}/{victim.gateway_id}/readings", b"\x00" * 70_000)],
        "topic_mismatch": [
            (f"{prefix}/{victim.gateway_id}/readings", msg(good.gateway_id, good_key, 10**9))
        ],
    }
    for items in sent.values():
        for topic, payload in items:
            c.publish(topic, payload, qos=1).wait_for_publish(5)
    # replay: an accepted message of the good gateway, captured and sent again
    store = stack.store()
    wait_until(lambda: store.accepted_count()[0] > 0, 30, "first accepted message")
    captured = wire.encode_message(
        wire.Payload(
            good.gateway_id, 10**6, 1, (wire.Reading("x", "soil_moisture", "/", 0.25, time.time()),)
        ),
        good_key,
    )
    c.publish(f"{prefix}/{good.gateway_id}/readings", captured, qos=1).wait_for_publish(5)
    wait_until(
        lambda: (good.gateway_id, 10**6) in store.digests([(good.gateway_id, 10**6)]),
        30,
        "captured message accepted once",
    )
    c.publish(f"{prefix}/{good.gateway_id}/readings", captured, qos=1).wait_for_publish(5)
    sent["replay"] = [("", captured)]
    c.disconnect()
    c.loop_stop()

    expected = {reason: len(items) for reason, items in sent.items()}
    wait_until(
        lambda: stack.store().quarantine_by_reason() == expected,
        30,
        f"quarantine counts {expected}",
    )
    time.sleep(1)
    stack.stop_gateways()
    stack.wait_caught_up()
    published = stack.published()
    stored = stack.stored()
    # the good gateway's readings all arrived (plus the one captured message we injected)
    assert stored[good.gateway_id] == published[good.gateway_id] + 1
    rows = store.quarantine_rows(20)
    assert {r[3] for r in rows} == set(expected)
    assert all(r[4] for r in rows)  # every quarantine row says why
    assert stack.collector is not None and stack.collector.poll() is None  # still running
    store.db.close()
