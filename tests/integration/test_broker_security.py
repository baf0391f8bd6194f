"""The shipped broker configuration, proven on a real Mosquitto 2.0 with certificates from our
CA: deploy/mosquitto/mosquitto.conf and acl.conf exactly as shipped (only port and paths moved).

Negative checks never wait for "nothing arrived within N seconds": after the forbidden message
the same client sends an allowed one on the same connection. Mosquitto handles one client's
packets in order, so once the allowed one has arrived, the forbidden one would already have
arrived if the broker had let it through.

Clients never reconnect by themselves here: every disconnection the broker causes is seen."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from collector.broker import (
    DEPLOY_CONF_DIR,
    TEMPLATE_DIR,
    SecureMosquitto,
    issue_local_client,
    provision_broker_certs,
    render_broker_config,
)
from collector.ca import CertificateAuthority
from fieldproof.config import MqttConfig, TlsConfig
from fieldproof.mqtt import make_client
from fieldproof.tls import make_csr, new_tls_key, write_private_key

pytestmark = pytest.mark.integration

PREFIX = "fieldproof/v1"
GW_A = "gw-00000000000000aa"
GW_B = "gw-00000000000000bb"
GW_C = "gw-00000000000000cc"
COLLECTOR = "collector-1"
WAIT = 20.0  # generous upper bound for an expected message; never a pass condition


@dataclass
class Pki:
    root: Path
    ca: CertificateAuthority
    certs: Path
    clients: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def mqtt(self, port: int, name: str | None) -> MqttConfig:
        tls = TlsConfig(ca_file=self.certs / "ca.pem")
        if name is not None:
            key, cert = self.clients[name]
            tls = TlsConfig(ca_file=self.certs / "ca.pem", cert_file=cert, key_file=key)
        return MqttConfig(host="127.0.0.1", port=port, tls=tls)


def make_pki(root: Path) -> Pki:
    ca = CertificateAuthority.create(root / "ca")
    certs = root / "broker" / "certs"
    provision_broker_certs(ca, certs, ["127.0.0.1", "localhost"])
    pki = Pki(root, ca, certs)
    for cn, kind in ((GW_A, "gateway"), (GW_B, "gateway"), (GW_C, "gateway")):
        key = new_tls_key()
        write_private_key(root / f"{cn}.key", key)
        cert = ca.issue_client(make_csr(key, cn), cn, kind)  # type: ignore[arg-type]
        (root / f"{cn}.pem").write_bytes(cert.public_bytes(Encoding.PEM))
        pki.clients[cn] = (root / f"{cn}.key", root / f"{cn}.pem")
    issue_local_client(
        ca, COLLECTOR, "collector", root / "c.key", root / "c.pem", root / "c-ca.pem"
    )
    pki.clients[COLLECTOR] = (root / "c.key", root / "c.pem")
    return pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(pki: Pki) -> Iterator[SecureMosquitto]:
    b = SecureMosquitto(pki.root / "mosquitto", pki.certs.parent, [COLLECTOR])
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Client:
    """A connected paho client that records what it receives and how the broker ended its
    connection. ``session_expiry`` > 0 with ``clean_start=False`` is a persistent session, as
    the collector keeps one; ``keep_bytes`` keeps only that much of each payload (floods)."""

    def __init__(
        self,
        pki: Pki,
        port: int,
        name: str,
        client_id: str | None = None,
        *,
        clean_start: bool = True,
        session_expiry: int = 0,
        keep_bytes: int | None = None,
    ) -> None:
        self.client = make_client(
            pki.mqtt(port, name),
            client_id or f"{name}-test",
            paho.Client,
            reconnect_on_failure=False,
        )
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.session_present: bool | None = None
        self.disconnects: list[ReasonCode] = []
        self.pubacks: list[ReasonCode] = []
        self.keep_bytes = keep_bytes
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self._subacks = 0
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry
        self.client.connect("127.0.0.1", port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        assert self.connack is not None and not self.connack.is_failure, self.connack

    def _on_connect(
        self, c: paho.Client, u: object, f: paho.ConnectFlags, rc: ReasonCode, p: object
    ) -> None:
        with self.cond:
            self.connack = rc
            self.session_present = f.session_present
            self.cond.notify_all()

    def _on_disconnect(
        self, c: paho.Client, u: object, f: object, rc: ReasonCode, p: object
    ) -> None:
        with self.cond:
            self.disconnects.append(rc)
            self.cond.notify_all()

    def _on_subscribe(self, c: paho.Client, u: object, mid: int, rcs: object, p: object) -> None:
        with self.cond:
            self._subacks += 1
            self.cond.notify_all()

    def _on_publish(self, c: paho.Client, u: object, mid: int, rc: ReasonCode, p: object) -> None:
        with self.cond:
            self.pubacks.append(rc)
            self.cond.notify_all()

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        payload = bytes(msg.payload[: self.keep_bytes])
        with self.cond:
            self.messages.append((msg.topic, payload))
            self.cond.notify_all()

    def wait(self, pred: Callable[[], bool], what: str) -> None:
        with self.cond:
            ok = self.cond.wait_for(pred, WAIT)
        assert ok, f"timed out waiting for {what}"

    def subscribe(self, *topics: str) -> None:
        before = self._subacks
        self.client.subscribe([(t, 1) for t in topics])
        self.wait(lambda: self._subacks > before, f"SUBACK for {topics}")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT)

    def received(self, payload: bytes, within: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(p == payload for _, p in self.messages), within)

    def wait_for(self, payload: bytes) -> list[tuple[str, bytes]]:
        self.wait(lambda: any(p == payload for _, p in self.messages), repr(payload))
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --------------------------------------------------------------------------------------------
# the configuration that runs is the one shipped
# --------------------------------------------------------------------------------------------


def test_running_config_is_the_shipped_one_with_only_port_and_paths_moved(
    broker: SecureMosquitto, pki: Pki
) -> None:
    shipped = (TEMPLATE_DIR / "mosquitto.conf").read_text().splitlines()
    running = broker.config_path.read_text().splitlines()
    changed = [(a, b) for a, b in zip(shipped, running, strict=False) if a != b]
    assert all(
        a.startswith(("listener ", "persistence_location ")) or DEPLOY_CONF_DIR in a
        for a, _ in changed
    ), changed
    extra = running[len(shipped) :]
    assert [line for line in extra if line.strip()] in ([], ["user root"])
    directives = [line.split()[0] for line in shipped if line.strip() and line[0] != "#"]
    assert directives.count("listener") == 1  # no plain-TCP listener next to the TLS one
    for required in (
        "allow_anonymous false",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "per_listener_settings false",
    ):
        assert required in shipped
    assert {"crlfile", "acl_file", "cafile", "certfile", "keyfile"} <= set(directives)


def test_render_refuses_a_second_listener() -> None:
    template = (TEMPLATE_DIR / "mosquitto.conf").read_text() + "\nlistener 1883\n"
    with pytest.raises(ValueError, match="exactly one listener"):
        render_broker_config(template, port=1, conf_dir=Path("/x"), data_dir=Path("/y"))


# --------------------------------------------------------------------------------------------
# what gateways may and may not do
# --------------------------------------------------------------------------------------------


def test_gateway_readings_and_status_reach_the_collector(broker: SecureMosquitto, pki: Pki) -> None:
    """The positive control for every negative test below."""
    col = Client(pki, broker.port, COLLECTOR)
    gw = Client(pki, broker.port, GW_A)
    try:
        col.subscribe(f"$share/fieldproof/{PREFIX}/+/readings", f"{PREFIX}/+/status")
        gw.publish(f"{PREFIX}/{GW_A}/readings", b"reading-1")
        gw.publish(f"{PREFIX}/{GW_A}/status", b'{"online": true}', retain=True)
        got = col.wait_for(b'{"online": true}')
        assert (f"{PREFIX}/{GW_A}/readings", b"reading-1") in got
    finally:
        gw.close()
        col.close()


def test_gateway_cannot_publish_as_another_gateway(broker: SecureMosquitto, pki: Pki) -> None:
    col = Client(pki, broker.port, COLLECTOR)
    attacker = Client(pki, broker.port, GW_A)
    try:
        col.subscribe(f"$share/fieldproof/{PREFIX}/+/readings", f"{PREFIX}/+/status")
        attacker.publish(f"{PREFIX}/{GW_B}/readings", b"forged-reading")
        attacker.publish(f"{PREFIX}/{GW_B}/status", b"forged-status")
        attacker.publish(f"{PREFIX}/{GW_A}/readings", b"sentinel-own")
        got = col.wait_for(b"sentinel-own")
        assert all(GW_B not in topic for topic, _ in got), got
        assert b"forged-reading" not in [p for _, p in got]
    finally:
        attacker.close()
        col.close()


def test_only_collectors_publish_receipts(broker: SecureMosquitto, pki: Pki) -> None:
    """A forged receipt would make a gateway delete readings no collector holds."""
    col = Client(pki, broker.port, COLLECTOR)
    victim = Client(pki, broker.port, GW_B)
    attacker = Client(pki, broker.port, GW_A)
    try:
        victim.subscribe(f"{PREFIX}/{GW_B}/receipts")
        attacker.subscribe(f"{PREFIX}/{GW_A}/receipts")
        attacker.publish(f"{PREFIX}/{GW_B}/receipts", b"forged-for-b")
        attacker.publish(f"{PREFIX}/{GW_A}/receipts", b"forged-for-self")
        col.publish(f"{PREFIX}/{GW_B}/receipts", b"real-for-b")
        col.publish(f"{PREFIX}/{GW_A}/receipts", b"real-for-a")
        assert [p for _, p in victim.wait_for(b"real-for-b")] == [b"real-for-b"]
        assert [p for _, p in attacker.wait_for(b"real-for-a")] == [b"real-for-a"]
    finally:
        attacker.close()
        victim.close()
        col.close()


def test_gateway_reads_only_its_own_receipts(broker: SecureMosquitto, pki: Pki) -> None:
    col = Client(pki, broker.port, COLLECTOR)
    snoop = Client(pki, broker.port, GW_A)
    try:
        snoop.subscribe(
            f"{PREFIX}/{GW_B}/receipts", f"{PREFIX}/+/readings", f"{PREFIX}/{GW_A}/receipts"
        )
        col.publish(f"{PREFIX}/{GW_B}/receipts", b"for-b")
        col.publish(f"{PREFIX}/{GW_A}/receipts", b"for-a")
        assert [p for _, p in snoop.wait_for(b"for-a")] == [b"for-a"]
    finally:
        snoop.close()
        col.close()


def test_gateway_cannot_pose_as_a_collector(broker: SecureMosquitto, pki: Pki) -> None:
    """A fake 'collector online' would make gateways resend into the void."""
    col = Client(pki, broker.port, COLLECTOR)
    watcher = Client(pki, broker.port, GW_B)
    attacker = Client(pki, broker.port, GW_A)
    try:
        watcher.subscribe(f"{PREFIX}/_collector/+/status")
        attacker.publish(f"{PREFIX}/_collector/{COLLECTOR}/status", b"fake-online")
        attacker.publish(f"{PREFIX}/_collector/evil/status", b"fake-evil")
        col.publish(f"{PREFIX}/_collector/{COLLECTOR}/status", b"real-presence")
        assert [p for _, p in watcher.wait_for(b"real-presence")] == [b"real-presence"]
    finally:
        attacker.close()
        watcher.close()
        col.close()


def test_collector_cannot_write_gateway_status(broker: SecureMosquitto, pki: Pki) -> None:
    col = Client(pki, broker.port, COLLECTOR)
    gw = Client(pki, broker.port, GW_B)
    try:
        col.subscribe(f"{PREFIX}/+/status")
        gw.subscribe(f"{PREFIX}/{GW_B}/receipts")
        col.publish(f"{PREFIX}/{GW_B}/status", b"collector-wrote-status")
        col.publish(f"{PREFIX}/{GW_B}/receipts", b"receipt")
        gw.wait_for(b"receipt")
        gw.publish(f"{PREFIX}/{GW_B}/status", b"gateway-status")
        got = col.wait_for(b"gateway-status")
        assert b"collector-wrote-status" not in [p for _, p in got]
    finally:
        gw.close()
        col.close()


# --------------------------------------------------------------------------------------------
# client ids belong to certificates; queues are bounded
# --------------------------------------------------------------------------------------------

SESSION_EXPIRY = 3600
READINGS = f"$share/fieldproof/{PREFIX}/+/readings"  # as the collector subscribes


def persistent_collector(port: int, pki: Pki, **kw: int) -> Client:
    """The collector as it connects: clean_start False and a session that outlives it."""
    return Client(
        pki, port, COLLECTOR, COLLECTOR, clean_start=False, session_expiry=SESSION_EXPIRY, **kw
    )


def end_session(port: int, pki: Pki, name: str) -> None:
    """Connect with a clean start and no session expiry: the broker forgets ``name``'s session."""
    Client(pki, port, name).close()


def test_a_gateway_cannot_take_over_the_collectors_client_id(
    broker: SecureMosquitto, pki: Pki
) -> None:
    """A gateway asking for client id 'collector-1' gets its CN instead: the collector stays
    connected and its persistent session (subscription, queued readings) survives, whether
    the collector is connected or away when the gateway tries."""
    col = persistent_collector(broker.port, pki)
    own = Client(pki, broker.port, GW_A)  # GW_A's own session: its client id is its CN
    attacker: Client | None = None
    try:
        col.subscribe(READINGS)
        attacker = Client(pki, broker.port, GW_A, COLLECTOR)  # clean_start True
        # the broker gave the attacker GW_A's client id: it took over GW_A's own session
        # (Mosquitto 2.0.11 just closes the old connection, without MQTT 5's DISCONNECT
        # "Session taken over")...
        own.wait(lambda: bool(own.disconnects), "GW_A's first session to be taken over")
        assert len(own.disconnects) == 1, own.disconnects
        # ...and not the collector's, which still receives, on the same connection
        attacker.publish(f"{PREFIX}/{GW_A}/readings", b"after-the-attack")
        col.wait_for(b"after-the-attack")
        assert col.disconnects == [], col.disconnects
        attacker.close()

        # the collector goes away without ending its session; another gateway tries while
        # it is away (a clean start on 'collector-1' would delete the session)
        col.close()
        attacker = Client(pki, broker.port, GW_B, COLLECTOR)
        attacker.publish(f"{PREFIX}/{GW_B}/readings", b"queued-while-away")
        attacker.close()
        col = persistent_collector(broker.port, pki)
        assert col.session_present is True
        got = col.wait_for(b"queued-while-away")
        assert (f"{PREFIX}/{GW_B}/readings", b"queued-while-away") in got
        assert col.disconnects == [], col.disconnects
    finally:
        if attacker is not None:
            attacker.close()
        own.close()
        col.close()
        end_session(broker.port, pki, COLLECTOR)


def _shipped_value(directive: str) -> int:
    conf = (TEMPLATE_DIR / "mosquitto.conf").read_text().splitlines()
    values = [line.split()[1] for line in conf if line.split()[:1] == [directive]]
    assert len(values) == 1, f"{directive} must be set exactly once: {values}"
    return int(values[0])


#: Mosquitto 2.0.11's own memory per queued message beyond its payload (store entry, topic,
#: client id and username, queue entry, allocator): ~420 bytes measured (broker RSS growth
#: while 30,000 readings of 20 or 300 bytes queued for the offline collector, TLS, real topics)
PER_MESSAGE_OVERHEAD = 450


def test_queue_bounds_fit_in_the_memory_limit() -> None:
    """The static half of the queue bound: an offline collector's queue at its worst fits twice
    in memory_limit (at the limit the broker disconnects clients, collectors included), and
    honest messages (<= ~500 bytes) reach the message bound before the byte bound."""
    messages = _shipped_value("max_queued_messages")
    queued_bytes = _shipped_value("max_queued_bytes")
    limit = _shipped_value("memory_limit")
    packet = _shipped_value("max_packet_size")
    assert messages > 0 and queued_bytes > 0 and limit > 0
    assert queued_bytes >= messages * 500
    assert queued_bytes < messages * packet // 100  # bounds what max-size packets can pile up
    worst_queue = queued_bytes + messages * PER_MESSAGE_OVERHEAD
    assert limit >= 2 * worst_queue


def _proc_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


#: the largest payload a packet of max_packet_size carries on a readings topic, rounded down
FLOOD_PAYLOAD = 128_000


def test_a_flooding_gateway_fills_only_a_bounded_queue(pki: Pki, tmp_path: Path) -> None:
    """With the collector away, one gateway publishes more than max_queued_bytes in max-size
    QoS 1 messages. The broker (shipped config, its own instance to measure its memory) keeps
    the oldest messages up to the bound, drops the rest, and its memory stays near the bound;
    the collector gets the bound's worth back and an honest gateway gets through afterwards.
    A dropped reading is not lost: its gateway resends it until a collector's receipt."""
    bound = _shipped_value("max_queued_bytes")
    n_flood = bound * 5 // 4 // FLOOD_PAYLOAD + 1
    b = SecureMosquitto(tmp_path / "mosquitto", pki.certs.parent, [COLLECTOR])
    b.start()
    try:
        assert b.proc is not None
        pid = b.proc.pid
        col = persistent_collector(b.port, pki)
        col.subscribe(READINGS)
        col.close()
        rss_before = _proc_kib(pid, "VmRSS")

        flooder = Client(pki, b.port, GW_A)
        topic = f"{PREFIX}/{GW_A}/readings"
        pad = b"x" * FLOOD_PAYLOAD
        started = time.monotonic()
        for first in range(0, n_flood, 100):
            infos = [
                flooder.client.publish(topic, b"flood %06d " % i + pad[12:], qos=1)
                for i in range(first, min(first + 100, n_flood))
            ]
            infos[-1].wait_for_publish(WAIT)
        flooder.wait(lambda: len(flooder.pubacks) == n_flood, "every flood PUBACK")
        flood_s = time.monotonic() - started
        # Mosquitto drops over the bound silently: the flooder is neither told nor cut off
        assert flooder.disconnects == [], flooder.disconnects
        flooder.close()
        assert b.running
        peak = _proc_kib(pid, "VmHWM")
        growth = (peak - rss_before) * 1024
        # the broker holds the bound's worth of payloads, and not much more
        assert bound * 0.9 < growth < bound * 1.1 + 32 * 2**20, (growth, bound)

        col = persistent_collector(b.port, pki, keep_bytes=12)
        assert col.session_present is True
        honest = Client(pki, b.port, GW_B)
        # a gateway resends until a collector has it; the broker drops it while the
        # collector's queue is still full, and delivers it behind what the queue kept
        for _ in range(int(WAIT / 0.2)):
            honest.publish(f"{PREFIX}/{GW_B}/readings", b"honest")
            if col.received(b"honest", 0.2):
                break
        got = col.wait_for(b"honest")
        flood = [int(p[6:12]) for _, p in got if p.startswith(b"flood ")]
        # the oldest messages, up to the bound (Mosquitto queues while below it)
        assert flood == list(range(len(flood))), flood[:5]
        assert bound <= len(flood) * FLOOD_PAYLOAD < bound + FLOOD_PAYLOAD, len(flood)
        assert len(flood) < n_flood
        assert b.running
        print(
            f"flood {n_flood} x {FLOOD_PAYLOAD} B in {flood_s:.1f} s; broker RSS "
            f"{rss_before} KiB before, peak {peak} KiB (+{growth / 2**20:.0f} MiB); "
            f"collector got {len(flood)} back ({len(flood) * FLOOD_PAYLOAD / 2**20:.0f} MiB); "
            f"RSS after the drain {_proc_kib(pid, 'VmRSS')} KiB"
        )
        honest.close()
        col.close()
        end_session(b.port, pki, COLLECTOR)
    finally:
        b.stop()


# --------------------------------------------------------------------------------------------
# who may connect at all
# --------------------------------------------------------------------------------------------


def _mqtt_connect() -> bytes:
    cid = b"probe"
    body = b"\x00\x04MQTT\x05\x02\x00\x0a\x00" + len(cid).to_bytes(2, "big") + cid
    return b"\x10" + bytes([len(body)]) + body


def _tls_attempt(
    port: int, ca_file: Path, cert: Path | None = None, key: Path | None = None
) -> str:
    """Try TLS + MQTT CONNECT; 'connack:<code>' or the failure seen."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s,
        ):
            s.sendall(_mqtt_connect())
            head = s.recv(4)
            if len(head) == 4 and head[0] == 0x20:
                return f"connack:{head[3]}"
            return "closed"
    except ssl.SSLError as exc:
        return f"ssl:{exc!r}"
    except OSError as exc:
        return f"os:{exc}"


def test_client_certificate_accepted_as_control(broker: SecureMosquitto, pki: Pki) -> None:
    key, cert = pki.clients[GW_A]
    assert _tls_attempt(broker.port, pki.certs / "ca.pem", cert, key) == "connack:0"


def test_client_without_certificate_is_refused(broker: SecureMosquitto, pki: Pki) -> None:
    result = _tls_attempt(broker.port, pki.certs / "ca.pem")
    assert not result.startswith("connack"), result


def test_certificate_from_another_ca_is_refused(
    broker: SecureMosquitto, pki: Pki, tmp_path: Path
) -> None:
    rogue = CertificateAuthority.create(tmp_path / "rogue")
    key = new_tls_key()
    write_private_key(tmp_path / "r.key", key)
    cert = rogue.issue_client(make_csr(key, GW_A), GW_A, "gateway")
    (tmp_path / "r.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    result = _tls_attempt(broker.port, pki.certs / "ca.pem", tmp_path / "r.pem", tmp_path / "r.key")
    assert not result.startswith("connack"), result


def test_self_signed_certificate_claiming_a_gateway_is_refused(
    broker: SecureMosquitto, pki: Pki, tmp_path: Path
) -> None:
    import datetime as dt

    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GW_A)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    write_private_key(tmp_path / "s.key", key)
    (tmp_path / "s.pem").write_bytes(cert.public_bytes(Encoding.PEM))
    result = _tls_attempt(broker.port, pki.certs / "ca.pem", tmp_path / "s.pem", tmp_path / "s.key")
    assert not result.startswith("connack"), result


def test_plain_tcp_gets_no_mqtt(broker: SecureMosquitto) -> None:
    with socket.create_connection(("127.0.0.1", broker.port), timeout=WAIT) as s:
        s.sendall(_mqtt_connect())
        try:
            data = s.recv(4)
        except OSError:
            data = b""
    assert not data.startswith(b"\x20"), data  # never a CONNACK


def test_revoked_certificate_is_refused_after_broker_restart(
    broker: SecureMosquitto, pki: Pki
) -> None:
    """Revocation writes the CRL the broker reads; the restart also drops a live connection.
    Other gateways keep working (a CRL problem must not lock everyone out)."""
    key_c, cert_c = pki.clients[GW_C]
    key_a, cert_a = pki.clients[GW_A]
    ca_file = pki.certs / "ca.pem"
    assert _tls_attempt(broker.port, ca_file, cert_c, key_c) == "connack:0"
    revoked = pki.ca.revoke(GW_C, crl_copy=pki.certs / "crl.pem")
    assert [r.cn for r in revoked] == [GW_C]
    broker.stop()
    broker.start()
    result = _tls_attempt(broker.port, ca_file, cert_c, key_c)
    # Mosquitto closes the handshake without an alert: the client sees EOF, never a CONNACK
    assert not result.startswith("connack"), result
    assert _tls_attempt(broker.port, ca_file, cert_a, key_a) == "connack:0"


def test_acl_template_has_no_rule_granting_receipts_to_gateways() -> None:
    """The static half of the receipts rule, so a future edit cannot widen it silently."""
    acl = (TEMPLATE_DIR / "acl.conf").read_text().splitlines()
    rules = [line.split() for line in acl if line.strip() and not line.startswith("#")]
    patterns = [r for r in rules if r[0] == "pattern"]
    for r in patterns:
        topic, access = r[-1], r[1]
        if topic.endswith("/receipts"):
            assert access == "read", r
        assert "#" not in topic, r
    assert shutil.which("mosquitto") is not None
