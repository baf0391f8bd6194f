"""The fieldproof serial sensor node (``firmware/``): a microcontroller with capacitive soil
moisture probes and DS18B20s, talking framed lines over a UART.

Frame (docs/sensors.md has the full description)::

    $FP1,<seq>,<type>[,<key>=<value>…]*<CRC-16/CCITT-FALSE, 4 hex>\\r\\n

The gateway asks ``READ`` and gets an ``R`` frame with raw ADC counts (``m0=31250``) and
temperatures (``d28ff641e8316034a=21.7500``, or ``!reason``). The node applies no calibration:
the gateway maps each probe's raw count through its two-point (dry air / water) calibration
from the config or the calibration file, and also sends the raw count so VWC can be recomputed
with a better curve later. Noise on the line is skipped up to the next ``$``; a frame with a
bad CRC is dropped and the command re-sent; gaps in the node's sequence numbers and reboots
(a ``HELLO`` frame) are counted, so a flaky link shows in the status before it costs data."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldproof.errors import DeviceError, FormatError
from fieldproof.wire import Reading
from gateway.sensors.base import QUANTITY_UNITS, SensorConfig, SensorDriver, plausible, register
from gateway.sensors.calibration import (
    CalibrationStore,
    TwoPointCalibration,
    resolve_calibration,
)

log = logging.getLogger(__name__)

VERSION = b"FP1"
MAX_LINE = 240
_FIELD_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:+-!")


# --------------------------------------------------------------------------------------------
# Framing (the firmware's fpframe.py, reimplemented from the documented format)
# --------------------------------------------------------------------------------------------


def crc16_ccitt(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


class FrameError(FormatError):
    """A line that is not a valid frame; ``reason`` is bad-frame, bad-crc or bad-version."""

    def __init__(self, reason: str, line: bytes) -> None:
        super().__init__(f"{reason}: {line[:60]!r}")
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    seq: int
    kind: str
    fields: dict[str, str]


def encode_frame(seq: int, kind: str, fields: list[tuple[str, object]] | None = None) -> bytes:
    parts = [VERSION, str(seq & 0xFFFF).encode(), kind.encode()]
    for key, value in fields or []:
        item = f"{key}={value}".encode()
        if not set(item) <= _FIELD_CHARS | {ord("=")}:
            raise ValueError(f"field {item!r} has characters the frame format does not allow")
        parts.append(item)
    body = b",".join(parts)
    return b"$" + body + b"*" + f"{crc16_ccitt(body):04X}".encode() + b"\r\n"


def decode_frame(line: bytes) -> Frame:
    """Parse one line (without LF); raise :class:`FrameError`."""
    line = line.rstrip(b"\r")
    star = line.rfind(b"*")
    if len(line) > MAX_LINE or not line.startswith(b"$") or star < 0 or len(line) - star != 5:
        raise FrameError("bad-frame", line)
    body = line[1:star]
    try:
        crc = int(line[star + 1 :], 16)
    except ValueError:
        raise FrameError("bad-frame", line) from None
    if crc16_ccitt(body) != crc:
        raise FrameError("bad-crc", line)
    parts = body.split(b",")
    if len(parts) < 3 or parts[0] != VERSION:
        raise FrameError("bad-version", line)
    if not parts[1].isdigit():
        raise FrameError("bad-frame", line)
    fields: dict[str, str] = {}
    for part in parts[3:]:
        key, eq, value = part.partition(b"=")
        if not eq or not key:
            raise FrameError("bad-frame", line)
        fields[key.decode("ascii", "replace")] = value.decode("ascii", "replace")
    return Frame(int(parts[1]), parts[2].decode("ascii", "replace"), fields)


@dataclass
class FrameReader:
    """Turns a byte stream into frames, resynchronising on ``$`` after noise."""

    buffer: bytearray = field(default_factory=bytearray)
    noise_bytes: int = 0

    def feed(self, data: bytes) -> Iterator[Frame | FrameError]:
        self.buffer.extend(data)
        while True:
            start = self.buffer.find(b"$")
            if start < 0:
                self.noise_bytes += len(self.buffer.rstrip(b"\r\n"))
                self.buffer.clear()
                return
            if start:
                self.noise_bytes += len(bytes(self.buffer[:start]).strip(b"\r\n"))
                del self.buffer[:start]
            end = self.buffer.find(b"\n")
            restart = self.buffer.find(b"$", 1)
            if 0 < restart < (end if end >= 0 else len(self.buffer)):
                # a new frame began before this one ended: the first was cut short
                yield FrameError("bad-frame", bytes(self.buffer[:restart]))
                del self.buffer[:restart]
                continue
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    yield FrameError("bad-frame", bytes(self.buffer[:MAX_LINE]))
                    self.buffer.clear()
                return
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            try:
                yield decode_frame(line)
            except FrameError as exc:
                yield exc


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


class NodeProbe(BaseModel):
    """One capacitive probe on the node (``m<channel>`` in frames)."""

    model_config = ConfigDict(extra="forbid")

    channel: int = Field(default=0, ge=0, le=15)
    #: appended to the sensor name ("<name>.<label>") when a node has several probes
    label: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]*$")
    quantity: str = "soil_moisture"
    #: inline two-point calibration (raw counts); else the calibration file is used
    dry: float | None = None
    wet: float | None = None
    dry_vwc: float = Field(default=0.0, ge=0, le=1)
    wet_vwc: float = Field(default=1.0, ge=0, le=1)

    def inline(self) -> TwoPointCalibration | None:
        if self.dry is None or self.wet is None:
            return None
        return TwoPointCalibration(
            dry=self.dry, wet=self.wet, dry_vwc=self.dry_vwc, wet_vwc=self.wet_vwc
        )


class NodeThermometer(BaseModel):
    """One DS18B20 on the node's 1-Wire bus, by ROM id (``d<rom>`` in frames)."""

    model_config = ConfigDict(extra="forbid")

    rom: str = Field(pattern=r"^28[0-9a-f]{14}$")
    label: str = Field(default="", pattern=r"^[A-Za-z0-9_.:-]*$")
    quantity: str = "soil_temperature"


class SensorNodeConfig(SensorConfig):
    kind: str = "sensor_node"
    port: str
    baudrate: int = Field(default=115200, ge=1200, le=1_000_000)
    probes: list[NodeProbe] = Field(default_factory=lambda: [NodeProbe()])
    thermometers: list[NodeThermometer] = Field(default_factory=list)
    #: where `fieldproof gateway calibrate` stores dry/wet counts (inline values win)
    calibration_file: Path | None = None
    #: the node's own push interval; 0 = it speaks only when asked (the gateway polls)
    push_interval_s: int = Field(default=0, ge=0, le=86400)
    #: a READ takes the DS18B20 conversion (750 ms) plus probe settling and sampling
    reply_timeout_s: float = Field(default=3.0, gt=0, le=30)
    retries: int = Field(default=2, ge=1, le=5)
    emit_raw: bool = True

    @model_validator(mode="after")
    def _distinct_names(self) -> SensorNodeConfig:
        names = [(p.label, p.quantity) for p in self.probes] + [
            (t.label, t.quantity) for t in self.thermometers
        ]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(
                f"two channels would both be reported as {sorted(dup)} (label, quantity); "
                "give each probe/thermometer its own label"
            )
        channels = [p.channel for p in self.probes]
        if len(set(channels)) != len(channels):
            raise ValueError("a probe channel is listed twice")
        return self


# --------------------------------------------------------------------------------------------
# The link: commands, replies, counters
# --------------------------------------------------------------------------------------------


class NodeError(DeviceError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def open_node_port(url: str, baudrate: int) -> Any:
    import serial

    return serial.serial_for_url(url, baudrate=baudrate, timeout=0.05, write_timeout=2)


class NodeLink:
    """Command/reply exchange with one node over an open serial port."""

    def __init__(self, port: Any, *, on_event: Callable[[str], None] | None = None) -> None:
        self.port = port
        self.reader = FrameReader()
        self.seq = 0
        self.last_node_seq: int | None = None
        self.on_event = on_event or (lambda _: None)
        self.hello: Frame | None = None

    def _track(self, frame: Frame) -> None:
        if frame.kind == "HELLO":
            self.hello = frame
            if self.last_node_seq is not None:
                self.on_event("node-reboot")
        elif self.last_node_seq is not None:
            expected = (self.last_node_seq + 1) & 0xFFFF
            if frame.seq != expected:
                self.on_event("link-seq-gap")
        self.last_node_seq = frame.seq

    def frames(self, timeout: float) -> Iterator[Frame]:
        """Valid frames arriving within ``timeout``; bad ones are counted and skipped."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = self.port.read(max(1, self.port.in_waiting))
            if not chunk:
                continue
            noise_before = self.reader.noise_bytes
            for item in self.reader.feed(chunk):
                if isinstance(item, FrameError):
                    self.on_event(f"link-{item.reason}")
                    continue
                self._track(item)
                yield item
            if self.reader.noise_bytes > noise_before:
                self.on_event("link-noise")

    def drain(self) -> None:
        """Take in whatever the node pushed since the last exchange (to keep counters right)."""
        for _ in self.frames(0.0 if not self.port.in_waiting else 0.05):
            pass

    def request(
        self, kind: str, fields: list[tuple[str, object]] | None, reply: str, timeout: float,
        retries: int,
    ) -> Frame:  # fmt: skip
        """Send a command and return the reply frame that names it (``re=<seq>``)."""
        last = "no reply"
        for _ in range(retries):
            self.seq = (self.seq + 1) & 0xFFFF
            self.drain()
            self.port.write(encode_frame(self.seq, kind, fields))
            self.port.flush()
            for frame in self.frames(timeout):
                if frame.fields.get("re") != str(self.seq):
                    continue  # a push, or a late reply to an earlier command
                if frame.kind == "ERR":
                    code = frame.fields.get("code", "?")
                    raise NodeError("node-error", f"node refused {kind}: {code}")
                if frame.kind == reply:
                    return frame
                last = f"unexpected {frame.kind} reply to {kind}"
            # a reply with a bad CRC is dropped above: asking again is the recovery
        raise NodeError("no-reply", f"{last} to {kind} within {timeout} s ({retries} tries)")


def probe_node(url: str, baudrate: int = 115200, timeout: float = 2.0) -> dict[str, str] | None:
    """The node's IDENT answer on ``url``, or None if no node answers (for ``sensors scan``)."""
    port = open_node_port(url, baudrate)
    try:
        return NodeLink(port).request("IDENT", None, "ID", timeout, 1).fields
    except NodeError:
        return None
    finally:
        port.close()


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


@register
class SensorNodeSensor(SensorDriver):
    kind: ClassVar[str] = "sensor_node"
    Config: ClassVar[type[SensorConfig]] = SensorNodeConfig

    def __init__(
        self, config: SensorConfig, *, port_factory: Callable[[str, int], Any] = open_node_port
    ) -> None:
        super().__init__(config)
        assert isinstance(config, SensorNodeConfig)
        self.cfg = config
        self._port_factory = port_factory
        self._link: NodeLink | None = None
        self.store = CalibrationStore(config.calibration_file) if config.calibration_file else None

    def sensor_name(self, label: str) -> str:
        """The SenML sensor name of a channel: the node's name, plus ".<label>" if labelled."""
        return f"{self.name}.{label}" if label else self.name

    def calibration_for(self, probe: NodeProbe) -> tuple[TwoPointCalibration | None, str]:
        """The calibration in force for ``probe`` and where it came from."""
        try:
            return resolve_calibration(
                probe.inline(), self.store, self.sensor_name(probe.label), f"m{probe.channel}"
            )
        except ValueError as exc:  # a corrupt calibration file
            self.last_error = str(exc)
            return None, ""

    def _event(self, what: str) -> None:
        self.errors[what] += 1
        if what == "node-reboot":
            log.warning("%s: node on %s rebooted", self.name, self.cfg.port)

    def link(self) -> NodeLink:
        if self._link is None:
            try:
                port = self._port_factory(self.cfg.port, self.cfg.baudrate)
            except Exception as exc:
                raise NodeError(
                    "port-unavailable",
                    f"cannot open {self.cfg.port}: {exc}; is the node's USB-serial cable in?",
                ) from None
            self._link = NodeLink(port, on_event=self._event)
            with contextlib.suppress(NodeError):  # the READ below will say what is wrong
                self._link.request(
                    "INTERVAL", [("s", self.cfg.push_interval_s)], "OK",
                    self.cfg.reply_timeout_s, self.cfg.retries,
                )  # fmt: skip
        return self._link

    def _wanted(self) -> list[tuple[str, str, str]]:
        out = []
        for p in self.cfg.probes:
            out.append((self.sensor_name(p.label), p.quantity, QUANTITY_UNITS.get(p.quantity, "/")))
            if self.cfg.emit_raw:
                out.append((self.sensor_name(p.label), f"{p.quantity}_raw", "count"))
        for t in self.cfg.thermometers:
            out.append((self.sensor_name(t.label), t.quantity, "Cel"))
        return out

    def _gap(self, sensor: str, quantity: str, unit: str, now: float, reason: str) -> Reading:
        gap = self.missing(quantity, unit, now, reason)
        return Reading(sensor, quantity, unit, None, now, reason) if sensor != self.name else gap

    def read(self, now: float) -> list[Reading]:
        where = f"sensor node on {self.cfg.port}"
        try:
            link = self.link()
            frame = link.request("READ", None, "R", self.cfg.reply_timeout_s, self.cfg.retries)
        except NodeError as exc:
            advice = (
                " — check the cable, the node's power and baudrate"
                if exc.reason == "no-reply"
                else ""
            )
            out = [self._gap(s, q, u, now, exc.reason) for s, q, u in self._wanted()]
            self.last_error = f"{where}: {exc}{advice}"
            return out
        except Exception as exc:  # serial failure: reopen next time
            out = [self._gap(s, q, u, now, "port-error") for s, q, u in self._wanted()]
            self.last_error = f"{where}: {type(exc).__name__}: {exc}"
            self.close()
            return out
        return self._readings(frame.fields, now, where)

    def _readings(self, fields: dict[str, str], now: float, where: str) -> list[Reading]:
        out: list[Reading] = []
        for p in self.cfg.probes:
            sensor = self.sensor_name(p.label)
            unit = QUANTITY_UNITS.get(p.quantity, "/")
            raw_text = fields.get(f"m{p.channel}")
            raw = _number(raw_text)
            if raw is None:
                reason = raw_text[1:] if raw_text and raw_text.startswith("!") else "no-channel"
                out.append(self._gap(sensor, p.quantity, unit, now, reason))
                if self.cfg.emit_raw:
                    out.append(self._gap(sensor, f"{p.quantity}_raw", "count", now, reason))
                self.last_error = f"{where}: probe m{p.channel} gave {raw_text!r}"
                continue
            cal, _ = self.calibration_for(p)
            if cal is None:
                out.append(self._gap(sensor, p.quantity, unit, now, "uncalibrated"))
                self.last_error = (
                    f"{where}: probe m{p.channel} has no dry/wet calibration; run "
                    f"`fieldproof gateway calibrate {self.name}`"
                )
            elif raw <= 0 or raw >= 65535:
                out.append(self._gap(sensor, p.quantity, unit, now, "disconnected"))
                self.last_error = f"{where}: probe m{p.channel} reads {raw:g}: unplugged or shorted"
            else:
                vwc, reason = cal.apply(raw)
                if vwc is None:
                    out.append(self._gap(sensor, p.quantity, unit, now, reason))
                    self.last_error = (
                        f"{where}: probe m{p.channel} raw {raw:g} is far outside its dry "
                        f"{cal.dry:g} / wet {cal.wet:g} calibration; recalibrate or check the probe"
                    )
                else:
                    out.append(Reading(sensor, p.quantity, unit, vwc, now))
            if self.cfg.emit_raw:
                out.append(Reading(sensor, f"{p.quantity}_raw", "count", raw, now))
        known = set()
        for t in self.cfg.thermometers:
            known.add(t.rom)
            sensor = self.sensor_name(t.label)
            text = fields.get(f"d{t.rom}")
            value = _number(text)
            if value is None:
                reason = {"!85": "power-on-value", "!crc": "crc"}.get(text or "", "disconnected")
                out.append(self._gap(sensor, t.quantity, "Cel", now, reason))
                self.last_error = f"{where}: DS18B20 {t.rom}: {reason}"
            elif plausible(t.quantity, value) is False:
                out.append(self._gap(sensor, t.quantity, "Cel", now, "out-of-range"))
            else:
                out.append(Reading(sensor, t.quantity, "Cel", value, now))
        for key, text in sorted(fields.items()):
            # a DS18B20 nobody configured yet: report it rather than drop it
            value = _number(text)
            if key.startswith("d28") and key[1:] not in known and value is not None:
                out.append(
                    Reading(self.sensor_name(key[1:]), "soil_temperature", "Cel", value, now)
                )
        return out

    # -- used by the CLI ---------------------------------------------------------------------

    def identify(self) -> dict[str, str]:
        link = self.link()
        return link.request("IDENT", None, "ID", self.cfg.reply_timeout_s, self.cfg.retries).fields

    def calibration_point(self, channel: int, point: str) -> float:
        """Ask the node for a long-averaged raw count of probe ``channel`` (dry or wet)."""
        link = self.link()
        frame = link.request(
            "CAL", [("probe", channel), ("point", point)], "CAL",
            max(self.cfg.reply_timeout_s, 5.0), self.cfg.retries,
        )  # fmt: skip
        raw = _number(frame.fields.get("raw"))
        if raw is None:
            raise NodeError("bad-reply", f"calibration reply without a raw count: {frame}")
        return raw

    def close(self) -> None:
        if self._link is not None:
            try:
                self._link.port.close()
            except Exception as exc:
                log.warning("%s: closing %s: %s", self.name, self.cfg.port, exc)
            self._link = None


def _number(text: str | None) -> float | None:
    if not text or text.startswith("!"):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None
