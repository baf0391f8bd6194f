"""Just enough MQTT 5 on a raw socket for a load generator that costs (almost) no CPU.

paho spends 20-40 µs of Python per QoS 1 publish; on a 2-core machine that is CPU the collector
under test would not get. Here every PUBLISH packet is encoded once, before the timed phase,
and sent in large writes; PUBACKs are counted from the byte stream. The packets themselves
come from fieldproof/mqtt_packets.py (the project's one MQTT codec)."""

from __future__ import annotations

import contextlib
import socket

from fieldproof.mqtt_packets import (
    DISCONNECT,
    PUBACK,
    PUBLISH,
    SUBACK,
    Packet,
    Reader,
    connack_reason,
    connack_receive_maximum,
    connect_packet,
    encode_varint,
    packet,
    parse_publish,
    puback_packet,
    publish_packet,
    subscribe_packet,
)

__all__ = ["PUBACK", "PUBLISH", "MqttError", "RawClient", "parse_publish", "puback_packet",
           "publish_packet"]  # fmt: skip


class MqttError(RuntimeError):
    """The broker refused something or sent what this tiny client does not understand."""


class RawClient:
    """A blocking MQTT 5 connection; the caller drives reads."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        receive_maximum: int = 0,
        timeout: float = 30.0,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.reader = Reader()
        self.sock.sendall(connect_packet(client_id, receive_maximum=receive_maximum))
        connack = self.read_one()
        if connack_reason(connack) != 0:
            raise MqttError(f"broker refused the connection (reason {connack_reason(connack)})")
        self.broker_receive_maximum = connack_receive_maximum(connack)

    def read_one(self) -> Packet:
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise MqttError("broker closed the connection")
            packets = self.reader.feed(data)
            if packets:
                if len(packets) > 1:  # keep the rest for later reads
                    rest = b"".join(
                        bytes([p.first_byte]) + encode_varint(len(p.body)) + p.body
                        for p in packets[1:]
                    )
                    self.reader.buf[:0] = rest
                return packets[0]

    def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        self.sock.sendall(subscribe_packet(1, topic_filter, qos))
        p = self.read_one()
        if p.kind != SUBACK or p.body[-1] >= 0x80:
            raise MqttError(f"subscription to {topic_filter!r} refused")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(packet(DISCONNECT, b""))
        self.sock.close()
