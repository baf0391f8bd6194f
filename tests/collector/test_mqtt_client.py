"""The collector's MQTT receive path (collector/mqtt_client.py) against a real Mosquitto.

IngestClient replaces three of paho's internal steps (buffered packet reading, PUBLISH
decoding, batched PUBACKs), so these tests push the byte stream through a proxy that cuts it
into pieces of 1..7 bytes (every packet split at every kind of position: inside the length,
inside the topic, inside the properties, inside the payload) and check every message arrives
whole, once, in order, and that ``ack_many`` acknowledges exactly the ids it is given. The one
test that needs a broker to misbehave uses a minimal fake broker (Mosquitto cannot be made to
send a malformed packet); its docstring says so."""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, _ConnectionState
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.mqtt_client import Delivery, IngestClient
from fieldproof.services import Mosquitto


class DribbleProxy:
    """TCP proxy: client→broker bytes pass as they come, broker→client bytes are cut into
    random pieces of 1..7 bytes, each sent on its own."""

    def __init__(self, target_port: int, seed: int = 7) -> None:
        self.target_port = target_port
        self.rng = random.Random(seed)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, dribble: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not dribble:
                    dst.sendall(data)
                    continue
                i = 0
                while i < len(data):
                    k = self.rng.randint(1, 7)
                    dst.sendall(data[i : i + k])
                    i += k
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        for s in self.conns:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    b = Mosquitto(tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Receiver:
    """An IngestClient in a persistent session, collecting deliveries (fast path and paho's
    fallback alike)."""

    def __init__(
        self, port: int, client_id: str, topic: str, qos: int = 1, autoack: bool = False
    ) -> None:
        self.autoack = autoack
        self.got: list[Delivery] = []
        self.fallback: list[Delivery] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = IngestClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            deliver=self._deliver,
        )
        self.client.manual_ack_set(True)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: unannotated
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(15), "no SUBACK"

    def _deliver(self, d: Delivery) -> None:
        with self.lock:
            self.got.append(d)
        if self.autoack and d.qos == 1:
            self.client.ack_many([d.mid])

    def _on_message(self, c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        d = Delivery(msg.mid, msg.qos, msg.topic, bytes(msg.payload), time.time())
        with self.lock:
            self.fallback.append(d)
            self.got.append(d)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.02)
        with self.lock:
            raise AssertionError(f"received {len(self.got)} of {n} messages")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _publisher(port: int) -> paho.Client:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub", protocol=paho.MQTTv5)
    connected = threading.Event()
    pub.on_connect = lambda c, u, f, rc, p: connected.set()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    assert connected.wait(15), "publisher did not connect"
    return pub


def _sizes() -> list[int]:
    # remaining-length boundaries (1/2/3-byte lengths) and ordinary sizes, all below the
    # test broker's max_packet_size (128 KiB)
    return [0, 1, 2, 100, 127, 128, 129, 16_383, 16_384, 16_385, 120_000, 37, 500, 3]


def test_every_message_whole_once_through_a_dribbling_link(broker: Mosquitto) -> None:
    proxy = DribbleProxy(broker.port)
    rx = Receiver(proxy.port, "ingest-dribble", "t/#", autoack=True)
    pub = _publisher(broker.port)
    try:
        rng = random.Random(1)
        sent: list[tuple[str, bytes, int]] = []
        for i in range(300):
            size = _sizes()[i % len(_sizes())]
            payload = rng.randbytes(size)
            topic = f"t/{'x' * (i % 40)}é/{i}"
            qos = 1 if i % 3 else 0
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: unannotated
            if i % 4 == 0:  # properties of several kinds must be skipped, not mistaken
                props.UserProperty = [("k" * (i % 7 + 1), "v" * (i % 300))]
                props.MessageExpiryInterval = 3600
                props.ContentType = "application/cose"
            pub.publish(topic, payload, qos, properties=props).wait_for_publish(10)
            sent.append((topic, payload, qos))
        got = rx.wait_for(len(sent), timeout=60)
        received = [(d.topic, d.payload, d.qos) for d in got]
        # whole and exactly once; in order within each QoS (MQTT orders nothing across QoS
        # levels: the broker may pass a QoS 0 message while QoS 1 waits for in-flight room)
        assert sorted(received) == sorted(sent)
        for qos in (0, 1):
            assert [m for m in received if m[2] == qos] == [m for m in sent if m[2] == qos]
        assert rx.fallback == []  # every one took the fast path
        assert all(d.mid > 0 for d in got if d.qos == 1)
    finally:
        rx.close()
        pub.disconnect()
        pub.loop_stop()
        proxy.close()


def test_ack_many_acknowledges_exactly_the_ids_it_is_given(broker: Mosquitto) -> None:
    """Ack the even-numbered half; after a reconnect the broker redelivers exactly the odd
    half (and nothing acked comes back)."""
    rx = Receiver(broker.port, "ingest-acks", "a/#")
    pub = _publisher(broker.port)
    try:
        for i in range(100):  # = the test broker's max_inflight_messages
            pub.publish(f"a/{i}", str(i).encode(), 1).wait_for_publish(10)
        got = rx.wait_for(100)
        acked = [d for d in got if int(d.payload) % 2 == 0]
        rx.client.ack_many([d.mid for d in acked])
        time.sleep(0.5)  # let the PUBACKs leave before we go
        rx.close()
        rx2 = Receiver(broker.port, "ingest-acks", "a/#")
        try:
            again = rx2.wait_for(50)
            time.sleep(0.5)
            assert sorted(int(d.payload) for d in rx2.got) == list(range(1, 100, 2))
            rx2.client.ack_many([d.mid for d in again])
        finally:
            rx2.close()
    finally:
        pub.disconnect()
        pub.loop_stop()


def test_qos2_falls_back_to_paho_and_still_arrives(broker: Mosquitto) -> None:
    rx = Receiver(broker.port, "ingest-q2", "q/#", qos=2)
    pub = _publisher(broker.port)
    try:
        pub.publish("q/1", b"exactly once", 2).wait_for_publish(10)
        pub.publish("q/2", b"at least once", 1).wait_for_publish(10)
        got = rx.wait_for(2)
        assert {(d.topic, d.payload, d.qos) for d in got} == {
            ("q/1", b"exactly once", 2),
            ("q/2", b"at least once", 1),
        }
        assert [d.topic for d in rx.fallback] == ["q/1"]
    finally:
        rx.close()
        pub.disconnect()
        pub.loop_stop()


def test_filtered_callbacks_are_refused() -> None:
    c = IngestClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, deliver=lambda d: None)
    with pytest.raises(TypeError, match="deliver"):
        c.message_callback_add("a/#", lambda *a: None)


def _fake_broker(reply: bytes) -> tuple[socket.socket, threading.Event]:
    """A fake broker (Mosquitto never sends malformed packets): answers CONNECT with a
    CONNACK, then sends ``reply`` and records whether the client hung up."""
    server = socket.create_server(("127.0.0.1", 0))
    closed = threading.Event()

    def serve() -> None:
        conn, _ = server.accept()
        conn.settimeout(10)
        conn.recv(65536)  # CONNECT
        conn.sendall(bytes([0x20, 3, 0, 0, 0]))  # CONNACK, MQTT 5, no properties
        conn.sendall(reply)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass
        closed.set()
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, closed


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(bytes([0x32, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]), id="five-byte-length"),
        pytest.param(bytes([0x32, 0x03, 0x00, 0x09, 0x61]), id="topic-past-the-end"),
    ],
)
def test_malformed_packets_drop_the_connection_without_delivering(reply: bytes) -> None:
    server, closed = _fake_broker(reply)
    got: list[Delivery] = []
    c = IngestClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, deliver=got.append)
    c.on_message = lambda *a: got.append(Delivery(0, 0, "fallback", b"", 0.0))
    c.reconnect_delay_set(30, 60)  # one connection is enough to watch
    try:
        c.connect("127.0.0.1", server.getsockname()[1])
        c.loop_start()
        assert closed.wait(15), "the client kept a connection that sent garbage"
        assert got == []
    finally:
        c.disconnect()
        c.loop_stop()
        server.close()


def test_puback_bytes_are_mqtt5_short_form() -> None:
    """Each queued PUBACK is the 4-byte short form (reason Success implied, MQTT 5 §3.4.2.1)."""
    c = IngestClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, deliver=lambda d: None)
    c.ack_many([1, 258, 65535])
    queued = b"".join(bytes(p["packet"]) for p in c._out_packet)
    assert queued == b"".join(struct.pack("!BBH", 0x40, 2, m) for m in (1, 258, 65535))


def test_queued_acks_and_qos1_publishes_leave_in_one_write() -> None:
    """``_packet_write`` merges what paho would send one ``send`` each; the bytes on the wire
    are exactly the packets in queue order, and a QoS 0 PUBLISH (which paho reports as
    published per packet) is not merged."""
    c = IngestClient(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5, deliver=lambda d: None)
    ours, theirs = socket.socketpair()
    sends: list[int] = []

    class CountingSocket:
        def send(self, data: bytes) -> int:
            sends.append(len(data))
            return ours.send(data)

        def close(self) -> None:
            ours.close()

    c._sock = CountingSocket()  # type: ignore[assignment]  # a counting fake, not a socket
    # as under loop_start(): queueing only queues; the network thread writes later
    c._thread = threading.current_thread()
    c.ack_many([1, 2])
    c._state = _ConnectionState.MQTT_CS_CONNECTED
    c.publish("r/1", b"receipt", 1)
    c.ack_many([3])
    c.publish("r/2", b"status", 0)
    expected = b"".join(bytes(p["packet"]) for p in c._out_packet)
    c._packet_write()
    theirs.settimeout(5)
    got = b""
    while len(got) < len(expected):
        got += theirs.recv(65536)
    assert got == expected
    assert len(sends) == 2  # acks + QoS 1 publish + ack merged; the QoS 0 publish alone
    c._thread = None
    theirs.close()


def test_receipts_published_at_qos1_all_complete(broker: Mosquitto) -> None:
    """Many QoS 1 publishes from an IngestClient (as receipts are) reach a subscriber in order
    and every one completes (its PUBACK came back), with merged writes."""
    sub = Receiver(broker.port, "sub-receipts", "rc/#", autoack=True)
    rx = Receiver(broker.port, "ingest-publisher", "unused/#")
    try:
        infos = [rx.client.publish(f"rc/{i % 7}", str(i).encode(), 1) for i in range(500)]
        for info in infos:
            info.wait_for_publish(15)
        got = sub.wait_for(500)
        assert [int(d.payload) for d in got] == list(range(500))
    finally:
        rx.close()
        sub.close()
