"""The gateway agent: sample sensors on a schedule, sign, spool, publish, delete after PUBACK.

Three loops share one spool:
- the sampler reads every sensor each ``interval_s``, signs a message per ``rounds_per_message``
  rounds and commits it to the spool (sequence number assigned in that transaction);
- the publisher sends spooled messages oldest-first over MQTT 5 QoS 1 with at most
  ``inflight_window`` unacked, marks them published on PUBACK and deletes them when a
  collector's receipt says they are durable (resending what no receipt covers in time);
- paho's network thread reconnects with backoff; a broker away for hours only makes the spool
  deeper, and the backlog drains in order when it returns.
A retained status message (with a Last Will saying offline) tells the collector and the
technician what the gateway is doing."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fieldproof import __version__
from fieldproof.config import GatewayConfig
from fieldproof.keys import load_key_file
from fieldproof.mqtt import make_client, readings_topic, receipts_topic, status_topic
from fieldproof.wire import (
    MalformedMessage,
    Payload,
    Reading,
    decode_receipt,
    encode_message,
)
from gateway.enroll import gateway_identity
from gateway.sensors.base import SensorDriver, build_sensor
from gateway.spool import Spool, SpoolError
from gateway.status import clock_state

log = logging.getLogger("fieldproof.gateway")


class GatewayAgent:
    def __init__(
        self,
        config: GatewayConfig,
        key: Ed25519PrivateKey | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.key = key if key is not None else load_key_file(config.key_file)
        # derived from the first key; kept across key rotations (gateway.enroll)
        self.gateway_id = gateway_identity(config, self.key)
        self.clock = clock
        self.spool = Spool(config.spool_path, config.spool_max_messages)
        self.boot = self.spool.new_boot()
        self.sensors: list[SensorDriver] = [build_sensor(s) for s in config.sensors]
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self._wake = threading.Condition()
        self._inflight: dict[int, int | None] = {}  # paho mid -> seq (None: status message)
        self._early_acks: dict[int, ReasonCode] = {}
        self._acked: list[int] = []  # PUBACKed, to mark published
        self._receipts: list[int] = []  # confirmed by a collector, to delete
        self._refused: list[int] = []
        self._collectors_online: dict[str, bool] = {}
        self._confirm_timeout = config.confirm_timeout_s
        self._next_requeue_check = 0.0
        # monotonic time since published messages have waited for a receipt with no progress;
        # wall-clock ages would stall resending for as long as NTP steps the clock back
        self._waiting_since: float | None = time.monotonic() if self.spool.unconfirmed else None
        self._sent_upto = 0  # highest seq handed to paho since the spool was last rescanned
        self._restart_not_before = 0.0
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()  # one publish_pending at a time
        self._connected = False
        self._unspooled: list[list[Reading]] = []  # rounds held in memory while the disk fails
        self._pending_rounds: list[Reading] = []
        self._rounds_in_message = 0
        self.last_publish = 0.0
        self.spool_errors = 0
        prefix = config.mqtt.topic_prefix
        self.topic = readings_topic(prefix, self.gateway_id)
        self.status_topic = status_topic(prefix, self.gateway_id)
        self.receipts_topic = receipts_topic(prefix, self.gateway_id)
        self.presence_filter = f"{prefix}/_collector/+/status"
        self.client = make_client(config.mqtt, self.gateway_id)
        self.client.max_inflight_messages_set(config.inflight_window)
        self.client.max_queued_messages_set(0)
        self.client.will_set(self.status_topic, json.dumps(self._status(online=False)), 1, True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

    # ---------------------------------------------------------------- MQTT callbacks

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            log.warning("broker refused connection: %s", rc)
            return
        log.info("connected to broker %s:%s", self.config.mqtt.host, self.config.mqtt.port)
        self._connected = True
        client.subscribe([(self.receipts_topic, 1), (self.presence_filter, 1)])
        self.publish_status()
        self._notify()

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self._connected = False
        if not self.stop_event.is_set():
            log.warning("lost broker connection (%s); spooling until it returns", rc)

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        with self._lock:
            if mid in self._inflight:
                self._resolve(self._inflight.pop(mid), rc)
            else:  # PUBACK raced ahead of _publish_tracked recording the mid
                self._early_acks[mid] = rc
        self._notify()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if msg.topic == self.receipts_topic:
            try:
                _, seqs = decode_receipt(bytes(msg.payload))
            except MalformedMessage as exc:
                log.warning("ignoring unreadable receipt: %s", exc)
                return
            with self._lock:
                self._receipts.extend(seqs)
            self._notify()
        elif msg.topic.endswith("/status"):
            collector = msg.topic.split("/")[-2]
            online = b'"online": true' in msg.payload or b'"online":true' in msg.payload
            with self._lock:
                self._collectors_online[collector] = online
                if online:  # a collector (re)appeared: check for unconfirmed messages soon
                    self._next_requeue_check = 0.0
            self._notify()

    def _resolve(self, seq: int | None, rc: ReasonCode) -> None:
        """A PUBACK for a tracked publish (seq None = a status message). Holds self._lock."""
        if seq is None:
            return
        if rc.is_failure:
            # Refused by the broker (e.g. ACL): keep it spooled; resent on the next pass.
            log.error("broker refused message seq=%d: %s", seq, rc)
            self._refused.append(seq)
            return
        self._acked.append(seq)
        self.last_publish = time.time()

    def _publish_tracked(
        self, topic: str, payload: bytes, seq: int | None, retain: bool = False
    ) -> None:
        """Publish QoS 1 and match its PUBACK to ``seq``. paho is never called with our lock
        held (its callbacks take our lock while holding its own: the other order deadlocks)."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            rc = self._early_acks.pop(info.mid, None)
            if rc is not None:
                self._resolve(seq, rc)
            else:
                self._inflight[info.mid] = seq

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    # ---------------------------------------------------------------- status

    def _status(self, online: bool) -> dict[str, Any]:
        status: dict[str, Any] = {
            "gateway": self.gateway_id,
            "online": online,
            "version": __version__,
        }
        if online:
            st = self.spool.stats()
            status.update(
                boot=self.boot,
                uptime_s=round(time.monotonic() - self.started, 1),
                spool_depth=st.depth,
                unconfirmed=st.unconfirmed,
                spool_oldest_age_s=round(st.oldest_age_s, 1),
                dropped_messages=st.dropped_messages,
                next_seq=st.next_seq,
                last_publish=self.last_publish,
                clock=self.clock(),
                clock_state=clock_state(self.clock()),
                spool_errors=self.spool_errors,
                sensors={
                    s.name: {"errors": sum(s.errors.values()), "last_error": s.last_error}
                    for s in self.sensors
                },
            )
        return status

    def publish_status(self) -> None:
        self._publish_tracked(
            self.status_topic, json.dumps(self._status(online=True)).encode(), None, retain=True
        )

    # ---------------------------------------------------------------- sampling

    def sample_once(self) -> None:
        """Read every sensor once and spool a message when enough rounds are gathered."""
        now = self.clock()
        round_readings: list[Reading] = []
        for sensor in self.sensors:
            try:
                round_readings.extend(sensor.read(now))
            except Exception as exc:  # a driver bug must not stop the gateway
                log.exception("sensor %s raised instead of reporting a fault", sensor.name)
                sensor.errors[f"driver-error:{type(exc).__name__}"] += 1
        self._pending_rounds.extend(round_readings)
        self._rounds_in_message += 1
        if self._rounds_in_message >= self.config.rounds_per_message and self._pending_rounds:
            self._unspooled.append(self._pending_rounds)
            self._pending_rounds, self._rounds_in_message = [], 0
        self.flush_to_spool()

    def flush_to_spool(self) -> None:
        while self._unspooled:
            readings = self._unspooled[0]

            def build(seq: int, readings: list[Reading] = readings) -> tuple[bytes, int]:
                payload = Payload(self.gateway_id, seq, self.boot, tuple(readings))
                return encode_message(payload, self.key), len(readings)

            try:
                self.spool.add(build)
            except SpoolError as exc:
                self.spool_errors += 1
                log.error("%s (%d messages waiting in memory)", exc, len(self._unspooled))
                return
            self._unspooled.pop(0)
        self._notify()

    # ---------------------------------------------------------------- publishing

    def publish_pending(self) -> int:
        """Hand spooled messages to paho up to the in-flight window; delete acked ones."""
        with self._publish_lock:
            return self._publish_pending()

    def _publish_pending(self) -> int:
        with self._lock:
            acked, self._acked = self._acked, []
            receipts, self._receipts = self._receipts, []
            refused, self._refused = self._refused, []
        if acked:
            self.spool.mark_published(acked)
            if self._waiting_since is None:
                self._waiting_since = time.monotonic()
        if receipts and self.spool.confirm(receipts):
            self._confirm_timeout = self.config.confirm_timeout_s
            self._waiting_since = time.monotonic() if self.spool.unconfirmed else None
        if not self._connected:
            return 0
        self._maybe_requeue()
        with self._lock:
            readings_inflight = sum(1 for seq in self._inflight.values() if seq is not None)
            room = self.config.inflight_window - readings_inflight
            if refused:  # refused messages stay spooled; retry them, but not in a hot loop
                self._restart_not_before = time.monotonic() + 10.0
            if readings_inflight == 0 and time.monotonic() >= self._restart_not_before:
                self._sent_upto = 0  # nothing outstanding: rescan from the oldest unsent
        room = min(room, self.config.max_unconfirmed - self.spool.unconfirmed)
        if room <= 0:
            return 0
        sent = 0
        for msg in self.spool.pending(self._sent_upto, room):
            self._publish_tracked(self.topic, msg.message, msg.seq)
            self._sent_upto = msg.seq
            sent += 1
        return sent

    def _maybe_requeue(self) -> None:
        """Resend what the broker took but no collector confirmed in time, while a collector
        is online (resending to an empty room only piles duplicates in the broker)."""
        now = time.monotonic()
        if now < self._next_requeue_check or self.spool.unconfirmed == 0:
            return
        self._next_requeue_check = now + min(5.0, self._confirm_timeout / 4)
        with self._lock:
            nobody = bool(self._collectors_online) and not any(self._collectors_online.values())
        waited = 0.0 if self._waiting_since is None else now - self._waiting_since
        if nobody or waited < self._confirm_timeout:
            return
        n = self.spool.requeue_unconfirmed()
        self._waiting_since = None
        with self._lock:
            self._sent_upto = 0
        log.warning(
            "%d published message(s) not confirmed by a collector within %.0f s; resending",
            n,
            self._confirm_timeout,
        )
        self._confirm_timeout = min(self._confirm_timeout * 2, 900.0)

    def _publisher_loop(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.publish_pending()
            except Exception:
                log.exception("publisher error; retrying")
            with self._wake:
                self._wake.wait(0.5)

    # ---------------------------------------------------------------- life cycle

    def run(self, duration: float | None = None, drain_timeout: float = 10.0) -> None:
        """Run until stopped (or for ``duration`` seconds), then drain what is in flight."""
        log.info(
            "gateway %s starting: boot %d, %d sensor(s), spool depth %d",
            self.gateway_id,
            self.boot,
            len(self.sensors),
            self.spool.depth,
        )
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0
        self.client.connect_async(
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.config.mqtt.keepalive_s,
            clean_start=True,
            properties=props,
        )
        self.client.loop_start()
        publisher = threading.Thread(target=self._publisher_loop, name="publisher", daemon=True)
        publisher.start()
        end = None if duration is None else time.monotonic() + duration
        next_sample = time.monotonic()
        next_status = time.monotonic() + self.config.status_interval_s
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if end is not None and now >= end:
                    break
                if now >= next_sample:
                    self.sample_once()
                    next_sample += self.config.interval_s
                    if next_sample < now:  # we fell behind (slow sensor): skip, do not burst
                        next_sample = now + self.config.interval_s
                if now >= next_status and self._connected:
                    self.publish_status()
                    next_status = now + self.config.status_interval_s
                wait_until = min(next_sample, next_status, end if end is not None else next_sample)
                self.stop_event.wait(max(0.0, wait_until - time.monotonic()))
        finally:
            self.shutdown(drain_timeout)
            publisher.join(timeout=5)

    def shutdown(self, drain_timeout: float = 10.0) -> None:
        """Give spooled messages a chance to go and be confirmed, then disconnect cleanly.
        Whatever is not confirmed stays spooled for the next start."""
        if self._pending_rounds:  # rounds gathered for a message that is not full yet
            self._unspooled.append(self._pending_rounds)
            self._pending_rounds, self._rounds_in_message = [], 0
        self.flush_to_spool()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and self._connected:
            self.publish_pending()
            if self.spool.depth == 0:
                break
            time.sleep(0.05)
        self.publish_pending()
        self.stop_event.set()
        self._notify()
        if self._connected:
            info = self.client.publish(
                self.status_topic, json.dumps(self._status(online=False)), 1, True
            )
            info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception:
                log.exception("closing sensor %s failed", sensor.name)
        self.spool.close()

    def stop(self) -> None:
        self.stop_event.set()
