"""Just enough of the MQTT 5 wire format (OASIS MQTT 5.0, §1.5 and §3) for the places that
speak it without paho: the doctor's one-off login, the collector's fast receive path, the
benchmark's load generator. One codec instead of three: variable byte integers, the fixed
header, CONNECT, PUBLISH, PUBACK, SUBSCRIBE, UNSUBSCRIBE, CONNACK and SUBACK reading. Pure:
bytes in, bytes or values out; the callers own their sockets."""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from fieldproof.errors import FormatError

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
UNSUBSCRIBE = 0xA2
UNSUBACK = 0xB0
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21


class PacketError(FormatError):
    """Bytes that are not an MQTT 5 packet this codec can read."""


def encode_varint(n: int) -> bytes:
    """A variable byte integer (§1.5.5): 7 bits a byte, the high bit says "more"."""
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def decode_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """The variable byte integer at ``pos``: (value, position after it); None when the data
    ends inside it; :class:`PacketError` when it runs past four bytes (malformed)."""
    value, shift = 0, 0
    for i in range(pos, min(len(data), pos + 4)):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + 1
        shift += 7
    if len(data) >= pos + 4:
        raise PacketError("variable byte integer longer than four bytes")
    return None


def utf8(text: str | bytes) -> bytes:
    """A UTF-8 string or binary data: two-byte length, then the bytes."""
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(data)) + data


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    keepalive: int = 0,
    clean_start: bool = True,
    receive_maximum: int = 0,
    session_expiry: int = 0,
) -> bytes:
    """CONNECT with no will and no credentials (a TLS client certificate is the login)."""
    props = b""
    if receive_maximum:
        props += bytes([PROP_RECEIVE_MAXIMUM]) + struct.pack(">H", receive_maximum)
    if session_expiry:
        props += bytes([PROP_SESSION_EXPIRY]) + struct.pack(">I", session_expiry)
    flags = 0x02 if clean_start else 0x00
    variable = utf8("MQTT") + bytes([5, flags]) + struct.pack(">H", keepalive)
    return packet(CONNECT, variable + encode_varint(len(props)) + props + utf8(client_id))


def publish_packet(topic: str | bytes, payload: bytes, qos: int = 1, pid: int = 0) -> bytes:
    """PUBLISH without properties; ``pid`` is required (1..65535) for QoS 1."""
    head = utf8(topic) + (struct.pack(">H", pid) if qos else b"") + b"\x00"
    return packet(PUBLISH | (qos << 1), head + payload)


def puback_packet(pid: int) -> bytes:
    return b"\x40\x02" + struct.pack(">H", pid)


def subscribe_packet(pid: int, topic_filter: str, qos: int = 1) -> bytes:
    return packet(SUBSCRIBE, struct.pack(">H", pid) + b"\x00" + utf8(topic_filter) + bytes([qos]))


def unsubscribe_packet(pid: int, topic_filter: str) -> bytes:
    return packet(UNSUBSCRIBE, struct.pack(">H", pid) + b"\x00" + utf8(topic_filter))


@dataclass
class Packet:
    first_byte: int
    body: bytes

    @property
    def kind(self) -> int:
        return self.first_byte & 0xF0


class Reader:
    """Splits a byte stream from a broker into packets."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        self.buf += data
        buf = self.buf
        out: list[Packet] = []
        pos = 0
        while len(buf) - pos >= 2:
            header = decode_varint(buf, pos + 1)
            if header is None or len(buf) - header[1] < header[0]:
                break
            length, start = header
            out.append(Packet(buf[pos], bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        return out


def read_packet(recv_exact: Callable[[int], bytes], max_bytes: int) -> Packet:
    """One packet from a blocking source (``recv_exact(n)`` returns n bytes or raises);
    :class:`PacketError` for a length past ``max_bytes`` or a malformed header."""
    first = recv_exact(1)[0]
    header = bytearray()
    while True:
        header += recv_exact(1)
        decoded = decode_varint(header, 0)
        if decoded is not None:
            break
    length = decoded[0]
    if length > max_bytes:
        raise PacketError(f"MQTT packet of {length} bytes; at most {max_bytes} expected here")
    return Packet(first, recv_exact(length) if length else b"")


def parse_publish(p: Packet) -> tuple[str, int, bytes]:
    """(topic, packet id or 0, payload) of a PUBLISH."""
    body = p.body
    (tlen,) = struct.unpack_from(">H", body, 0)
    topic = body[2 : 2 + tlen].decode()
    pos = 2 + tlen
    pid = 0
    if (p.first_byte >> 1) & 3:
        (pid,) = struct.unpack_from(">H", body, pos)
        pos += 2
    props = decode_varint(body, pos)
    if props is None:
        raise PacketError("PUBLISH ends inside its properties length")
    return topic, pid, body[props[1] + props[0] :]


def suback_codes(p: Packet) -> bytes:
    """The reason codes of a SUBACK or UNSUBACK (one per filter; >= 0x80 is a refusal)."""
    props = decode_varint(p.body, 2)
    if props is None:
        raise PacketError("SUBACK ends inside its properties length")
    return p.body[props[1] + props[0] :]


def connack_reason(p: Packet) -> int:
    """The CONNACK's reason code (0 = accepted)."""
    if p.kind != CONNACK or len(p.body) < 2:
        raise PacketError(f"expected a CONNACK, got packet type {p.first_byte:#x}")
    return p.body[1]


def connack_receive_maximum(p: Packet) -> int:
    """The broker's Receive Maximum from an accepting CONNACK (65535 when absent)."""
    props_len = decode_varint(p.body, 2)
    if props_len is None:
        raise PacketError("CONNACK ends inside its properties length")
    props = p.body[props_len[1] : props_len[1] + props_len[0]]
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
            skipped = decode_varint(props, i)
            if skipped is None:
                raise PacketError("CONNACK property ends inside a variable byte integer")
            i = skipped[1]
        elif ident == 0x26:
            i += 2 + struct.unpack_from(">H", props, i)[0]
            i += 2 + struct.unpack_from(">H", props, i)[0]
        else:
            i += 2 + struct.unpack_from(">H", props, i)[0]
    return 65535
