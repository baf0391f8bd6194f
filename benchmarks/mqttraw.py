"""Just enough MQTT 5 on a raw socket for a load generator that costs (almost) no CPU.

paho spends 20-40 µs of Python per QoS 1 publish; on a 2-core machine that is CPU the collector
under test would not get. Here every PUBLISH packet is encoded once, before the timed phase,
and sent in large writes; PUBACKs are counted from the byte stream. Only what the benchmark
needs: CONNECT/CONNACK, PUBLISH QoS 0/1 both ways, PUBACK, SUBSCRIBE/SUBACK, DISCONNECT."""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
DISCONNECT = 0xE0

PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21


class MqttError(RuntimeError):
    """The broker refused something or sent what this tiny client does not understand."""


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(
    client_id: str, *, clean_start: bool = True, receive_maximum: int = 0, session_expiry: int = 0
) -> bytes:
    props = b""
    if receive_maximum:
        props += bytes([PROP_RECEIVE_MAXIMUM]) + struct.pack(">H", receive_maximum)
    if session_expiry:
        props += bytes([PROP_SESSION_EXPIRY]) + struct.pack(">I", session_expiry)
    flags = 0x02 if clean_start else 0x00
    body = utf8("MQTT") + bytes([5, flags]) + struct.pack(">H", 0) + varint(len(props)) + props
    return packet(CONNECT, body + utf8(client_id))


def publish_packet(topic: str | bytes, payload: bytes, qos: int = 1, pid: int = 0) -> bytes:
    """PUBLISH without properties; ``pid`` is required (1..65535) for QoS 1."""
    head = utf8(topic) + (struct.pack(">H", pid) if qos else b"") + b"\x00"
    return packet(PUBLISH | (qos << 1), head + payload)


def puback_packet(pid: int) -> bytes:
    return b"\x40\x02" + struct.pack(">H", pid)


def subscribe_packet(pid: int, topic_filter: str, qos: int = 1) -> bytes:
    return packet(SUBSCRIBE, struct.pack(">H", pid) + b"\x00" + utf8(topic_filter) + bytes([qos]))


@dataclass
class Packet:
    first_byte: int
    body: bytes

    @property
    def kind(self) -> int:
        return self.first_byte & 0xF0


class Reader:
    """Splits the byte stream from the broker into packets."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self.buf += data
        buf = self.buf
        out: list[Packet] = []
        pos = 0
        n = len(buf)
        while n - pos >= 2:
            length = shift = 0
            i = pos + 1
            complete = False
            while i < n and i - pos <= 4:
                b = buf[i]
                i += 1
                length |= (b & 0x7F) << shift
                shift += 7
                if not b & 0x80:
                    complete = True
                    break
            if not complete or n - i < length:
                break
            out.append(Packet(buf[pos], bytes(buf[i : i + length])))
            pos = i + length
        del buf[:pos]
        return out


def parse_publish(p: Packet) -> tuple[str, int, bytes]:
    """(topic, packet id or 0, payload) of a PUBLISH."""
    body = p.body
    tlen = struct.unpack_from(">H", body, 0)[0]
    topic = body[2 : 2 + tlen].decode()
    pos = 2 + tlen
    pid = 0
    if (p.first_byte >> 1) & 3:
        pid = struct.unpack_from(">H", body, pos)[0]
        pos += 2
    plen = 0
    shift = 0
    while True:
        b = body[pos]
        pos += 1
        plen |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return topic, pid, body[pos + plen :]


def connack_receive_maximum(p: Packet) -> int:
    """The broker's Receive Maximum from a CONNACK (65535 when absent); raises if refused."""
    if p.kind != CONNACK:
        raise MqttError(f"expected CONNACK, got packet type {p.first_byte:#x}")
    if len(p.body) < 2 or p.body[1] != 0:
        raise MqttError(f"broker refused the connection (reason {p.body[1] if p.body else '?'})")
    body = p.body[2:]
    plen = 0
    shift = 0
    pos = 0
    while True:
        b = body[pos]
        pos += 1
        plen |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    props = body[pos : pos + plen]
    i = 0
    while i < len(props):
        ident = props[i]
        i += 1
        if ident == PROP_RECEIVE_MAXIMUM:
            return int(struct.unpack_from(">H", props, i)[0])
        # skip the value: lengths per MQTT 5 §2.2.2.2
        if ident in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
            i += 1
        elif ident in (0x13, 0x21, 0x22):
            i += 2
        elif ident in (0x02, 0x11, 0x27):
            i += 4
        elif ident == 0x0B:
            while props[i] & 0x80:
                i += 1
            i += 1
        elif ident == 0x26:
            i += 2 + struct.unpack_from(">H", props, i)[0]
            i += 2 + struct.unpack_from(">H", props, i)[0]
        else:
            i += 2 + struct.unpack_from(">H", props, i)[0]
    return 65535


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
        self.broker_receive_maximum = connack_receive_maximum(self.read_one())

    def read_one(self) -> Packet:
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise MqttError("broker closed the connection")
            packets = self.reader.feed(data)
            if packets:
                if len(packets) > 1:  # keep the rest for later reads
                    rest = b"".join(
                        bytes([p.first_byte]) + varint(len(p.body)) + p.body for p in packets[1:]
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
