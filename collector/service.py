"""The collector process: MQTT 5 shared subscription in, verified data out, ack after durable.

paho's network thread only queues messages. One worker thread takes them in batches, hands a
batch to the :class:`~collector.ingest.Ingestor` and acks every message of the batch (manual
ack) only after the batch is in InfluxDB and committed to the store. The broker's Receive
Maximum bounds what is unacked, so while InfluxDB is down the backlog waits in the broker's
persistent session, not in our memory. Telegraf's ack-after-write tracking, with the log."""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from anchor.evidence import EvidenceLog, StoredCheckpoint
from anchor.logstore import MerkleLog
from anchor.service import anchor_views
from anchor.tiles import published_size, write_tiles
from anchor.witness import CosigningWorker, Witnesses
from collector.agronomy_hook import AgronomyHook
from collector.influx import InfluxUnavailable, PointWriter, make_writer
from collector.ingest import Incoming, Ingestor, Interrupted
from collector.metrics import start_metrics_server
from collector.mqtt_client import Delivery, IngestClient
from collector.points import Point
from collector.registry import Registry
from collector.seqranges import ReceivedRanges
from collector.status import StatusBoard
from collector.store import CollectorStore
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db
from fieldproof.formats.tiles import MAX_ENTRY_BYTES, TILE_WIDTH, TileError
from fieldproof.mqtt import make_client, receipts_topic
from fieldproof.wire import encode_receipt

log = logging.getLogger("fieldproof.collector")

SESSION_EXPIRY_S = 7 * 24 * 3600
#: after a failed tile write (a full disk), wait this long before the next try
TILES_RETRY_S = 30.0


def _first_untileable(log_: MerkleLog, start: int, size: int) -> tuple[int | None, int | None]:
    """Index and length of the first entry in ``[start, size)`` longer than an entry bundle
    can hold, read a tile's worth at a time (None, None if there is none)."""
    first = start - start % TILE_WIDTH
    for begin in range(first, size, TILE_WIDTH):
        for i, entry in enumerate(log_.entries(begin, min(size, begin + TILE_WIDTH))):
            if len(entry) > MAX_ENTRY_BYTES:
                return begin + i, len(entry)
    return None, None


def _close_after_failed_start(what: str, close: Callable[[], object]) -> None:
    """Close one thing a failed :class:`Collector` start had opened. A failure here is logged,
    not raised: it must not hide the error that failed the start."""
    try:
        close()
    except Exception as exc:
        log.warning("after the failed start, closing %s failed too: %s", what, exc)


class Collector:
    def __init__(self, config: CollectorConfig, writer: PointWriter | None = None) -> None:
        # all or nothing: when a step raises, what the steps before it opened is closed (in
        # reverse order) before the error goes on, so a retry in this process (a supervisor,
        # the demo, a test) finds the data directory unlocked; the garbage collector would not
        # help: closing the database connection is what releases the lock
        with contextlib.ExitStack() as opened:
            self.config = config
            self.db = open_db(config.db_path, lock=True)
            opened.callback(_close_after_failed_start, "the collector database", self.db.close)
            self.evidence = EvidenceLog.open(self.db, config.log_origin, config.log_key_file)
            self.registry = Registry(self.db, self.evidence)
            self.store = CollectorStore(
                self.db, self.evidence, config.quarantine_max_rows, config.quarantine_max_bytes
            )
            self.received = ReceivedRanges.load(self.db)
            self.writer = writer or make_writer(config.influx)
            if writer is None:  # a writer handed in stays its owner's to close
                opened.callback(_close_after_failed_start, "the InfluxDB writer", self.writer.close)
            self.stop_event = threading.Event()
            self.agronomy = AgronomyHook(config)
            opened.callback(_close_after_failed_start, "the agronomy state", self.agronomy.close)
            self.ingestor = Ingestor(
                self.store,
                self.registry,
                self.writer,
                topic_prefix=config.mqtt.topic_prefix,
                max_message_bytes=config.max_message_bytes,
                derive=self.agronomy,
                stop_event=self.stop_event,
            )
            self._last_checkpoint = time.monotonic()
            self.tiles_dir = config.data_dir / "tiles"
            self._tiles_size = published_size(self.tiles_dir)
            if self._tiles_size and not self._tiles_current():
                self._tiles_size = -1  # cosignatures stored before a crash: publish them
            self._tiles_failing = False
            self._tiles_retry_at = 0.0
            # the witnesses are asked from their own threads, through their own connection (a
            # shared one would commit the ingest thread's open transaction); public tiles are
            # written by the ingest thread and, for a cosigned note, by a witness thread: one
            # lock
            self._tiles_lock = threading.Lock()
            witness_db = open_db(config.db_path) if config.log.witnesses else self.db
            if witness_db is not self.db:
                opened.callback(
                    _close_after_failed_start, "the witnesses' connection", witness_db.close
                )
            self._witness_evidence = EvidenceLog(
                witness_db, self.evidence.origin, self.evidence.signer
            )
            self.witnesses = Witnesses(witness_db, self._witness_evidence, config.log.witnesses)
            opened.callback(
                _close_after_failed_start, "the witnesses' HTTP clients", self.witnesses.close
            )
            self.witness_worker = CosigningWorker(self.witnesses, self._publish_cosigned)
            # paho's network thread appends, the worker drains (deque appends/pops are atomic);
            # _wake tells the worker a batch has begun or is full
            self.inbox: deque[Delivery] = deque()
            self._wake = threading.Event()
            self.connected = threading.Event()
            self.status = StatusBoard(config.mqtt.topic_prefix, self.ingestor.devices.get)
            self._stats_failing = False  # log a failing stats write once, not every interval
            self.lag_s = 0.0
            self._interval_quarantine: Counter[str] = Counter()
            prefix = config.mqtt.topic_prefix
            self.readings_filter = f"$share/{config.share_group}/{prefix}/+/readings"
            self.status_filter = f"{prefix}/+/status"
            self.client = make_client(
                config.mqtt, config.collector_id, IngestClient, deliver=self._deliver
            )
            self.client.manual_ack_set(True)
            self.client.on_connect = self._on_connect
            self.client.on_disconnect = self._on_disconnect
            self.client.on_message = self._on_message
            self.client.on_subscribe = self._on_subscribe
            # read the anchor stores once now: the first read imports their modules (web3 for
            # an EVM store, ~1 s), which must not stall a batch at the first stats interval
            try:
                anchor_views(config)
            except sqlite3.Error as exc:
                log.debug("anchor stores not readable yet: %s", exc)
            self.presence_topic = f"{prefix}/_collector/{config.collector_id}/status"
            self.client.will_set(self.presence_topic, b'{"online": false}', 1, True)
            # last: a step above that fails must leave no witness thread running (nothing stops
            # them then); the threads wait for the first submit, so none is missed by starting
            # late; a start that fails stops the threads it started (CosigningWorker.start)
            self.witness_worker.start()
            opened.pop_all()  # started: from here run() closes all of it

    # ------------------------------------------------------------------ MQTT

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            log.error("broker refused the collector: %s", rc)
            return
        log.info("connected to broker (session present: %s)", flags.session_present)
        # status at QoS 0: retained, so the broker sends each gateway's latest again at every
        # (re)subscription; queueing them for an absent collector only crowds out readings
        client.subscribe([(self.readings_filter, 1), (self.status_filter, 0)])
        self.connected.set()

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        failed = [rc for rc in rcs if rc.is_failure]
        if failed:
            log.error("broker refused the subscription: %s (check the collector's ACL)", failed)
            return
        # Retained presence: tells operators (and the demo) this collector is subscribed.
        client.publish(self.presence_topic, b'{"online": true}', 1, True)

    def _on_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        self.connected.clear()
        if not self.stop_event.is_set():
            log.warning("lost broker connection (%s); reconnecting", rc)

    def _deliver(self, item: Delivery) -> None:
        inbox = self.inbox
        inbox.append(item)
        # wake the worker for the first message of a batch and when a batch is full
        if (len(inbox) == 1 or len(inbox) >= self.config.batch_max) and not self._wake.is_set():
            self._wake.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # what IngestClient leaves to paho (QoS 2, topic aliases) arrives here
        self._deliver(Delivery(msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.time()))

    def backlog(self) -> int:
        """Messages received and not yet taken into a batch."""
        return len(self.inbox)

    def _ack(self, items: list[Delivery]) -> None:
        self.client.ack_many([item.mid for item in items if item.qos == 1])
        for item in items:
            if item.qos == 2:
                self.client.ack(item.mid, item.qos)

    # ------------------------------------------------------------------ worker

    def _next_batch(self) -> list[Delivery]:
        """Up to ``batch_max`` messages: whatever has arrived, waiting at most
        ``batch_wait_ms`` after the first for the batch to fill."""
        inbox, limit = self.inbox, self.config.batch_max
        if not inbox and not self._wake.wait(0.2):
            return []
        deadline = time.monotonic() + self.config.batch_wait_ms / 1000
        while len(inbox) < limit:
            self._wake.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (len(inbox) < limit and not self._wake.wait(remaining)):
                break
        self._wake.clear()
        return [inbox.popleft() for _ in range(min(limit, len(inbox)))]

    def _process(self, batch: list[Delivery]) -> None:
        readings = [b for b in batch if b.topic.endswith("/readings")]
        self.status.take(
            (b.topic, b.payload, b.received_at) for b in batch if b.topic.endswith("/status")
        )
        delay = 0.5
        while readings:
            try:
                result = self.ingestor.process(
                    [Incoming(b.topic, b.payload, b.received_at) for b in readings]
                )
            except sqlite3.OperationalError as exc:
                log.error(
                    "cannot commit to %s: %s; holding acks and retrying "
                    "(free disk space if it is full)",
                    self.config.db_path,
                    exc,
                )
                if self.stop_event.wait(delay):
                    raise Interrupted("stopped while the store was failing") from None
                delay = min(delay * 2, 10.0)
                continue
            self.agronomy.commit()
            for gateway, seqs in result.confirmed.items():
                self.received.add(gateway, seqs)
            self._interval_quarantine.update(result.quarantined)
            self._send_receipts(result.confirmed)
            if result.newest_sample:
                self.lag_s = max(0.0, time.time() - result.newest_sample)
            break
        self._ack(batch)

    def _send_receipts(self, confirmed: dict[str, list[int]]) -> None:
        """Tell each gateway what is now durable so it can free its spool (and stop resending)."""
        prefix = self.config.mqtt.topic_prefix
        for gateway, seqs in confirmed.items():
            self.client.publish(
                receipts_topic(prefix, gateway), encode_receipt(self.config.collector_id, seqs), 1
            )

    def _worker(self) -> None:
        next_stats = time.monotonic() + self.config.stats_interval_s
        while not self.stop_event.is_set():
            batch = self._next_batch()
            if batch:
                try:
                    self._process(batch)
                except Interrupted as exc:
                    log.warning("%s", exc)
                    return
                except Exception:
                    # Unknown failure: do not ack (the broker redelivers), keep the loop alive.
                    log.exception(
                        "unexpected error processing a batch of %d; not acked", len(batch)
                    )
                    self.stop_event.wait(1.0)
            if time.monotonic() >= next_stats:
                self.write_stats()  # never raises: stats must not end ingestion
                next_stats = time.monotonic() + self.config.stats_interval_s
            self.maybe_checkpoint()

    def maybe_checkpoint(self, force: bool = False) -> None:
        """Sign a checkpoint every ``checkpoint_interval_s`` or ``checkpoint_every_entries``."""
        latest = self.evidence.latest()
        grown = self.evidence.log.size() - (latest.checkpoint.size if latest else 0)
        due = time.monotonic() - self._last_checkpoint >= self.config.log.checkpoint_interval_s
        if grown and (force or due or grown >= self.config.log.checkpoint_every_entries):
            try:
                cp = self.evidence.checkpoint()
            except sqlite3.OperationalError as exc:
                log.error("cannot store a checkpoint: %s; retrying later", exc)
                return
            self._last_checkpoint = time.monotonic()
            if cp is not None:
                log.info("checkpoint: log size %d", cp.checkpoint.size)
                latest = cp
        if latest is not None:
            self.witness_worker.submit(latest.checkpoint.size)  # never waits for a witness
        if (
            latest is not None
            and latest.checkpoint.size != self._tiles_size
            and time.monotonic() >= self._tiles_retry_at
        ):
            self.publish_tiles(latest)

    def publish_tiles(self, latest: StoredCheckpoint) -> None:
        """Bring the public tiles (``<data_dir>/tiles``, C2SP tlog-tiles) to the checkpoint
        ``latest``. A failure (a full disk) is logged once and retried at the next pass: the
        tiles are a copy of what the database holds, never a reason to stop ingesting."""
        size = latest.checkpoint.size
        with self._tiles_lock:
            # the note as stored now: a witness thread may have added cosignatures since
            row = self.db.execute("SELECT note FROM checkpoints WHERE size=?", (size,)).fetchone()
            note = latest.note if row is None else bytes(row[0])
            self._write_tiles(self.evidence.log, size, note)

    def _tiles_current(self) -> bool:
        """The public ``checkpoint`` file is the stored note of its size, byte for byte."""
        row = self.db.execute(
            "SELECT note FROM checkpoints WHERE size=?", (self._tiles_size,)
        ).fetchone()
        try:
            return row is not None and (self.tiles_dir / "checkpoint").read_bytes() == row[0]
        except OSError:
            return False

    def _publish_cosigned(self, size: int) -> None:
        """A witness thread added a cosignature to the note of ``size``: publish the note again
        if the tiles serve that size (a newer checkpoint gets its own cosignatures)."""
        with self._tiles_lock:
            note = self.witnesses.note_of(size)
            if note is not None and self._tiles_size == size:
                self._write_tiles(self._witness_evidence.log, size, note)

    def _write_tiles(self, log_: MerkleLog, size: int, note: bytes) -> None:
        """Hold ``_tiles_lock``; ``log_`` is read through the calling thread's connection.

        A :class:`~fieldproof.formats.tiles.TileError` is not a full disk: an entry longer than
        an entry bundle can hold (logged before entries were bounded) can never be tiled, so
        no checkpoint from it on can be published. That is said once, naming the entry, and
        not retried in this process; every other failure is retried."""
        try:
            written = write_tiles(log_, size, note, self.tiles_dir)
        except TileError as exc:
            if self._tiles_retry_at != math.inf:  # once: it is not tried again
                old = published_size(self.tiles_dir)
                index, length = _first_untileable(log_, old, size)
                what = str(exc) if index is None else f"log entry #{index} is {length} bytes"
                log.error(
                    "public tiles in %s cannot go past size %d: %s, and a tlog-tiles entry "
                    "bundle holds at most %d. It was logged before the collector bounded "
                    "entries and cannot be removed, so no checkpoint from it on can be "
                    "published as tiles: the tiles stay at size %d and a mirror ('fieldproof "
                    "log mirror') sees nothing newer. Ingestion, the database, checkpoints, "
                    "witnesses and anchoring go on; inspectors get 'fieldproof export' bundles "
                    "instead (a bundle holding this entry does not decode: readers take at "
                    "most %d bytes an entry). Not retried until the collector restarts",
                    self.tiles_dir,
                    old,
                    what,
                    MAX_ENTRY_BYTES,
                    old,
                    MAX_ENTRY_BYTES,
                )
            self._tiles_failing = True
            self._tiles_retry_at = math.inf  # the entry is in the log for good
            return
        except (OSError, ValueError) as exc:
            if not self._tiles_failing:
                log.error(
                    "public tiles in %s not updated: %s; the log itself is intact, retrying "
                    "at every checkpoint (free disk space if it is full)",
                    self.tiles_dir,
                    exc,
                )
            self._tiles_failing = True
            self._tiles_retry_at = time.monotonic() + TILES_RETRY_S
            return
        if self._tiles_failing:
            log.info("public tiles in %s are current again", self.tiles_dir)
        self._tiles_failing = False
        self._tiles_size = size
        log.debug("tiles: %d file(s) written for size %d", written, self._tiles_size)

    # ------------------------------------------------------------------ stats

    def stats_points(self) -> list[Point]:
        now_ns = time.time_ns()
        c = self.store.counters()
        quarantined = sum(v for k, v in c.items() if k.startswith("quarantined:"))
        cid = self.config.collector_id
        points = [
            Point(
                "collector_stats",
                {"collector": cid},
                {
                    "accepted": c.get("accepted", 0),
                    "duplicates": c.get("quarantined:replay", 0),
                    "quarantined": quarantined,
                    "gaps": self.received.gap_ranges,
                    "lag_s": float(self.lag_s),
                    "backlog": self.backlog(),
                },
                now_ns,
            )
        ]
        for reason, n in self._interval_quarantine.items():
            points.append(
                Point("quarantine", {"collector": cid, "reason": reason}, {"count": n}, now_ns)
            )
        points.extend(self.anchor_points(now_ns))
        points.extend(self.status.points(cid, now_ns))
        return points

    def anchor_points(self, now_ns: int) -> list[Point]:
        """Anchoring progress per chain: what the Integrity dashboard and the stalled-anchoring
        alert read. Read from the anchor stores the `anchor run` process keeps."""
        log_size = self.evidence.log.size()
        cid = self.config.collector_id
        try:
            views = anchor_views(self.config)
        except sqlite3.Error as exc:
            log.debug("anchor stores not readable: %s", exc)
            return []
        points = []
        for chain in sorted({v.chain for v in views}):
            mine = [v for v in views if v.chain == chain]
            final = [v for v in mine if v.state == "finalized"]
            newest_final = max((v.block_timestamp or 0 for v in final), default=0)
            points.append(
                Point(
                    "anchor_state",
                    {"collector": cid, "chain": chain},
                    {
                        "log_size": log_size,
                        "anchored_size": max(
                            (v.tree_size for v in mine if v.state != "failed"), default=0
                        ),
                        "finalized_size": max((v.tree_size for v in final), default=0),
                        "last_finalized_age_s": float(time.time() - newest_final)
                        if newest_final
                        else -1.0,
                        "pending": sum(1 for v in mine if v.state in ("pending", "included")),
                    },
                    now_ns,
                )
            )
        return points

    def write_stats(self) -> None:
        """Write the collector's own series. Never raises: the stats path is not allowed to
        end or stall ingestion (a failure is logged once, and again once it recovers)."""
        try:
            self.writer.write([p.to_line() for p in self.stats_points()])
            self._interval_quarantine.clear()
        except (InfluxUnavailable, ValueError) as exc:
            log.debug("stats not written: %s", exc)
            return
        except Exception:
            if not self._stats_failing:
                log.exception("collector stats not written; ingestion goes on")
            self._stats_failing = True
            return
        if self._stats_failing:
            log.info("collector stats written again")
        self._stats_failing = False

    # ------------------------------------------------------------------ life cycle

    def run(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = self.config.receive_maximum
        self.client.connect_async(
            self.config.mqtt.host,
            self.config.mqtt.port,
            self.config.mqtt.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self.client.loop_start()
        metrics = start_metrics_server(self)
        log.info("collector %s running; database %s", self.config.collector_id, self.config.db_path)
        try:
            self._worker()
            self.maybe_checkpoint(force=True)
        finally:
            if metrics is not None:
                metrics.stop()
            self.stop_witnesses()
            self.client.publish(self.presence_topic, b'{"online": false}', 1, True)
            self.client.disconnect()
            self.client.loop_stop()
            self.writer.close()
            self.agronomy.close()
            self.db.close()

    def stop(self) -> None:
        self.stop_event.set()

    def stop_witnesses(self) -> None:
        """Stop asking witnesses (a request in flight is abandoned, see CosigningWorker.stop)
        and close their database connection once no witness thread can use it."""
        self.witness_worker.stop()
        if self.witnesses.db is not self.db and not self.witness_worker.alive:
            self.witnesses.db.close()
