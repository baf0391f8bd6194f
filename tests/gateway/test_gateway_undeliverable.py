"""A message an earlier gateway version spooled past the limit a collector may accept (65,535
bytes, what its log can hold) is never published: a collector would quarantine it as
``oversized`` without a receipt, and the gateway would resend it, with a doubling wait, for
ever. The agent drops it unsent, counts it in the spool's ``dropped_messages`` and says so
once; the messages after it go as usual.

The real agent and spool, a real Mosquitto broker, and a subscriber that sees what the gateway
actually publishes."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fieldproof.config import MqttConfig
from fieldproof.mqtt import make_client, readings_topic
from fieldproof.services import Mosquitto
from fieldproof.wire import (
    MAX_MESSAGE_BYTES,
    Payload,
    Reading,
    encode_message,
    gateway_id_for,
    public_key_bytes,
)
from gateway.agent import GatewayAgent
from gateway.config import GatewayConfig
from gateway.spool import Spool

KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"undeliverable").digest())
GW = gateway_id_for(public_key_bytes(KEY))


def wait_until(what: str, done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def message(seq: int, readings: int) -> bytes:
    return encode_message(
        Payload(
            GW,
            seq,
            1,
            tuple(
                Reading(f"s{i:04d}", "soil_moisture", "/", None, 1.7e9, "r" * 100)
                for i in range(readings)
            ),
        ),
        KEY,
    )


def test_a_spooled_message_past_the_limit_is_dropped_not_resent_forever(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        mqtt = MqttConfig(port=broker.port)
        config = GatewayConfig(
            key_file=tmp_path / "gateway.key",
            data_dir=tmp_path,
            interval_s=3600,
            status_interval_s=3600,
            mqtt=mqtt,
        )
        too_long, fine = message(1, 500), message(2, 3)
        assert len(too_long) > MAX_MESSAGE_BYTES >= len(fine)
        spool = Spool(config.spool_path)
        spool.add(lambda seq: (too_long, 500))
        spool.add(lambda seq: (fine, 3))
        spool.close()

        seen: list[bytes] = []
        watcher = make_client(mqtt, "watcher")
        subscribed = threading.Event()
        watcher.on_connect = lambda c, *_: c.subscribe(readings_topic(mqtt.topic_prefix, GW), 1)
        watcher.on_subscribe = lambda *_: subscribed.set()

        def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
            seen.append(bytes(msg.payload))

        watcher.on_message = on_message
        watcher.connect(mqtt.host, mqtt.port)
        watcher.loop_start()
        try:
            assert subscribed.wait(30)
            agent = GatewayAgent(config, key=KEY)
            runner = threading.Thread(target=agent.run, kwargs={"drain_timeout": 0.5})
            with caplog.at_level(logging.ERROR, logger="fieldproof.gateway"):
                runner.start()
                try:
                    wait_until("the next message to arrive", lambda: fine in seen)
                    wait_until("the broker's PUBACK", lambda: agent.spool.unconfirmed == 1)
                    stats = agent.spool.stats()
                finally:
                    agent.stop()
                    runner.join(30)
        finally:
            watcher.loop_stop()
            watcher.disconnect()
        # published in seq order: had the first gone out, it would have arrived before
        assert seen == [fine]
        assert stats.dropped_messages == 1 and stats.depth == 1
        said = [m for m in caplog.messages if "longer than a collector" in m]
        assert len(said) == 1, said
        assert f"(seq 1; {len(too_long)} bytes)" in said[0] and "500 reading(s)" in said[0]
        reopened = Spool(config.spool_path)  # the drop is durable
        try:
            assert [m.seq for m in reopened.pending(0, 10)] == [2]
            assert reopened.stats().dropped_messages == 1
        finally:
            reopened.close()
    finally:
        broker.stop()
