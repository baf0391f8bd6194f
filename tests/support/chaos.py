"""The one-bad-gateway rig (issue 13, "Beyond the list"): the shipped broker configuration
(TLS, ACL, identity as username and client id, queue bounds) with certificates from the
project's CA, a real collector process, honest gateway processes enrolled the way a
technician enrolls them, and one hostile gateway holding a valid certificate of its own that
runs every attack of the issue while they work. Shared by the chaos test and its benchmark."""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import paho.mqtt.client as paho
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.reasoncodes import ReasonCode

from anchor.evidence import EvidenceLog
from collector.broker import SecureMosquitto
from collector.enrollment import EndpointLimits, EnrollmentServer, start_enrollment_server
from collector.security_cli import ca_collector_cert_command
from collector.store import CollectorStore
from demo import spool_counts
from fieldproof import wire
from fieldproof.config import MqttConfig
from fieldproof.datadir import open_db
from fieldproof.formats.enrollment import MAX_REQUEST_BYTES
from fieldproof.formats.message import open_message
from fieldproof.keys import load_key_file
from fieldproof.mqtt import make_client
from fieldproof.services import InfluxDB
from fieldproof.tls import new_tls_key
from fieldproof.wire import WireError
from gateway.config import GatewayConfig, load_gateway_config
from tests.support.enrollment import (
    Site,
    enroll_by_file,
    forge_request,
    invoke,
    make_gateway,
    ok,
    start_site_broker,
)
from tests.support.stack import spawn, terminate, wait_holds_spooled, wait_until

PREFIX = "fieldproof/v1"
COLLECTOR_ID = "collector-1"  # tests/support/enrollment.py's site
WAIT_S = 30.0  # upper bound for one broker round trip; never a pass condition

#: retained status payloads and the reason the collector must count each under
POISONED_STATUS: list[tuple[bytes, str]] = [
    (b'{"online": true, "spool_depth": []}', "bad_field"),
    (b'{"online": true, "uptime_s": {}}', "bad_field"),
    (b'{"online": true, "uptime_s": 1e400}', "bad_field"),
    (b'{"online": true, "version": "\\u001b]0;owned\\u0007"}', "bad_field"),
    (b"[" * 2000, "invalid_json"),
    (b"\xff" * 10, "invalid_json"),
    (b'{"online": true, "x": "' + b"A" * 20_000 + b'"}', "too_large"),
]

#: the collector's per-message bound (collector.ingest.Ingestor.max_message_bytes)
COLLECTOR_MESSAGE_LIMIT = wire.MAX_MESSAGE_BYTES
#: a CBOR array nested this deep, under the collector's size bound
NESTING_DEPTH = 60_000
#: copies of each replayed and each conflicting message per round
FLOOD = 3
#: a client-id takeover attempt every this many rounds
TAKEOVER_EVERY = 8


@dataclass
class Gateway:
    gateway_id: str
    config_path: Path
    config: GatewayConfig
    proc: subprocess.Popen[bytes] | None = None

    @property
    def spool_path(self) -> Path:
        return self.config.spool_path


@dataclass
class ChaosSite:
    """Everything but the attacker: started by :func:`start_site`, ended by :meth:`close`."""

    root: Path
    site: Site
    influx: InfluxDB
    broker: SecureMosquitto
    honest: list[Gateway]
    hostile: Gateway
    collector: subprocess.Popen[bytes] | None = None
    logs: Path = field(init=False)

    def __post_init__(self) -> None:
        self.logs = self.root / "logs"
        self.logs.mkdir(exist_ok=True)

    # ---------------------------------------------------------------- processes

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        return spawn(args, self.logs / log_name)

    def start_collector(self) -> None:
        self.collector = self._spawn(
            ["collector", "run", "--config", str(self.site.collector_config)], "collector.log"
        )
        wait_until(self._collector_present, 60, f"collector presence:\n{self.log('collector.log')}")

    def _collector_present(self) -> bool:
        seen: list[bytes] = []
        client = make_client(self.honest[0].config.mqtt, "presence-probe", paho.Client)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            f"{PREFIX}/_collector/{COLLECTOR_ID}/status", 1
        )
        client.on_message = lambda c, u, m: seen.append(bytes(m.payload))
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not seen:
                time.sleep(0.05)
            return any(b'"online": true' in p for p in seen)
        finally:
            client.disconnect()
            client.loop_stop()

    def start_gateways(self) -> None:
        for g in self.honest:
            g.proc = self._spawn(["gateway", "run", "--config", str(g.config_path)],
                                 f"{g.gateway_id}.log")  # fmt: skip

    def stop_gateways(self) -> None:
        """SIGTERM: a gateway drains its spool (waits for receipts) before it exits."""
        terminate([g.proc for g in self.honest], 60)

    def wait_holds_spooled(self, timeout: float = 180) -> None:
        """With the honest gateways running, wait until the collector holds everything they
        have spooled so far: a collector behind after an attack (or a message the broker
        dropped, resent after the confirm timeout) would otherwise outlast a stopping
        gateway's drain, and the message would stay spooled."""
        wait_holds_spooled(
            [(g.gateway_id, g.spool_path) for g in self.honest],
            self.site.cfg.db_path,
            timeout,
            lambda: self.log("collector.log"),
        )

    def close(self) -> None:
        terminate([*(g.proc for g in self.honest), self.collector], 30)
        self.broker.stop()
        self.influx.stop()

    # ---------------------------------------------------------------- observations

    def log(self, name: str) -> str:
        path = self.logs / name
        return path.read_text(errors="replace") if path.exists() else ""

    def store(self) -> CollectorStore:
        return CollectorStore(open_db(self.site.cfg.db_path))

    def stored_readings(self, gateways: list[str]) -> int:
        """Readings the collector has accepted from ``gateways`` (its database)."""
        store = self.store()
        try:
            marks = ",".join("?" * len(gateways))
            row = store.db.execute(
                f"SELECT coalesce(sum(readings), 0) FROM received WHERE gateway IN ({marks})",
                gateways,
            ).fetchone()
        finally:
            store.db.close()
        return int(row[0])

    def quarantine_by_gateway(self) -> dict[str, Counter[str]]:
        """Quarantined messages by the gateway their topic names, by reason (every row is kept:
        the rig stays far below the quarantine's bounds)."""
        store = self.store()
        try:
            rows = store.db.execute("SELECT topic, reason FROM quarantine").fetchall()
        finally:
            store.db.close()
        out: dict[str, Counter[str]] = {}
        for topic, reason in rows:
            gw = str(topic).split("/")[2] if str(topic).startswith(PREFIX + "/") else str(topic)
            out.setdefault(gw, Counter())[str(reason)] += 1
        return out

    def log_entries_by_gateway(self) -> Counter[str]:
        """Message entries of the evidence log by the gateway that signed them, and how many
        entries are byte-identical copies of another (must be none)."""
        db = open_db(self.site.cfg.db_path)
        try:
            log = EvidenceLog.open(db, self.site.cfg.log_origin, key_file=None)
            entries = log.store.entries(0, log.store.size())
        finally:
            db.close()
        out: Counter[str] = Counter()
        copies = Counter(entries)
        out["(duplicate entries)"] = sum(n - 1 for n in copies.values())
        for entry in entries:
            try:
                kid, _ = open_message(entry)
            except WireError:  # registry events are not messages
                continue
            out[kid] += 1
        return out

    def status_ignored(self) -> dict[str, int]:
        """The newest ``status_ignored`` totals the collector wrote to InfluxDB, by reason."""
        r = httpx.get(
            f"{self.influx.url}/query",
            params={"db": self.site.cfg.influx.database,
                    "q": 'SELECT last("total") FROM status_ignored GROUP BY reason'},
            timeout=10,
        )  # fmt: skip
        r.raise_for_status()
        return {
            s["tags"]["reason"]: int(s["values"][0][1])
            for s in r.json()["results"][0].get("series", [])
        }

    def spools(self) -> dict[str, tuple[int, int, int]]:
        """(published readings, messages still spooled, dropped) per honest gateway."""
        return {g.gateway_id: spool_counts(g.spool_path) for g in self.honest}


def start_site(root: Path, honest_gateways: int, interval_s: float | None = None) -> ChaosSite:
    """InfluxDB, the shipped broker on a free port, the collector's certificate, the honest
    gateways and the hostile one enrolled through the operator's approval (offline path).
    ``interval_s``: the honest gateways' reading interval (default: the enrollment rig's)."""
    influx = InfluxDB(root / "influxdb")
    influx.start()
    site, broker = start_site_broker(root, influx.url, (COLLECTOR_ID,))
    port = broker.port
    ok(invoke(ca_collector_cert_command, "--config", str(site.collector_config)))
    gateways = []
    for i in range(honest_gateways + 1):
        path, cfg = make_gateway(root / "gateways", f"gw{i}", mqtt_port=port)
        if interval_s is not None:
            text = path.read_text()
            path.write_text(re.sub(r"(?m)^interval_s = .*$", f"interval_s = {interval_s}", text))
            cfg = load_gateway_config(path)
        gateways.append(Gateway(enroll_by_file(site, path), path, cfg))
    return ChaosSite(root, site, influx, broker, gateways[:-1], gateways[-1])


# ------------------------------------------------------------------------------------------
# the hostile gateway
# ------------------------------------------------------------------------------------------


class _Connection:
    """One MQTT connection of the hostile gateway (its own certificate; the client id it asks
    for is ``client_id``, the broker gives it its CN instead). Never reconnects by itself."""

    def __init__(self, mqtt: MqttConfig, port: int, client_id: str) -> None:
        self.client = make_client(mqtt, client_id, paho.Client, reconnect_on_failure=False)
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.disconnected = False
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        with self.cond:
            self.cond.wait_for(lambda: self.connack is not None or self.disconnected, WAIT_S)
        if self.connack is None or self.connack.is_failure:
            self.close()
            raise AssertionError(
                f"hostile gateway could not connect as {client_id}: {self.connack}"
            )

    def _on_connect(self, c: paho.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def _on_disconnect(self, c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
        with self.cond:
            self.disconnected = True
            self.cond.notify_all()

    def wait_disconnected(self) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.disconnected, WAIT_S)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """QoS 1, waiting for the broker's PUBACK: once it returns, the collector's persistent
        session holds the message, so every count below is exact."""
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(WAIT_S)
        if not info.is_published():
            raise AssertionError(f"the broker did not acknowledge a publish on {topic}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class HostileGateway:
    """An enrolled gateway turned hostile: valid certificate and signing key, every attack.

    ``quarantined`` is what the collector must quarantine because of it, by reason;
    ``status_ignored`` the status messages it must ignore, by reason; ``accepted`` its own
    valid messages (needed to replay and to conflict with)."""

    gateway: Gateway
    port: int
    honest_ids: list[str]
    quarantined: Counter[str] = field(default_factory=Counter)
    status_ignored: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    takeovers: Counter[str] = field(default_factory=Counter)
    rounds: int = 0

    def __post_init__(self) -> None:
        self.key: Ed25519PrivateKey = load_key_file(self.gateway.config.key_file)
        self.gw = self.gateway.gateway_id
        self.readings_topic = f"{PREFIX}/{self.gw}/readings"
        self.status_topic = f"{PREFIX}/{self.gw}/status"
        self.rng = random.Random(13)
        self.seq = 1_000_000  # far from what a real gateway of this id would use
        self.conn = self._connect(f"{self.gw}-attacker")

    def _connect(self, client_id: str) -> _Connection:
        return _Connection(self.gateway.config.mqtt, self.port, client_id)

    def _message(self, seq: int, value: float) -> bytes:
        reading = wire.Reading("soil", "soil_moisture", "/", value, time.time())
        return wire.encode_message(wire.Payload(self.gw, seq, 1, (reading,)), self.key)

    def attack_round(self) -> None:
        """One of everything, in an order the counts do not depend on."""
        i = self.rounds
        self.rounds += 1
        self.seq += 1
        original = self._message(self.seq, 0.25)
        self.conn.publish(self.readings_topic, original)
        self.accepted += 1
        for _ in range(FLOOD):  # replay flood: the same bytes again
            self.conn.publish(self.readings_topic, original)
            self.quarantined["replay"] += 1
        for k in range(FLOOD):  # the same seq, signed with different content
            self.conn.publish(self.readings_topic, self._message(self.seq, 0.5 + k))
            self.quarantined["seq_conflict"] += 1
        self.conn.publish(self.readings_topic, b"\x00" * (COLLECTOR_MESSAGE_LIMIT + 1 + i))
        self.quarantined["oversized"] += 1
        self.conn.publish(self.readings_topic, b"\x81" * NESTING_DEPTH + b"\xf6")
        self.quarantined["malformed"] += 1
        self.conn.publish(self.readings_topic, self.rng.randbytes(64 + i % 512))
        self.quarantined["malformed"] += 1
        status, reason = POISONED_STATUS[i % len(POISONED_STATUS)]
        self.conn.publish(self.status_topic, status, retain=True)
        self.status_ignored[reason] += 1
        if i % TAKEOVER_EVERY == 0:
            target = COLLECTOR_ID if (i // TAKEOVER_EVERY) % 2 == 0 else self.honest_ids[0]
            self.take_over(target)

    def take_over(self, client_id: str) -> None:
        """Connect asking for ``client_id``. The broker gives this certificate its own CN, so
        the only session taken over is the attacker's own attack connection, which then comes
        back. Nothing is in flight on it at that moment, so no count is lost."""
        attempt = self._connect(client_id)
        try:
            if not self.conn.wait_disconnected():
                raise AssertionError(
                    f"asking for client id {client_id!r} did not take over the hostile "
                    "gateway's own session: the broker did not map the id to the certificate"
                )
            self.takeovers[client_id] += 1
        finally:
            attempt.close()
        self.conn.close()
        self.conn = self._connect(f"{self.gw}-attacker")

    def close(self) -> None:
        self.conn.close()


# ------------------------------------------------------------------------------------------
# enrollment spam
# ------------------------------------------------------------------------------------------

#: the endpoint's refusal reason behind each HTTP status it answers with
REFUSAL_BY_STATUS = {429: "rate_limited", 403: "refused", 503: "pending_full", 413: "too_large"}


@dataclass
class EnrollmentSpammer:
    """Requests of every kind, one after the other, against the real endpoint: fresh valid
    ones (new keys), ones holding terminal escapes, garbage, and bodies over the bound.
    ``answers`` counts what came back by HTTP status."""

    url: str
    answers: Counter[int] = field(default_factory=Counter)
    sent: int = 0

    def one(self) -> None:
        kind = self.sent % 4
        self.sent += 1
        if kind == 0:
            body = forge_request(Ed25519PrivateKey.generate(), new_tls_key())
        elif kind == 1:
            body = forge_request(Ed25519PrivateKey.generate(), new_tls_key(),
                                 installer="\x1b]0;owned\x07\x1b[2J")  # fmt: skip
        elif kind == 2:
            body = random.Random(self.sent).randbytes(512)
        else:
            body = b"\x00" * (MAX_REQUEST_BYTES + 1)
        r = httpx.post(self.url + "/v1/enroll", content=body, timeout=60)
        self.answers[r.status_code] += 1


def start_endpoint(site: Site) -> tuple[EnrollmentServer, str]:
    """The enrollment endpoint with its shipped limits, on the collector's real database."""
    server = start_enrollment_server(site.enroller(), "127.0.0.1", 0, limits=EndpointLimits())
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run_until(stop: threading.Event, step: Callable[[], None], pause_s: float,
              errors: list[BaseException]) -> threading.Thread:  # fmt: skip
    """``step`` over and over in a thread until ``stop``; the first exception ends the thread
    and is kept in ``errors`` for the test to raise."""

    def loop() -> None:
        try:
            while not stop.is_set():
                step()
                stop.wait(pause_s)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@dataclass
class Attack:
    """One running attack (:func:`attack`): the hostile gateway, the enrollment spammer, the
    endpoint it spams, and what either thread raised (the first one is re-raised at the end)."""

    attacker: HostileGateway
    spammer: EnrollmentSpammer
    endpoint: EnrollmentServer
    errors: list[BaseException]


@contextmanager
def attack(
    site: ChaosSite, honest: list[str], round_pause_s: float, spam_pause_s: float
) -> Iterator[Attack]:
    """The hostile gateway's rounds and enrollment spam, each in its own thread, for as long as
    the ``with`` body runs; afterwards both stop, the endpoint shuts down and the first error
    either thread met is raised, so neither the test nor the benchmark can miss it."""
    attacker = HostileGateway(site.hostile, site.broker.port, honest)
    endpoint, url = start_endpoint(site.site)
    spammer = EnrollmentSpammer(url)
    stop = threading.Event()
    errors: list[BaseException] = []
    threads = [
        run_until(stop, attacker.attack_round, round_pause_s, errors),
        run_until(stop, spammer.one, spam_pause_s, errors),
    ]
    try:
        yield Attack(attacker, spammer, endpoint, errors)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        attacker.close()
        endpoint.shutdown()
        endpoint.server_close()
    if errors:
        raise errors[0]
