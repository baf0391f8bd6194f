"""paho-mqtt's client with a receive path fit for thousands of QoS 1 messages a second.

paho does everything the collector needs from MQTT 5 (TLS, persistent sessions, Receive
Maximum, wills, reconnects, its own publishes), but its receive path was written for a few
messages a second: three ``recv`` calls per packet (type byte, each length byte, body), a
:class:`paho.mqtt.client.MQTTMessage` with its own ``threading.Condition`` and a parsed
``Properties`` object per message, a topic-matcher walk, and one packet plus one wake-up write
per manual ack. Profiled on a saturated collector that was half of the collector's MQTT cost.

:class:`IngestClient` overrides three of paho 2.x's internal steps and adds one method:

* ``_packet_read`` reads whatever the socket has (up to 256 KiB) and handles every complete
  packet in it, keeping a partial packet for the next read (paho then waits in ``select`` as
  before: the rest of a partial packet has to come from the socket anyway);
* ``_handle_publish`` hands QoS 0/1 PUBLISH packets to ``deliver`` as a small
  :class:`Delivery` (falling back to paho for QoS 2, topic aliases and undecodable topics;
  per-topic callbacks are refused);
* ``_packet_write`` sends the queued PUBACKs and QoS 1 PUBLISHes (the receipts) in one ``send``
  instead of one each;
* :meth:`IngestClient.ack_many` queues the PUBACKs of a whole batch at once.

These are private paho methods, so the supported paho versions are pinned in pyproject.toml
and tests/collector/test_mqtt_client.py drives this class against a real broker through a proxy that
splits the byte stream at every position."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.exception import MalformedPacket

from fieldproof.mqtt_packets import decode_varint

RECV_BYTES = 256 * 1024
WRITE_BYTES = 256 * 1024
_PUBACK = 0x40
_PUBLISH = 0x30


@dataclass(slots=True)
class Delivery:
    """One received PUBLISH (QoS 0 or 1): what the collector's inbox holds."""

    mid: int
    qos: int
    topic: str
    payload: bytes
    received_at: float


class IngestClient(paho.Client):
    """A paho MQTT client whose PUBLISH packets go to ``deliver`` (on paho's network thread;
    it must be quick, e.g. append to a deque)."""

    def __init__(self, *args: Any, deliver: Callable[[Delivery], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deliver = deliver
        self._rbuf = bytearray()
        self._rbuf_sock: object = None

    # ------------------------------------------------------------------ receive

    def _packet_read(self) -> MQTTErrorCode:
        sock = self._sock
        if sock is not self._rbuf_sock:  # a new connection: nothing old may leak into it
            self._rbuf.clear()
            self._rbuf_sock = sock
        try:
            data = self._sock_recv(RECV_BYTES)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:  # TimeoutError and ConnectionError included
            self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        with self._msgtime_mutex:
            self._last_bytes_received = paho.time_func()
        buf = self._rbuf
        buf += data
        n = len(buf)
        pos = 0
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while pos < n:
            # fixed header: type byte, then 1..4 bytes of remaining length
            try:
                header = decode_varint(buf, pos + 1)
            except ValueError:
                return MQTTErrorCode.MQTT_ERR_PROTOCOL
            if header is None or header[1] + header[0] > n:
                break  # the rest of this packet is still on its way
            length, i = header
            self._in_packet = {
                "command": buf[pos],
                "have_remaining": 1,
                "remaining_count": [],
                "remaining_mult": 1,
                "remaining_length": length,
                "packet": bytearray(buf[i : i + length]),
                "to_process": 0,
                "pos": 0,
            }
            pos = i + length
            try:
                rc = self._packet_handle()
            except MalformedPacket as exc:
                self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        del buf[:pos]
        self._in_packet = {
            "command": 0,
            "have_remaining": 0,
            "remaining_count": [],
            "remaining_mult": 1,
            "remaining_length": 0,
            "packet": bytearray(b""),
            "to_process": 0,
            "pos": 0,
        }
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        header: int = self._in_packet["command"]
        packet: bytearray = self._in_packet["packet"]
        qos = (header & 0x06) >> 1
        if qos == 2 or self._protocol != paho.MQTTv5:
            return super()._handle_publish()
        if len(packet) < 2:
            return super()._handle_publish()  # paho raises the right MalformedPacket
        topic_len = int.from_bytes(packet[0:2], "big")
        end = 2 + topic_len
        mid = 0
        if qos:
            mid = int.from_bytes(packet[end : end + 2], "big")
            end += 2
        # MQTT 5 properties: a variable byte integer length, then the properties (skipped:
        # the collector uses none; a topic alias shows as an empty topic, handled by paho)
        try:
            props = decode_varint(packet, end)
        except ValueError:
            props = None
        if props is None or topic_len == 0 or props[1] + props[0] > len(packet):
            return super()._handle_publish()  # paho decodes it, or raises MalformedPacket
        body = props[1] + props[0]
        try:
            topic = packet[2 : 2 + topic_len].decode("utf-8")
        except UnicodeDecodeError:
            return super()._handle_publish()
        self.deliver(Delivery(mid, qos, topic, bytes(packet[body:]), time.time()))
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def message_callback_add(self, sub: str, callback: Any) -> None:
        raise TypeError("IngestClient hands every message to deliver(); filter there")

    # ------------------------------------------------------------------ send

    def _packet_write(self) -> MQTTErrorCode:
        """Coalesce queued PUBACKs and QoS 1 PUBLISHes (the receipts) into one write before
        paho writes its queue one packet per ``send``. paho does nothing per packet after
        writing those two kinds (a QoS 1 PUBLISH completes on its PUBACK, tracked elsewhere),
        so a merged write is indistinguishable on the wire and in paho's state."""
        out = self._out_packet
        if len(out) > 1:
            merged: list[Any] = []
            size = 0
            while out and size < WRITE_BYTES:
                head = out[0]
                kind = head["command"] & 0xF0
                if head["pos"] or not (kind == _PUBACK or (kind == _PUBLISH and head["qos"])):
                    break
                merged.append(out.popleft())
                size += len(head["packet"])
            if len(merged) > 1:
                data = b"".join(bytes(p["packet"]) for p in merged)
                out.appendleft(
                    {
                        "command": _PUBACK,
                        "mid": 0,
                        "qos": 0,
                        "pos": 0,
                        "to_process": len(data),
                        "packet": data,
                        "info": None,
                    }
                )
            elif merged:
                out.appendleft(merged[0])
        return super()._packet_write()

    # ------------------------------------------------------------------ acks

    def ack_many(self, mids: Sequence[int]) -> None:
        """PUBACK every message id in ``mids`` (QoS 1, manual ack) with one queued write and
        one wake-up of the network thread."""
        if not mids:
            return
        pack = struct.Struct("!BBH").pack
        self._packet_queue(_PUBACK, b"".join(pack(_PUBACK, 2, mid) for mid in mids), 0, 0)
