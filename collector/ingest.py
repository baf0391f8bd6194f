"""Turn a batch of received MQTT messages into durable data, or quarantine entries.

For each message: size, topic, claimed gateway, registry, signature, payload, topic/kid match,
(gateway, seq) dedupe. Then, for the whole batch: write the points to InfluxDB (retrying while
it is unavailable), commit log entries + dedupe rows + quarantine + counters in one SQLite
transaction, and only then report the batch as done so the caller can ack it to the broker.
Nothing here raises for a bad message; every outcome is counted.

Every quarantined message is a row and a counter; the log gets a summary instead
(:class:`QuarantineLog`), so a replay flood of thousands of messages is a few lines, not
thousands."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from collector.agronomy import DERIVED_MEASUREMENTS
from collector.enrollment import verify_with_key_history
from collector.influx import InfluxUnavailable, PointWriter, write_salvaging
from collector.points import Point, field_value, series_key
from collector.registry import Device, Registry
from collector.store import AcceptedRow, CollectorStore, QuarantineRow, message_digest
from fieldproof.config import MAX_LOGGABLE_MESSAGE_BYTES
from fieldproof.errors import ConfigError, FieldproofError
from fieldproof.mqtt import gateway_from_topic
from fieldproof.wire import (
    BadSignature,
    Payload,
    WireError,
    decode_message,
    open_message,
)

log = logging.getLogger("fieldproof.collector")

QUANTITY_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
#: measurement names the collector writes itself; a gateway may not use them as quantities
RESERVED_MEASUREMENTS = (
    frozenset({"gateway_status", "collector_stats", "quarantine", "anchor_state", "status_ignored"})
    | DERIVED_MEASUREMENTS
)
QUARANTINE_REASONS = (
    "oversized",
    "malformed",
    "unknown_gateway",
    "revoked",
    "bad_signature",
    "topic_mismatch",
    "replay",
    "seq_conflict",
    "internal_error",
)


@dataclass(slots=True)
class Incoming:
    topic: str
    payload: bytes
    received_at: float = field(default_factory=time.time)


@dataclass(slots=True)
class Verified:
    incoming: Incoming
    device: Device
    payload: Payload


@dataclass(slots=True)
class Rejected:
    incoming: Incoming
    gateway: str | None
    reason: str
    detail: str


@dataclass(slots=True)
class BatchResult:
    accepted: int = 0
    readings: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    influx_refused: int = 0
    #: newest sample time accepted in this batch, for lag
    newest_sample: float = 0.0
    #: per gateway, the sequence numbers now durably held (new or already held): the receipt
    confirmed: dict[str, list[int]] = field(default_factory=dict)


class RegistryCache:
    """In-memory view of the registry. A miss is looked up in the database at once (one
    primary-key read), so a gateway registered a moment ago is accepted from its first
    message. Every ``refresh_s`` it re-reads the devices changed since its last look (a
    revocation, a rotated key, new tags: :meth:`Registry.changes_since`), which costs what
    changed, not what exists — re-reading 100k devices every 5 s took 0.6 s of a core. A full
    reload every ``full_reload_s`` is the safety net."""

    def __init__(
        self, registry: Registry, refresh_s: float = 5.0, full_reload_s: float = 600.0
    ) -> None:
        self.registry = registry
        self.refresh_s = refresh_s
        self.full_reload_s = full_reload_s
        self._devices: dict[str, Device] = {}
        self._seen = 0  # change number up to which _devices is current
        self._loaded = 0.0
        self._full_loaded = 0.0
        self.reload()

    def reload(self) -> None:
        """Read every device. The change number is read first: a change committed while
        the devices are read has a higher number and is read again by the next refresh."""
        seen = self.registry.change_seq()
        self._devices = {d.gateway: d for d in self.registry.all()}
        self._seen = seen
        self._loaded = self._full_loaded = time.monotonic()

    def refresh(self) -> None:
        """Re-read only the devices changed since the last look."""
        self._seen, changed = self.registry.changes_since(self._seen)
        for gateway, device in changed:
            if device is None:
                self._devices.pop(gateway, None)
            else:
                self._devices[gateway] = device
        self._loaded = time.monotonic()

    def get(self, gateway: str) -> Device | None:
        now = time.monotonic()
        if now - self._full_loaded > self.full_reload_s:
            self.reload()
        elif now - self._loaded > self.refresh_s:
            self.refresh()
        device = self._devices.get(gateway)
        if device is None:
            device = self.registry.get(gateway)
            if device is not None:
                self._devices[gateway] = device
        return device


class QuarantineLog:
    """Quarantine WARNINGs an operator can read through a flood: per batch, one line per
    (reason, gateway) with the count and the first message's detail; at most one such line
    per (reason, gateway) per ``interval_s``. What is held back is counted and reported by
    the next line for that pair — or, if that pair goes quiet, by a line of its own once the
    interval is over. Rows and counters are not affected: they record every message."""

    #: (reason, gateway) pairs remembered; past it the quiet ones are forgotten
    MAX_TRACKED = 10_000

    def __init__(
        self,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        action: str = "quarantined",
        noun: str = "message",
    ) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.action = action  # what happened to them: "quarantined", "ignored"
        self.noun = noun  # what they are: "message", "status message"
        self._last: dict[tuple[str, str | None], float] = {}  # when a line was last logged
        self._held: dict[tuple[str, str | None], tuple[int, Rejected]] = {}  # not logged yet

    def report(self, rejected: Sequence[Rejected]) -> None:
        now = self.clock()
        batch: dict[tuple[str, str | None], tuple[int, Rejected]] = {}
        for r in rejected:
            key = (r.reason, r.gateway)
            n, first = batch.get(key, (0, r))
            batch[key] = (n + 1, first)
        for key, (n, first) in batch.items():
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                held, held_first = self._held.get(key, (0, first))
                self._held[key] = (held + n, held_first)
                continue
            held, _ = self._held.pop(key, (0, first))
            self._log(n, first, held, last, now)
            self._last[key] = now
        for key in [k for k in self._held if now - self._last[k] >= self.interval_s]:
            held, first = self._held.pop(key)
            self._log(0, first, held, self._last[key], now)
            self._last[key] = now
        if len(self._last) > self.MAX_TRACKED:
            self._last = {
                k: t for k, t in self._last.items() if k in self._held or now - t < self.interval_s
            }

    def _log(self, n: int, first: Rejected, held: int, last: float | None, now: float) -> None:
        source = first.gateway or f"topic {first.incoming.topic!r}"
        since = f"since the previous such line {now - last:.0f} s ago" if last is not None else ""
        what = f"{self.noun}(s)"
        if n:
            log.warning(
                "%s %d %s from %s as %s, first: %s%s",
                self.action,
                n,
                what,
                source,
                first.reason,
                first.detail,
                f"; {held} more were {self.action} {since}" if held else "",
            )
        else:
            log.warning(
                "%s %d more %s from %s as %s %s, first: %s",
                self.action,
                held,
                what,
                source,
                first.reason,
                since,
                first.detail,
            )


class Ingestor:
    def __init__(
        self,
        store: CollectorStore,
        registry: Registry,
        writer: PointWriter,
        *,
        topic_prefix: str = "fieldproof/v1",
        max_message_bytes: int = MAX_LOGGABLE_MESSAGE_BYTES,
        derive: Callable[[Device, Payload], list[Point]] | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        # an accepted message is its own log entry: past the entry bound it would be acked and
        # receipted, then stop the public tiles for good (fieldproof.config has the reason)
        if not 0 < max_message_bytes <= MAX_LOGGABLE_MESSAGE_BYTES:
            raise ConfigError(
                f"max_message_bytes = {max_message_bytes}: must be 1 to "
                f"{MAX_LOGGABLE_MESSAGE_BYTES}, the largest log entry tlog-tiles can publish"
            )
        self.store = store
        self.devices = RegistryCache(registry)
        self.writer = writer
        self.topic_prefix = topic_prefix
        self.max_message_bytes = max_message_bytes
        self.derive = derive
        self.stop_event = stop_event or threading.Event()
        self.influx_down_since: float | None = None
        self.quarantine_log = QuarantineLog()
        self._series_keys: dict[tuple[str, str, str, str], tuple[Device, str]] = {}

    # ------------------------------------------------------------------ per message

    def check(self, msg: Incoming) -> Verified | Rejected:
        """Everything that can be decided about one message on its own."""
        if len(msg.payload) > self.max_message_bytes:
            return Rejected(
                msg,
                None,
                "oversized",
                f"{len(msg.payload)} bytes; limit {self.max_message_bytes} (max_message_bytes)",
            )
        parsed_topic = gateway_from_topic(self.topic_prefix, msg.topic)
        if parsed_topic is None or parsed_topic[1] != "readings":
            return Rejected(msg, None, "topic_mismatch", f"not a readings topic: {msg.topic!r}")
        topic_gateway = parsed_topic[0]
        try:
            kid, parsed = open_message(msg.payload)
        except WireError as exc:
            return Rejected(msg, topic_gateway, "malformed", str(exc))
        if kid != topic_gateway:
            return Rejected(
                msg,
                topic_gateway,
                "topic_mismatch",
                f"signed as {kid!r} but published on {topic_gateway!r}'s topic",
            )
        device = self.devices.get(kid)
        if device is None:
            return Rejected(
                msg,
                kid,
                "unknown_gateway",
                f"{kid} is not registered; register it with 'fieldproof collector devices add'",
            )
        if not device.active:
            return Rejected(msg, kid, "revoked", f"{kid} was revoked")
        try:
            payload = decode_message(msg.payload, device.public_key, parsed)
        except BadSignature as exc:
            # maybe signed before a key rotation by the key valid at that seq
            older = verify_with_key_history(self.devices.registry, msg.payload, kid)
            if older is None:
                return Rejected(msg, kid, "bad_signature", str(exc))
            payload = older
        except WireError as exc:
            return Rejected(msg, kid, "malformed", str(exc))
        for r in payload.readings:
            if not QUANTITY_RE.match(r.quantity) or r.quantity in RESERVED_MEASUREMENTS:
                return Rejected(msg, kid, "malformed", f"quantity name {r.quantity!r} not allowed")
        return Verified(msg, device, payload)

    def _series(self, d: Device, quantity: str, sensor: str, unit: str) -> str:
        """The escaped series key of one sensor's quantity, cached per device object (the
        registry cache makes new objects when a device changes, which refreshes this)."""
        key = (d.gateway, quantity, sensor, unit)
        hit = self._series_keys.get(key)
        if hit is not None and hit[0] is d:
            return hit[1]
        if len(self._series_keys) > 200_000:
            self._series_keys.clear()
        tags = {
            "farm": d.farm,
            "field": d.field,
            "gateway": d.gateway,
            "sensor": sensor,
            "unit": unit,
            **d.sensor_meta.get(sensor, {}),
        }
        series = series_key(quantity, tags)
        self._series_keys[key] = (d, series)
        return series

    def lines(self, v: Verified) -> list[str]:
        """Line protocol for a verified message: one point per reading (fields ``seq`` and
        ``value`` or ``missing``), then the derived agronomy series."""
        d, p = v.device, v.payload
        seq = f" seq={p.seq}i,"
        out = []
        for r in p.readings:
            series = self._series(d, r.quantity, r.sensor, r.unit)
            if r.value is None:
                value = f"missing={field_value(r.missing_reason)}"
            else:
                value = f"value={r.value!r}"
            out.append(f"{series}{seq}{value} {round(r.time * 1e9)}")
        if self.derive is not None:
            try:
                out.extend(pt.to_line() for pt in self.derive(d, p))
            except Exception:  # derived series are a convenience, never a reason to stall
                log.exception("deriving agronomy series failed for %s seq %d", d.gateway, p.seq)
        return out

    # ------------------------------------------------------------------ per batch

    def process(self, batch: Sequence[Incoming]) -> BatchResult:
        """Make a batch durable. Returns once InfluxDB and the store both have it; blocks
        (retrying) while InfluxDB is unavailable, returns early only if stopped — then the
        batch is NOT done and must not be acked."""
        result = BatchResult()
        verified: list[Verified] = []
        rejected: list[Rejected] = []
        for msg in batch:
            try:
                outcome = self.check(msg)
            except Exception as exc:  # one unforeseen message must not stall every gateway
                log.exception("checking a message on %s failed", msg.topic)
                outcome = Rejected(msg, None, "internal_error", f"{type(exc).__name__}: {exc}")
            if isinstance(outcome, Verified):
                verified.append(outcome)
            else:
                rejected.append(outcome)

        # dedupe within the batch and against what is already accepted
        stored = self.store.digests((v.payload.gateway, v.payload.seq) for v in verified)
        seen: dict[tuple[str, int], bytes] = {}
        fresh: list[Verified] = []
        for v in verified:
            key = (v.payload.gateway, v.payload.seq)
            digest = message_digest(v.incoming.payload)
            earlier = stored.get(key) or seen.get(key)
            result.confirmed.setdefault(key[0], []).append(key[1])
            if earlier is None:
                seen[key] = digest
                fresh.append(v)
            elif earlier == digest:
                rejected.append(
                    Rejected(
                        v.incoming,
                        key[0],
                        "replay",
                        f"seq {key[1]} already accepted with identical content "
                        "(a redelivery or a replay)",
                    )
                )
            else:
                rejected.append(
                    Rejected(
                        v.incoming,
                        key[0],
                        "seq_conflict",
                        f"seq {key[1]} already accepted with DIFFERENT content: "
                        "the gateway reused a sequence number",
                    )
                )

        lines: list[str] = []
        for v in list(fresh):
            try:
                lines.extend(self.lines(v))
            except Exception as exc:  # quarantine the message, keep the batch going
                log.exception(
                    "building points for %s seq %d failed", v.payload.gateway, v.payload.seq
                )
                fresh.remove(v)
                # not in the log, so no receipt: the gateway keeps it and resends later
                result.confirmed[v.payload.gateway].remove(v.payload.seq)
                rejected.append(
                    Rejected(
                        v.incoming,
                        v.payload.gateway,
                        "internal_error",
                        f"{type(exc).__name__}: {exc}",
                    )
                )
        if lines:
            refused = self._write_until_done(lines)
            if refused is None:
                raise Interrupted("stopped while InfluxDB was unavailable; batch not acked")
            result.influx_refused = refused

        counters: Counter[str] = Counter()
        for r in rejected:
            counters[f"quarantined:{r.reason}"] += 1
            result.quarantined[r.reason] += 1
        self.quarantine_log.report(rejected)  # also says what it held back, once it may
        counters["accepted"] = len(fresh)
        counters["influx_refused"] = result.influx_refused
        self.store.commit(
            [
                AcceptedRow(
                    v.payload.gateway,
                    v.payload.seq,
                    v.payload.boot,
                    len(v.payload.readings),
                    v.incoming.payload,
                )
                for v in fresh
            ],
            [
                QuarantineRow(
                    r.incoming.topic,
                    r.gateway,
                    r.reason,
                    r.detail,
                    r.incoming.payload[: self.max_message_bytes],
                )
                for r in rejected
            ],
            dict(counters),
        )
        result.accepted = len(fresh)
        result.readings = sum(len(v.payload.readings) for v in fresh)
        if fresh:
            result.newest_sample = max(r.time for v in fresh for r in v.payload.readings)
        return result

    def _write_until_done(self, lines: list[str]) -> int | None:
        delay = 0.2
        while True:
            try:
                refused = write_salvaging(self.writer, lines)
                if self.influx_down_since is not None:
                    log.info(
                        "InfluxDB is back after %.0f s; catching up",
                        time.monotonic() - self.influx_down_since,
                    )
                    self.influx_down_since = None
                return refused
            except InfluxUnavailable as exc:
                if self.influx_down_since is None:
                    self.influx_down_since = time.monotonic()
                    log.error("%s; holding acks and retrying (nothing is lost)", exc)
                if self.stop_event.wait(delay):
                    return None
                delay = min(delay * 2, 5.0)


class Interrupted(FieldproofError):
    """The collector is stopping in the middle of a batch; the broker will redeliver it."""
