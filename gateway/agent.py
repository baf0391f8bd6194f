"""The gateway agent: sample sensors on a schedule, sign, spool, publish, delete on receipt.

Three loops share one spool:
- the sampler reads every sensor each ``interval_s``, signs a message per ``rounds_per_message``
  rounds and commits it to the spool (sequence number assigned in that transaction); rounds
  that would make a message longer than a log entry may be (65,535 bytes, or more than 1,000
  readings) are spread over as many messages as needed, and one sensor's readings of one round
  that alone would not fit are refused, counted and said once (``_messages_of``);
- the publisher sends spooled messages oldest-first over MQTT 5 QoS 1 with at most
  ``inflight_window`` unacked, marks them published on PUBACK (in memory) and confirms them
  when a collector's receipt says they are durable (resending what no receipt covers in time);
  the rows of confirmed messages are deleted with the next message's transaction, so a message
  costs one fsync'd commit (see gateway.spool);
- paho's network thread reconnects with backoff; a broker away for hours only makes the spool
  deeper, and the backlog drains in order when it returns.
A retained status message (with a Last Will saying offline) tells the collector and the
technician what the gateway is doing.

A spool that cannot be written (disk full, failing card) does not stop sampling: messages wait
in memory, bounded (``memory_max_messages``, oldest dropped and counted past it), and are
spooled when the disk takes them again. One ERROR says so when it starts, one INFO when it
ends; ``spool_errors`` and ``held_in_memory`` in the status message count it meanwhile. A
message is never published before it is durable: it gets its sequence number and signature
inside the spool transaction, so there is nothing to publish until that commits."""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from fieldproof import __version__
from fieldproof.formats.status import MAX_SENSORS, clip_text, encode_status
from fieldproof.keys import load_key_file
from fieldproof.mqtt import make_client, readings_topic, receipts_topic, status_topic
from fieldproof.wire import (
    MAX_MESSAGE_BYTES,
    MAX_READINGS_PER_MESSAGE,
    MAX_SEQ,
    MISSING_PREFIX,
    MalformedMessage,
    Payload,
    Reading,
    decode_receipt,
    encode_message,
)
from gateway.config import GatewayConfig
from gateway.enroll import gateway_identity
from gateway.local_status import write_local_status
from gateway.sensors.base import SensorDriver, build_sensor
from gateway.spool import Spool, SpooledMessage, SpoolError
from gateway.status import clock_state

log = logging.getLogger("fieldproof.gateway")

#: receipted messages whose rows may wait in memory for the next message's transaction before
#: they are deleted on their own (a backlog draining confirms far faster than sampling adds)
CONFIRM_BATCH = 1000
#: a publisher error that repeats is logged with its traceback at most this often
REPEAT_LOG_S = 300.0
#: the longest a message waits for a receipt before it is resent (its wait doubles per resend)
MAX_CONFIRM_TIMEOUT_S = 900.0
#: a sensor's fault reason (in its status errors) when its readings of one round alone are
#: longer than a message may be: they are never signed (the collector could not log them)
TOO_LARGE = "reading-too-large"


def size_bound(gateway: str, readings: list[Reading]) -> int:
    """An upper bound on the encoded payload of ``readings`` at any seq and boot, without
    encoding it: every CBOR item's head at its longest (9 bytes for a number, float or int; 5
    for a string or container head here), every character as 4 UTF-8 bytes, each SenML record
    with all its members. Loose by design: it only lets :meth:`GatewayAgent._fits` skip the
    exact encode when a message is far below the limit."""
    top = 5 + 5 * (5 + 4) + 2 * 9 + 5 + 4 * len(gateway)  # v, gw, seq, boot, e
    first = 2 * (1 + 9) + 5 + 4 * (len(gateway) + 16)  # bn (base name) and bt
    per = 5 + 5 * (1 + 9)  # the record's map head, five keys and their item heads
    return top + first + sum(
        per
        + 4 * (len(r.sensor) + 1 + len(r.quantity) + len(r.unit))
        + 4 * (len(MISSING_PREFIX) + max(len(r.missing_reason), len("unknown")))
        for r in readings
    )


def memory_max_messages(config: GatewayConfig) -> int:
    """How many messages to hold in memory while the spool cannot be written: a day of them,
    at least 100 and at most 10 000 (a few MiB of readings)."""
    per_day = 86_400.0 / (config.interval_s * config.rounds_per_message)
    return int(min(10_000, max(100, per_day)))


def mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (what a technician must free)."""
    p = path.resolve()
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


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
        self._state_lock = threading.Lock()  # spool health, written by sampler and publisher
        self.spool_errors = 0
        self._spool_failure: str | None = None  # why the spool cannot be written, while so
        self._spool_failed_since = 0.0
        self._spool_errors_at_failure = 0
        self.memory_max_messages = memory_max_messages(config)
        self.unspooled_dropped_messages = 0
        self.unspooled_dropped_readings = 0
        self._dropped_logged = False
        self.spool = Spool(config.spool_path, config.spool_max_messages)
        try:
            self.boot = self.spool.new_boot()
        except SpoolError as exc:  # the number is kept and written with the first message
            self.boot = self.spool.boot
            self._spool_failed(exc)
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
        self._next_requeue_check = 0.0
        self._sent_upto = 0  # highest seq handed to paho since the spool was last rescanned
        self._restart_not_before = 0.0
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()  # one publish_pending at a time
        self._connected = False
        self._unspooled: list[list[Reading]] = []  # messages held in memory while the disk fails
        # rounds gathered for the next message(s): (sensor, its readings of one round)
        self._pending_rounds: list[tuple[str, list[Reading]]] = []
        self._rounds_in_message = 0
        #: readings refused because one sensor's round alone is longer than a message may be
        self.oversized_readings = 0
        self._oversized_logged: set[str] = set()
        # a signed message is its payload plus a fixed COSE_Sign1 wrapper (tag, headers with
        # this gateway's kid, signature) and the payload's bstr head: measured once with the
        # real signer around a payload of 256+ bytes, whose 3-byte head any payload that can
        # fit has at most, so sizes are checked without signing twice (see _fits)
        probe = Payload(
            self.gateway_id, 0, 0, (Reading("probe", "size", "", None, 0.0, "x" * 300),)
        )
        self._cose_overhead = len(encode_message(probe, self.key)) - len(probe.to_cbor())
        # receipts may wait this long for the next message's transaction to delete their rows
        self._confirm_delay = min(
            600.0, max(5.0, 1.5 * config.interval_s * config.rounds_per_message)
        )
        self._next_flush_try = 0.0
        self._publisher_error = ("", 0.0, 0)  # last error, when its traceback was logged, repeats
        self.last_publish = 0.0
        prefix = config.mqtt.topic_prefix
        self.topic = readings_topic(prefix, self.gateway_id)
        self.status_topic = status_topic(prefix, self.gateway_id)
        self.receipts_topic = receipts_topic(prefix, self.gateway_id)
        self.presence_filter = f"{prefix}/_collector/+/status"
        self.client = make_client(config.mqtt, self.gateway_id)
        self.client.max_inflight_messages_set(config.inflight_window)
        self.client.max_queued_messages_set(0)
        self.client.will_set(self.status_topic, self._status(online=False), 1, True)
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
        self._write_local_status()
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
        # paho re-raises a callback's exception in its network thread, which then ends: the
        # gateway would go silent until restarted. No message may do that.
        try:
            self._handle_message(msg)
        except Exception:
            log.exception("ignoring a message on %s that could not be handled", msg.topic)

    def _handle_message(self, msg: paho.MQTTMessage) -> None:
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

    def _status(self, online: bool) -> bytes:
        """The status message, built through the model every collector reads it with."""
        status: dict[str, Any] = {
            "gateway": self.gateway_id,
            "online": online,
            "version": __version__,
        }
        if online:
            status.update(
                boot=self.boot,
                uptime_s=round(time.monotonic() - self.started, 1),
                last_publish=self.last_publish,
                clock=self.clock(),
                clock_state=clock_state(self.clock()),
                spool_errors=self.spool_errors,
                spool_writable=self._spool_failure is None,
                held_in_memory=len(self._unspooled),
                unspooled_dropped_readings=self.unspooled_dropped_readings,
                sensors={
                    clip_text(s.name): {
                        "errors": sum(s.errors.values()),
                        "last_error": clip_text(s.last_error),
                    }
                    for s in self.sensors[:MAX_SENSORS]
                },
            )
            if self._spool_failure is not None:
                status["spool_error"] = clip_text(self._spool_failure)
            try:
                st = self.spool.stats()
            except SpoolError as exc:
                status["spool_error"] = clip_text(exc.reason)
            else:
                status.update(
                    spool_depth=st.depth,
                    unconfirmed=st.unconfirmed,
                    spool_oldest_age_s=max(0.0, round(st.oldest_age_s, 1)),  # clock stepped back
                    dropped_messages=st.dropped_messages,
                    next_seq=st.next_seq,
                )
        try:
            return encode_status(status)
        except ValueError as exc:  # a bug here must not silence the gateway: say the minimum
            log.error("status not sent in full (%s); sending online/version only", exc)
            return encode_status({k: status[k] for k in ("gateway", "online", "version")})

    def publish_status(self) -> None:
        status = self._status(online=True)
        self._publish_tracked(self.status_topic, status, None, retain=True)
        self._write_local_status(status)

    def _write_local_status(self, status: bytes | None = None, online: bool = True) -> None:
        """The same status as a file for the doctor (gateway/local_status.py). A full or
        read-only disk must not stop the agent: the broker has the status anyway."""
        try:
            write_local_status(
                self.config.data_dir, status or self._status(online), self._connected
            )
        except OSError as exc:
            log.debug("local status not written: %s", exc)

    # ---------------------------------------------------------------- sampling

    def sample_once(self) -> None:
        """Read every sensor once and spool a message when enough rounds are gathered."""
        now = self.clock()
        for sensor in self.sensors:
            try:
                readings = list(sensor.read(now))
            except Exception as exc:  # a driver bug must not stop the gateway
                log.exception("sensor %s raised instead of reporting a fault", sensor.name)
                sensor.errors[f"driver-error:{type(exc).__name__}"] += 1
                continue
            if readings:
                self._pending_rounds.append((sensor.name, readings))
        self._rounds_in_message += 1
        if self._rounds_in_message >= self.config.rounds_per_message and self._pending_rounds:
            for message in self._messages_of(self._pending_rounds):
                self._hold(message)
            self._pending_rounds, self._rounds_in_message = [], 0
        self.flush_to_spool()

    def _fits(self, readings: list[Reading]) -> bool:
        """Whether these readings, signed as one message, stay within what the collector may
        accept and log (:data:`~fieldproof.wire.MAX_MESSAGE_BYTES`, a tlog-tiles entry). The
        payload is encoded by the real encoder at the largest sequence and boot numbers: a
        message's size only grows with them, so whatever seq the spool gives it later, it
        fits."""
        if not readings or len(readings) > MAX_READINGS_PER_MESSAGE:
            return False
        if size_bound(self.gateway_id, readings) + self._cose_overhead <= MAX_MESSAGE_BYTES:
            return True  # the usual case, decided without encoding (~60 µs for 5 readings)
        worst = Payload(self.gateway_id, MAX_SEQ, MAX_SEQ, tuple(readings)).to_cbor()
        return len(worst) + self._cose_overhead <= MAX_MESSAGE_BYTES

    def _messages_of(self, groups: list[tuple[str, list[Reading]]]) -> list[list[Reading]]:
        """The gathered rounds as messages that each fit (:meth:`_fits`): one message when they
        do (one encode, the usual case), else as few as the greedy cut finds, each sensor's
        readings of one round kept together. Those that alone cannot fit (a sensor returning
        absurd data) are refused: a longer message would be quarantined as ``oversized``
        without a receipt and resent forever, holding the gateway's backlog behind it."""
        everything = [r for _, readings in groups for r in readings]
        if self._fits(everything):
            return [everything]
        kept: list[list[Reading]] = []
        refused: list[tuple[str, int]] = []
        for name, readings in groups:
            if self._fits(readings):
                kept.append(readings)
            else:
                refused.append((name, len(readings)))
        if refused:
            self._refuse(refused)
        messages: list[list[Reading]] = []
        while kept:
            # the longest run of groups from the front that fits, by bisection: kept[:lo] fits
            # (one group alone always does), kept[:hi + 1] does not unless it is all of them
            lo, hi = 1, len(kept)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._fits([r for readings in kept[:mid] for r in readings]):
                    lo = mid
                else:
                    hi = mid - 1
            messages.append([r for readings in kept[:lo] for r in readings])
            kept = kept[lo:]
        return messages

    def _refuse(self, refused: list[tuple[str, int]]) -> None:
        """Count readings that are never signed (each sensor's refused rounds in its status
        errors) and say so once per sensor, naming it and what to check."""
        by_name = {s.name: s for s in self.sensors}
        counts: dict[str, int] = {}
        for name, n in refused:
            self.oversized_readings += n
            counts[name] = counts.get(name, 0) + n
            sensor = by_name.get(name)
            if sensor is not None:
                sensor.errors[TOO_LARGE] += 1
                sensor.last_error = TOO_LARGE
        new = sorted(set(counts) - self._oversized_logged)
        if not new:
            log.debug("refused %d oversized reading(s) again", sum(counts.values()))
            return
        self._oversized_logged.update(new)
        log.error(
            "sensor(s) %s returned more in one round than one signed message may carry (%d "
            "bytes, %d readings; the collector logs each message as a tlog-tiles entry): %s "
            "reading(s) not signed or sent, and every such round from now on (counted in the "
            "sensor's errors as %r; said once per sensor). Check the sensor's wiring and "
            "configuration with 'fieldproof gateway sensors test'",
            ", ".join(new),
            MAX_MESSAGE_BYTES,
            MAX_READINGS_PER_MESSAGE,
            ", ".join(f"{name}: {counts[name]}" for name in new),
            TOO_LARGE,
        )

    def _hold(self, readings: list[Reading]) -> None:
        """Queue one message's readings for the spool; past the memory bound the oldest held
        message is dropped, counted and said once (nothing but a full disk gets here)."""
        self._unspooled.append(readings)
        if len(self._unspooled) <= self.memory_max_messages:
            return
        lost = self._unspooled.pop(0)
        self.unspooled_dropped_messages += 1
        self.unspooled_dropped_readings += len(lost)
        self.spool.note_unspooled_dropped(len(lost))
        if not self._dropped_logged:
            self._dropped_logged = True
            log.error(
                "the spool %s still cannot be written and %d messages are held in memory: "
                "dropping the oldest readings from now on (counted in status as "
                "unspooled_dropped_readings); free space on %s now",
                self.spool.path,
                self.memory_max_messages,
                mount_point(self.spool.path),
            )

    def flush_to_spool(self) -> None:
        """Spool what is held in memory, oldest first; stop at the first failure."""
        wrote = False
        while self._unspooled:
            readings = self._unspooled[0]

            def build(seq: int, readings: list[Reading] = readings) -> tuple[bytes, int]:
                payload = Payload(self.gateway_id, seq, self.boot, tuple(readings))
                return encode_message(payload, self.key), len(readings)

            try:
                self.spool.add(build)
            except SpoolError as exc:
                self._spool_failed(exc)
                return
            self._unspooled.pop(0)
            wrote = True
        if wrote:
            self._spool_recovered()
            self._notify()

    # ---------------------------------------------------------------- spool health

    def _spool_failed(self, exc: SpoolError) -> None:
        """Count a failed spool write; say so once per outage, with what to do."""
        with self._state_lock:
            self.spool_errors += 1
            first = self._spool_failure is None
            if first:
                self._spool_failure = exc.reason
                self._spool_failed_since = time.monotonic()
                self._spool_errors_at_failure = self.spool_errors - 1
        if not first:
            log.debug("%s (still failing; %d held in memory)", exc, len(self._unspooled))
            return
        where = mount_point(exc.path)
        try:
            free = f"{shutil.disk_usage(where).free / 1e6:.1f} MB free"
        except OSError:
            free = "free space unknown"
        every = self.config.interval_s * self.config.rounds_per_message
        log.error(
            "%s; free space on %s (%s) or replace a failing card. Readings are kept in memory, "
            "up to %d messages (%.1f h at this interval), and the write is retried every %g s; "
            "nothing already spooled is lost",
            exc,
            where,
            free,
            self.memory_max_messages,
            self.memory_max_messages * every / 3600,
            every,
        )

    def _spool_recovered(self) -> None:
        """A spool write succeeded with nothing left in memory: say once that it is over."""
        with self._state_lock:
            if self._spool_failure is None or self._unspooled:
                return
            self._spool_failure = None
            failed = self.spool_errors - self._spool_errors_at_failure
            lasted = time.monotonic() - self._spool_failed_since
            dropped, self._dropped_logged = self.unspooled_dropped_readings, False
        log.info(
            "spool %s is writable again after %.0f s (%d failed writes); everything held in "
            "memory is spooled%s",
            self.spool.path,
            lasted,
            failed,
            f"; {dropped} readings were dropped since the start (memory full)" if dropped else "",
        )

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
        if receipts:
            self.spool.confirm_later(receipts)
        self._maybe_flush_confirmed()
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
        undeliverable: list[SpooledMessage] = []
        for msg in self.spool.pending(self._sent_upto, room):
            if len(msg.message) > MAX_MESSAGE_BYTES:
                undeliverable.append(msg)
                continue
            self._publish_tracked(self.topic, msg.message, msg.seq)
            self._sent_upto = msg.seq
            sent += 1
        if undeliverable:
            self._drop_undeliverable(undeliverable)
        return sent

    def _drop_undeliverable(self, messages: list[SpooledMessage]) -> None:
        """Messages spooled by an older version that signed past the limit: a collector
        quarantines each as ``oversized`` without a receipt, so it would be resent forever.
        Dropped and counted (``dropped_messages``); said once, as each goes only once."""
        n = self.spool.drop(m.seq for m in messages)
        log.error(
            "%d spooled message(s) (seq %s; %s bytes) are longer than a collector may accept "
            "(%d bytes, what its log can hold): signed by an earlier version of the gateway, "
            "they could never be confirmed and would be resent forever. Dropped unsent with "
            "their %d reading(s), counted in the spool's dropped_messages; this version spreads "
            "such rounds over several messages",
            n,
            ", ".join(str(m.seq) for m in messages),
            ", ".join(str(len(m.message)) for m in messages),
            MAX_MESSAGE_BYTES,
            sum(m.readings for m in messages),
        )

    def _maybe_flush_confirmed(self) -> None:
        """Delete receipted rows on their own when many wait or no message came to take them
        along (sampling slower than receipts, or the spool failing); retried every 5 s."""
        waiting = self.spool.confirmed_waiting
        if not waiting:
            return
        now = time.monotonic()
        due = waiting >= CONFIRM_BATCH or self.spool.confirmed_waiting_s() >= self._confirm_delay
        if not due or now < self._next_flush_try:
            return
        try:
            self.spool.flush()
        except SpoolError as exc:
            self._next_flush_try = now + 5.0
            self._spool_failed(exc)
            return
        self._spool_recovered()

    def _maybe_requeue(self) -> None:
        """Resend each message the broker took but no collector confirmed within the confirm
        timeout (its own clock, doubling with each resend of it, up to MAX_CONFIRM_TIMEOUT_S),
        while a collector is online (resending to an empty room only piles duplicates in the
        broker). Monotonic time: a wall clock NTP steps back would stall resending."""
        now = time.monotonic()
        if now < self._next_requeue_check or self.spool.unconfirmed == 0:
            return
        timeout = self.config.confirm_timeout_s
        self._next_requeue_check = now + min(5.0, timeout / 4)
        with self._lock:
            nobody = bool(self._collectors_online) and not any(self._collectors_online.values())
        if nobody:
            return
        overdue = self.spool.overdue(timeout, MAX_CONFIRM_TIMEOUT_S)
        n = self.spool.requeue(overdue)
        if not n:
            return
        with self._lock:
            self._sent_upto = 0
        log.warning(
            "%d published message(s) (seq %d%s) not confirmed by a collector within %.0f s or "
            "more; resending",
            n,
            overdue[0],
            f"..{overdue[-1]}" if len(overdue) > 1 else "",
            timeout,
        )

    def _publisher_loop(self) -> None:
        while not self.stop_event.is_set():
            self._publish_once()
            with self._wake:
                self._wake.wait(0.5)

    def _publish_once(self) -> None:
        try:
            self.publish_pending()
        except SpoolError as exc:  # reading the spool failed: retried, said once
            self._spool_failed(exc)
        except Exception as exc:
            self._publisher_failed(exc)

    def _publisher_failed(self, exc: Exception) -> None:
        """An unexpected error: its traceback once, then once per REPEAT_LOG_S while it
        repeats (the loop retries every 0.5 s; a traceback each time buries the log)."""
        what = f"{type(exc).__name__}: {exc}"
        last, logged_at, repeats = self._publisher_error
        now = time.monotonic()
        if what == last and now - logged_at < REPEAT_LOG_S:
            self._publisher_error = (last, logged_at, repeats + 1)
            return
        self._publisher_error = (what, now, 0)
        log.exception(
            "publisher error; retrying every 0.5 s%s",
            f" (it repeated {repeats} times since last logged)" if what == last else "",
        )

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
            self._unspooled.extend(self._messages_of(self._pending_rounds))
            self._pending_rounds, self._rounds_in_message = [], 0
        self.flush_to_spool()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline and self._connected:
            self._publish_once()
            if self.spool.depth == 0:
                break
            time.sleep(0.05)
        self._publish_once()
        self.stop_event.set()
        self._notify()
        self._close_spool()
        if self._connected:
            info = self.client.publish(self.status_topic, self._status(online=False), 1, True)
            info.wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
        self._connected = False
        self._write_local_status(online=False)
        for sensor in self.sensors:
            try:
                sensor.close()
            except Exception:
                log.exception("closing sensor %s failed", sensor.name)
        self.spool.close()

    def _close_spool(self) -> None:
        """Last writes before stopping: confirmed rows and counters, and what memory holds."""
        if self._unspooled:
            self.flush_to_spool()
        if self._unspooled:
            log.error(
                "stopping with %d message(s) (%d readings) that could not be spooled: the "
                "spool %s still cannot be written (%s); they are lost. Free space on %s",
                len(self._unspooled),
                sum(len(r) for r in self._unspooled),
                self.spool.path,
                self._spool_failure,
                mount_point(self.spool.path),
            )
        try:
            self.spool.flush()
        except SpoolError as exc:
            log.warning(
                "%s; %d confirmed message(s) stay spooled and are sent again at the next "
                "start (the collector ignores the duplicates)",
                exc,
                self.spool.confirmed_waiting,
            )

    def stop(self) -> None:
        self.stop_event.set()
