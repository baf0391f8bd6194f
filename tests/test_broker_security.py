"""The shipped broker configuration, proven on a real Mosquitto 2.0 with certificates from our
CA: deploy/mosquitto/mosquitto.conf and acl.conf exactly as shipped (only port and paths moved).

Negative checks never wait for "nothing arrived within N seconds": after the forbidden message
the same client sends an allowed one on the same connection. Mosquitto handles one client's
packets in order, so once the allowed one has arrived, the forbidden one would already have
arrived if the broker had let it through."""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from paho.mqtt.reasoncodes import ReasonCode

from collector.broker import (
    DEPLOY_CONF_DIR,
    TEMPLATE_DIR,
    SecureMosquitto,
    issue_local_client,
    provision_broker_certs,
    render_broker_config,
)
from collector.ca import CertificateAuthority, make_csr, new_tls_key, write_private_key
from fieldproof.config import MqttConfig, TlsConfig
from fieldproof.mqtt import make_client

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
    """A connected paho client that records what it receives."""

    def __init__(self, pki: Pki, port: int, name: str, client_id: str | None = None) -> None:
        self.client = make_client(pki.mqtt(port, name), client_id or f"{name}-test")
        self.messages: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._subacks = 0
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")
        assert self.connack is not None and not self.connack.is_failure, self.connack

    def _on_connect(self, c: paho.Client, u: object, f: object, rc: ReasonCode, p: object) -> None:
        with self.cond:
            self.connack = rc
            self.cond.notify_all()

    def _on_subscribe(self, c: paho.Client, u: object, mid: int, rcs: object, p: object) -> None:
        with self.cond:
            self._subacks += 1
            self.cond.notify_all()

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def wait(self, pred: object, what: str) -> None:
        with self.cond:
            ok = self.cond.wait_for(pred, WAIT)  # type: ignore[arg-type]
        assert ok, f"timed out waiting for {what}"

    def subscribe(self, *topics: str) -> None:
        before = self._subacks
        self.client.subscribe([(t, 1) for t in topics])
        self.wait(lambda: self._subacks > before, f"SUBACK for {topics}")

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT)

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
