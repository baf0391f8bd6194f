"""SDI-12 probes (METER TEROS 11/12 and other research-grade sensors) on a serial adapter.

SDI-12 v1.4 over an RS-232/USB adapter: 1200 baud, 7 data bits, even parity, 1 stop bit, one
shared data line. Before each command the recorder holds a break (spacing) for at least 12 ms
and then marks for at least 8.33 ms — that wakes sleeping sensors. pyserial's ``send_break``
sleeps in whole 250 ms steps on POSIX and cannot make a precise short break, so the break is
made by setting and clearing ``break_condition`` around a timed sleep.

Exchange for one reading (``a`` = the sensor's address)::

    aM! / aMC!  →  atttn        ttt seconds until ready, n values (MC: data carry a CRC)
                 ←  a           service request when ready (or wait ttt and ask anyway)
    aD0!        →  a+v+v…[CRC]  repeated with D1, D2… until n values are in

No PyPI library implements this, so it is here on plain pyserial. Adapters that tie TX to RX
echo the command back; the echo is stripped. Bytes are masked to 7 bits because some adapters
hand the parity bit up as bit 7. Several sensors share one bus and one port, with distinct
addresses; they take turns under a lock."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldproof.errors import DeviceError
from fieldproof.wire import Reading
from gateway.sensors.base import QUANTITY_UNITS, SensorConfig, SensorDriver, plausible, register

log = logging.getLogger(__name__)

ADDRESSES = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
BREAK_MIN_S = 0.012
MARK_MIN_S = 0.00833
_VALUE_RE = re.compile(r"[+-]\d+(?:\.\d+)?")


# --------------------------------------------------------------------------------------------
# Protocol pieces
# --------------------------------------------------------------------------------------------


def crc16_sdi12(text: str) -> int:
    """CRC-16 of SDI-12 §4.4.12: polynomial 0xA001 (reflected), initial value 0."""
    crc = 0
    for ch in text.encode("ascii"):
        crc ^= ch
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def encode_crc(crc: int) -> str:
    """The three printable characters SDI-12 sends for a CRC (6 bits each, 0x40 added)."""
    return "".join(chr(0x40 | (crc >> shift) & 0x3F) for shift in (12, 6, 0))


def check_crc(line: str) -> str:
    """``line`` without its CRC, or raise :class:`SDI12Error` if the CRC is wrong."""
    if len(line) < 4 or encode_crc(crc16_sdi12(line[:-3])) != line[-3:]:
        raise SDI12Error("bad-crc", f"CRC mismatch in {line!r}")
    return line[:-3]


def parse_values(text: str) -> list[float]:
    """The signed values of a data response body (``+1.23-4+0.5``)."""
    values = _VALUE_RE.findall(text)
    if "".join(values) != text:
        raise SDI12Error("bad-response", f"not a list of signed values: {text!r}")
    return [float(v) for v in values]


@dataclass(frozen=True)
class Identification:
    sdi_version: str
    vendor: str
    model: str
    version: str
    extra: str

    def __str__(self) -> str:
        return f"{self.vendor} {self.model} v{self.version} {self.extra}".strip()


def parse_identification(address: str, line: str) -> Identification:
    """``allccccccccmmmmmmvvvxxx…`` → its fields (SDI-12 §4.4.3)."""
    body = line[1:]
    if not line.startswith(address) or len(body) < 19:
        raise SDI12Error("bad-response", f"not an identification: {line!r}")
    return Identification(
        body[0:2], body[2:10].strip(), body[10:16].strip(), body[16:19], body[19:].strip()
    )


class SDI12Error(DeviceError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class SDI12Bus:
    """Commands on an open serial port; one instance per port, used under its lock."""

    def __init__(
        self,
        port: Any,
        *,
        break_s: float = 0.015,
        mark_s: float = 0.010,
        response_timeout_s: float = 0.5,
        retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.port = port
        self.break_s = max(break_s, BREAK_MIN_S)
        self.mark_s = max(mark_s, MARK_MIN_S)
        self.response_timeout_s = response_timeout_s
        self.retries = retries
        self._sleep = sleep
        self.lock = threading.Lock()

    def wake(self) -> None:
        """Break ≥ 12 ms, then marking ≥ 8.33 ms (SDI-12 §7.1)."""
        self.port.break_condition = True
        self._sleep(self.break_s)
        self.port.break_condition = False
        self._sleep(self.mark_s)

    def read_line(self, timeout: float) -> str | None:
        """One CR LF-terminated line (7-bit, without CR LF), or None on timeout."""
        deadline = time.monotonic() + timeout
        buf = bytearray()
        while time.monotonic() < deadline:
            chunk = self.port.read(max(1, self.port.in_waiting))
            if not chunk:
                continue
            buf.extend(b & 0x7F for b in chunk)
            if buf.endswith(b"\r\n"):
                return buf[:-2].decode("ascii", errors="replace")
        return None

    def command(self, cmd: str, expect: str = "") -> str:
        """Send ``cmd`` and return the sensor's response line (echo and noise stripped).

        ``expect`` is a regular expression the whole line must match; other lines (noise, a
        late service request) are skipped, and after ``response_timeout_s`` the command is
        sent again behind a fresh break, ``retries`` times in all (SDI-12 §7.2)."""
        address = cmd[0]
        pattern = re.compile(
            expect or (re.escape(address) + ".*") if cmd != "?!" else "[0-9a-zA-Z]"
        )
        last = f"no response to {cmd!r}"
        for _ in range(self.retries):
            self.port.reset_input_buffer()
            self.wake()
            self.port.write(cmd.encode("ascii"))
            self.port.flush()
            while (line := self.read_line(self.response_timeout_s)) is not None:
                if cmd in line:  # adapter echo of our own command, possibly glued to the reply
                    line = line.split(cmd, 1)[1]
                    if not line:
                        continue
                line = line.lstrip("\x00")
                if pattern.fullmatch(line):
                    return line
                last = f"unexpected response {line!r} to {cmd!r}"
        raise SDI12Error("no-response" if last.startswith("no response") else "bad-response", last)

    def acknowledge(self, address: str) -> bool:
        try:
            return self.command(f"{address}!") == address
        except SDI12Error:
            return False

    def identify(self, address: str) -> Identification:
        return parse_identification(
            address, self.command(f"{address}I!", re.escape(address) + r"\d\d.{17,}")
        )

    def measure(self, address: str, *, crc: bool = True, max_wait_s: float = 120.0) -> list[float]:
        """Start a measurement, wait for it, and collect its values from D0, D1, …"""
        cmd = f"{address}MC!" if crc else f"{address}M!"
        line = self.command(cmd, re.escape(address) + r"\d{4}")
        m = re.fullmatch(re.escape(address) + r"(\d{3})(\d)", line)
        if not m:
            raise SDI12Error("bad-response", f"{cmd} answered {line!r}, expected a+ttt+n")
        ready_in, count = int(m.group(1)), int(m.group(2))
        if ready_in > max_wait_s:
            raise SDI12Error(
                "bad-response", f"sensor asks {ready_in} s for a measurement (limit {max_wait_s})"
            )
        if ready_in:
            # the service request "a" arrives when data are ready; without one, ask at ttt
            deadline = time.monotonic() + ready_in + 0.1
            while (left := deadline - time.monotonic()) > 0:
                request = self.read_line(left)
                if request is None or request.lstrip("\x00") == address:
                    break
        values: list[float] = []
        for page in range(10):
            if len(values) >= count:
                break
            values.extend(self._data_page(address, page, crc))
            if not values and page == 0:
                raise SDI12Error("short-data", f"{address}D0! returned no values")
        if len(values) < count:
            raise SDI12Error(
                "short-data", f"got {len(values)} of {count} values (measurement aborted?)"
            )
        return values[:count]

    def _data_page(self, address: str, page: int, crc: bool) -> list[float]:
        cmd = f"{address}D{page}!"
        last: SDI12Error | None = None
        for _ in range(self.retries):
            # with a CRC even an empty page has 3 more characters, so a lone address (a late
            # service request) is skipped; without one it cannot be told from an empty page
            line = self.command(cmd, re.escape(address) + (r".{3,}" if crc else r"([+-].*)?"))
            try:
                body = check_crc(line) if crc else line
                return parse_values(body[len(address) :])
            except SDI12Error as exc:  # garbled page: the data stay in the sensor, ask again
                last = exc
        assert last is not None
        raise last


# --------------------------------------------------------------------------------------------
# One open port per serial device, shared by the sensors on it
# --------------------------------------------------------------------------------------------


@dataclass
class _Shared:
    bus: SDI12Bus
    users: set[int] = field(default_factory=set)


_PORTS: dict[str, _Shared] = {}
_PORTS_LOCK = threading.Lock()


def open_port(url: str, timeout: float = 0.05) -> Any:
    """1200 7E1 on a device path or any pyserial URL (``spy://``, ``rfc2217://``)."""
    import serial

    return serial.serial_for_url(
        url,
        baudrate=1200,
        bytesize=serial.SEVENBITS,
        parity=serial.PARITY_EVEN,
        stopbits=serial.STOPBITS_ONE,
        timeout=timeout,
    )


# --------------------------------------------------------------------------------------------
# TEROS 11/12: METER's published conversions (TEROS 11/12 user manual §4.1)
# --------------------------------------------------------------------------------------------


def teros_vwc(raw: float, medium: str = "mineral") -> float:
    """Volumetric water content (m³/m³) from TEROS calibrated counts."""
    if medium == "soilless":
        return 6.771e-10 * raw**3 - 5.105e-6 * raw**2 + 1.302e-2 * raw - 10.848
    return 3.879e-4 * raw - 0.6956


def teros_permittivity(raw: float) -> float:
    """Apparent dielectric permittivity from TEROS calibrated counts."""
    return float((2.887e-9 * raw**3 - 2.080e-5 * raw**2 + 5.276e-2 * raw - 43.39) ** 2)


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


class SDI12Value(BaseModel):
    """Position i of a generic sensor's values → a quantity (empty quantity: ignore)."""

    model_config = ConfigDict(extra="forbid")

    quantity: str = ""
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0


class SDI12Config(SensorConfig):
    kind: str = "sdi12"
    port: str
    address: str = Field(default="0", pattern=r"^[0-9a-zA-Z]$")
    probe: Literal["teros11", "teros12", "generic"] = "teros12"
    #: TEROS calibration equation: mineral soil or soilless media (potting soil, peat, perlite)
    medium: Literal["mineral", "soilless"] = "mineral"
    #: for probe = "generic": what each value of aD0!/aD1!… is
    values: list[SDI12Value] = Field(default_factory=list)
    #: use aMC! and check each data line's CRC
    crc: bool = True
    #: also send the raw counts (unit "count") so VWC can be recomputed later
    emit_raw: bool = True
    response_timeout_s: float = Field(default=0.5, gt=0, le=5)
    retries: int = Field(default=3, ge=1, le=10)
    break_s: float = Field(default=0.015, ge=BREAK_MIN_S, le=1)
    max_wait_s: float = Field(default=120, gt=0, le=999)

    @model_validator(mode="after")
    def _generic_needs_values(self) -> SDI12Config:
        if self.probe == "generic" and not any(v.quantity for v in self.values):
            raise ValueError("probe = 'generic' needs values = [{quantity = ...}, ...]")
        return self


_TEROS_OUT = {
    "teros11": ["soil_moisture", "soil_temperature"],
    "teros12": ["soil_moisture", "soil_temperature", "soil_ec"],
}


@register
class SDI12Sensor(SensorDriver):
    kind: ClassVar[str] = "sdi12"
    Config: ClassVar[type[SensorConfig]] = SDI12Config

    def __init__(
        self, config: SensorConfig, *, port_factory: Callable[[str], Any] = open_port
    ) -> None:
        super().__init__(config)
        assert isinstance(config, SDI12Config)
        self.cfg = config
        self._port_factory = port_factory
        self._shared: _Shared | None = None

    def quantities(self) -> list[tuple[str, str]]:
        """(quantity, unit) this sensor reports, in order."""
        if self.cfg.probe == "generic":
            return [
                (v.quantity, v.unit or QUANTITY_UNITS.get(v.quantity, ""))
                for v in self.cfg.values
                if v.quantity
            ]
        out = [(q, QUANTITY_UNITS[q]) for q in _TEROS_OUT[self.cfg.probe]]
        if self.cfg.emit_raw:
            out.append(("soil_moisture_raw", "count"))
        return out

    def _bus(self) -> SDI12Bus:
        if self._shared is None:
            with _PORTS_LOCK:
                shared = _PORTS.get(self.cfg.port)
                if shared is None:
                    try:
                        port = self._port_factory(self.cfg.port)
                    except Exception as exc:
                        raise SDI12Error(
                            "port-unavailable",
                            f"cannot open {self.cfg.port}: {exc}; "
                            "is the SDI-12 adapter plugged in?",
                        ) from None
                    shared = _Shared(
                        SDI12Bus(
                            port,
                            break_s=self.cfg.break_s,
                            response_timeout_s=self.cfg.response_timeout_s,
                            retries=self.cfg.retries,
                        )
                    )
                    _PORTS[self.cfg.port] = shared
                shared.users.add(id(self))
                self._shared = shared
        return self._shared.bus

    def _convert(self, values: list[float]) -> list[tuple[str, str, float | None, str]]:
        out: list[tuple[str, str, float | None, str]] = []
        if self.cfg.probe == "generic":
            for spec, value in zip(self.cfg.values, values, strict=False):
                if spec.quantity:
                    unit = spec.unit or QUANTITY_UNITS.get(spec.quantity, "")
                    out.append((spec.quantity, unit, value * spec.scale + spec.offset, ""))
            return out
        raw, temperature = values[0], values[1]
        vwc = teros_vwc(raw, self.cfg.medium)
        # a little below zero is dry soil with air gaps at the needles; further is a fault
        vwc = 0.0 if -0.05 <= vwc < 0 else vwc
        out.append(("soil_moisture", "/", round(vwc, 4), ""))
        out.append(("soil_temperature", "Cel", temperature, ""))
        if self.cfg.probe == "teros12":
            out.append(("soil_ec", "S/m", round(values[2] * 1e-4, 6), ""))
        if self.cfg.emit_raw:
            out.append(("soil_moisture_raw", "count", raw, ""))
        return out

    def _where(self) -> str:
        return f"SDI-12 {self.cfg.probe} address {self.cfg.address!r} on {self.cfg.port}"

    def read(self, now: float) -> list[Reading]:
        wanted = self.quantities()
        need = 3 if self.cfg.probe == "teros12" else 2
        if self.cfg.probe == "generic":
            need = len(self.cfg.values)
        try:
            bus = self._bus()
            with bus.lock:
                values = bus.measure(self.cfg.address, crc=self.cfg.crc,
                                     max_wait_s=self.cfg.max_wait_s)  # fmt: skip
            if len(values) < need:
                raise SDI12Error("short-data", f"{len(values)} values, {need} expected")
        except SDI12Error as exc:
            advice = {
                "no-response": "check the sensor's power and data wire, and its address "
                "(fieldproof gateway sensors scan)",
                "bad-crc": "noise on the data line: shorten or shield the cable",
            }.get(exc.reason, "")
            out = [self.missing(q, u, now, exc.reason) for q, u in wanted]
            self.last_error = f"{self._where()}: {exc}" + (f"; {advice}" if advice else "")
            return out
        except Exception as exc:  # a serial failure is a gap, never a stopped gateway
            out = [self.missing(q, u, now, "port-error") for q, u in wanted]
            self.last_error = f"{self._where()}: {type(exc).__name__}: {exc}"
            self.close()
            return out
        readings = []
        for quantity, unit, value, _ in self._convert(values):
            if value is not None and plausible(quantity, value) is False:
                readings.append(self.missing(quantity, unit, now, "out-of-range"))
                self.last_error = f"{self._where()}: {quantity} = {value:g} is implausible"
            else:
                readings.append(Reading(self.name, quantity, unit, value, now))
        return readings

    def close(self) -> None:
        if self._shared is None:
            return
        with _PORTS_LOCK:
            self._shared.users.discard(id(self))
            if not self._shared.users:
                _PORTS.pop(self.cfg.port, None)
                try:
                    self._shared.bus.port.close()
                except Exception as exc:
                    log.warning("%s: closing %s: %s", self.name, self.cfg.port, exc)
        self._shared = None


def scan(bus: SDI12Bus, addresses: str = ADDRESSES) -> dict[str, Identification | None]:
    """Addresses that acknowledge, with their identification when they give one."""
    found: dict[str, Identification | None] = {}
    for address in addresses:
        if bus.acknowledge(address):
            try:
                found[address] = bus.identify(address)
            except SDI12Error:
                found[address] = None
    return found
