"""RS-485 Modbus-RTU soil probes (moisture, temperature, EC, pH, N/P/K) through pymodbus.

Every vendor numbers its registers differently, so the register map is data: a built-in map
from :mod:`gateway.sensors.modbus_maps` chosen by ``model``, or a custom ``map`` table in the
config. Several probes share one bus (one USB-RS485 adapter) and differ by slave id; they
share one pymodbus client and take turns under a lock, because RS-485 is half duplex and the
port can be opened only once.

A probe that does not answer costs one timeout per read, not one per register: the first
timeout marks the rest of that probe's quantities missing too. pymodbus logs every timeout at
ERROR level; identical messages are let through once per ``LOG_REPEAT_S`` so a dead probe
does not fill the SD card."""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fieldproof.errors import DeviceError
from fieldproof.wire import Reading
from gateway.sensors.base import (
    QUANTITY_UNITS,
    SensorConfig,
    SensorDriver,
    plausible,
    register,
)
from gateway.sensors.modbus_maps import BUILTIN_MAPS

log = logging.getLogger(__name__)

LOG_REPEAT_S = 600.0
_WIDTH = {"uint16": 1, "int16": 1, "uint32": 2, "int32": 2, "float32": 2}


class RegisterSpec(BaseModel):
    """One quantity: where it is, how it is encoded, how to scale it to its SenML unit."""

    model_config = ConfigDict(extra="forbid")

    quantity: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    address: int = Field(ge=0, le=0xFFFF)
    type: Literal["uint16", "int16", "uint32", "int32", "float32"] = "uint16"
    scale: float = 1.0
    offset: float = 0.0
    #: SenML unit; defaults to the quantity's usual unit
    unit: str = ""
    #: for 32-bit values: which register holds the high word
    word_order: Literal["big", "little"] = "big"

    @property
    def width(self) -> int:
        return _WIDTH[self.type]

    @property
    def senml_unit(self) -> str:
        return self.unit or QUANTITY_UNITS.get(self.quantity, "")

    def decode(self, words: list[int]) -> float:
        if self.width == 2:
            hi, lo = (words[0], words[1]) if self.word_order == "big" else (words[1], words[0])
            raw_bytes = struct.pack(">HH", hi, lo)
            raw: float = {
                "uint32": lambda b: struct.unpack(">I", b)[0],
                "int32": lambda b: struct.unpack(">i", b)[0],
                "float32": lambda b: struct.unpack(">f", b)[0],
            }[self.type](raw_bytes)
        else:
            raw = words[0] - 0x10000 if self.type == "int16" and words[0] & 0x8000 else words[0]
        return raw * self.scale + self.offset


class RegisterMap(BaseModel):
    """A probe model's registers and factory serial settings."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    source: str = ""
    #: 3 = read holding registers, 4 = read input registers
    function: Literal[3, 4] = 3
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    registers: list[RegisterSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> RegisterMap:
        seen = [r.quantity for r in self.registers]
        dup = {q for q in seen if seen.count(q) > 1}
        if dup:
            raise ValueError(f"quantities listed twice: {sorted(dup)}")
        return self


def builtin_map(model: str) -> RegisterMap:
    return RegisterMap.model_validate(BUILTIN_MAPS[model])


class ModbusSoilConfig(SensorConfig):
    kind: str = "modbus_soil"
    #: serial device (or any pyserial URL); use /dev/serial/by-id/... so it survives replugging
    port: str
    slave_id: int = Field(default=1, ge=1, le=247)
    #: a built-in map name (see modbus_maps.BUILTIN_MAPS) ...
    model: str = ""
    #: ... or a custom register map table
    map: RegisterMap | None = None
    #: read only these quantities of the map (empty: all)
    quantities: list[str] = Field(default_factory=list)
    baudrate: int | None = Field(default=None, ge=300, le=115200)
    parity: Literal["N", "E", "O"] | None = None
    stopbits: Literal[1, 2] | None = None
    timeout_s: float = Field(default=1.0, gt=0, le=10)
    #: pymodbus re-sends a request this many times before giving up
    retries: int = Field(default=1, ge=0, le=5)

    @model_validator(mode="after")
    def _one_map(self) -> ModbusSoilConfig:
        if bool(self.model) == (self.map is not None):
            raise ValueError(
                f"set exactly one of model (one of {', '.join(sorted(BUILTIN_MAPS))}) or map"
            )
        if self.model and self.model not in BUILTIN_MAPS:
            raise ValueError(
                f"model {self.model!r} has no built-in map; known: "
                f"{', '.join(sorted(BUILTIN_MAPS))} (or give a custom map table)"
            )
        rmap = self.register_map()
        unknown = set(self.quantities) - {r.quantity for r in rmap.registers}
        if unknown:
            raise ValueError(f"quantities {sorted(unknown)} are not in this probe's map")
        return self

    def register_map(self) -> RegisterMap:
        return self.map if self.map is not None else builtin_map(self.model)

    def line_settings(self) -> tuple[int, str, int]:
        rmap = self.register_map()
        return (
            self.baudrate or rmap.baudrate,
            self.parity or rmap.parity,
            self.stopbits or rmap.stopbits,
        )


# --------------------------------------------------------------------------------------------
# One client per serial port, shared by every probe on that bus
# --------------------------------------------------------------------------------------------


class BusError(DeviceError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class _Bus:
    port: str
    settings: tuple[int, str, int]
    client: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: set[int] = field(default_factory=set)
    #: bytes received since the last request (pymodbus's packet trace), to tell a silent probe
    #: from a corrupted reply or a reply from another slave id after a timeout
    rx: bytes = b""

    def trace(self, sending: bool, data: bytes) -> bytes:
        if sending:
            self.rx = b""
        elif len(data) >= len(self.rx):
            self.rx = bytes(data)
        return data


def crc16_modbus(data: bytes) -> int:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def other_slave_in(rx: bytes, slave: int) -> int | None:
    """The id of a CRC-valid reply from a slave other than ``slave`` found in ``rx``."""
    for i in range(len(rx) - 4):
        sid, func = rx[i], rx[i + 1]
        length = 5 if func & 0x80 else 5 + rx[i + 2]
        frame = rx[i : i + length]
        if (
            sid != slave
            and len(frame) == length
            and crc16_modbus(frame[:-2]) == int.from_bytes(frame[-2:], "little")
        ):
            return sid
    return None


_BUSES: dict[str, _Bus] = {}
_BUSES_LOCK = threading.Lock()


def _make_client(
    port: str,
    settings: tuple[int, str, int],
    timeout: float,
    retries: int,
    trace: Callable[[bool, bytes], bytes] | None = None,
) -> Any:
    from pymodbus.client import ModbusSerialClient

    baud, parity, stop = settings
    return ModbusSerialClient(
        port, baudrate=baud, parity=parity, stopbits=stop, bytesize=8,
        timeout=timeout, retries=retries, name=f"rs485:{port}", trace_packet=trace,
    )  # fmt: skip


def _acquire(owner: int, cfg: ModbusSoilConfig) -> _Bus:
    settings = cfg.line_settings()
    with _BUSES_LOCK:
        bus = _BUSES.get(cfg.port)
        if bus is None:
            bus = _Bus(cfg.port, settings, None)
            bus.client = _make_client(cfg.port, settings, cfg.timeout_s, cfg.retries, bus.trace)
            _BUSES[cfg.port] = bus
        elif bus.settings != settings:
            b, p, s = bus.settings
            raise BusError(
                "bus-conflict",
                f"{cfg.port} is already open at {b} 8{p}{s} for another probe, this one wants "
                f"{settings[0]} 8{settings[1]}{settings[2]}: every probe on one RS-485 bus must "
                "use the same settings (reconfigure the probe or use a second adapter)",
            )
        bus.users.add(owner)
        return bus


def _release(owner: int, port: str) -> None:
    with _BUSES_LOCK:
        bus = _BUSES.get(port)
        if bus is None:
            return
        bus.users.discard(owner)
        if not bus.users:
            del _BUSES[port]
            with bus.lock:
                bus.client.close()


class _RepeatFilter(logging.Filter):
    """Let each distinct pymodbus message through once per LOG_REPEAT_S."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()[:120]
        now = time.monotonic()
        if now - self._seen.get(key, -LOG_REPEAT_S) < LOG_REPEAT_S:
            return False
        self._seen[key] = now
        if len(self._seen) > 1000:
            self._seen.clear()
        return True


_pymodbus_logger = logging.getLogger("pymodbus.logging")
if not any(isinstance(f, _RepeatFilter) for f in _pymodbus_logger.filters):
    _pymodbus_logger.addFilter(_RepeatFilter())


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    start: int
    count: int
    specs: tuple[RegisterSpec, ...]


def plan_blocks(specs: list[RegisterSpec]) -> list[_Block]:
    """Group registers into contiguous runs: one request each. Gaps are not bridged because
    many probes answer "illegal data address" for registers they do not implement."""
    blocks: list[_Block] = []
    for spec in sorted(specs, key=lambda s: s.address):
        last = blocks[-1] if blocks else None
        if last is not None and spec.address == last.start + last.count:
            blocks[-1] = _Block(last.start, last.count + spec.width, (*last.specs, spec))
        else:
            blocks.append(_Block(spec.address, spec.width, (spec,)))
    return blocks


_EXCEPTION_NAMES = {1: "illegal function", 2: "illegal data address", 3: "illegal data value",
                    4: "device failure", 6: "device busy"}  # fmt: skip


@register
class ModbusSoilSensor(SensorDriver):
    kind: ClassVar[str] = "modbus_soil"
    Config: ClassVar[type[SensorConfig]] = ModbusSoilConfig

    def __init__(self, config: SensorConfig) -> None:
        super().__init__(config)
        assert isinstance(config, ModbusSoilConfig)
        self.cfg = config
        self.map = config.register_map()
        wanted = set(config.quantities)
        self.specs = [r for r in self.map.registers if not wanted or r.quantity in wanted]
        self.blocks = plan_blocks(self.specs)
        self._bus: _Bus | None = None
        self._failing = False

    def _where(self) -> str:
        b, p, s = self.cfg.line_settings()
        model = self.cfg.model or "custom map"
        return f"{model} slave {self.cfg.slave_id} on {self.cfg.port} ({b} 8{p}{s})"

    def _all_missing(self, now: float, reason: str, detail: str) -> list[Reading]:
        out = [self.missing(s.quantity, s.senml_unit, now, reason) for s in self.specs]
        self._note_failure(detail)
        return out

    def _note_failure(self, detail: str) -> None:
        self.last_error = detail
        if not self._failing:
            log.warning("%s: %s", self.name, detail)
        self._failing = True

    def _read_block(self, bus: _Bus, block: _Block) -> tuple[list[int] | None, str, str]:
        """Registers of one block, or (None, wire reason, what to tell the technician)."""
        from pymodbus.exceptions import ConnectionException, ModbusIOException

        client = bus.client
        fn = (client.read_holding_registers if self.map.function == 3
              else client.read_input_registers)  # fmt: skip
        where = f"{self._where()} registers {block.start:#06x}+{block.count}"
        try:
            rr = fn(block.start, count=block.count, device_id=self.cfg.slave_id)
        except ModbusIOException as exc:
            other = other_slave_in(bus.rx, self.cfg.slave_id)
            if other is not None or "device id" in str(exc):
                return None, "wrong-slave", (
                    f"{where}: the reply came from slave id {other}; two probes may share an "
                    "address — give each a unique slave id"
                )  # fmt: skip
            if bus.rx:
                return None, "bad-frame", (
                    f"{where}: only corrupted replies ({len(bus.rx)} bytes, bad CRC or cut "
                    f"short) within {self.cfg.timeout_s} s; check cable shielding, the 120 Ω "
                    "terminator and that A/B are not swapped"
                )  # fmt: skip
            return None, "timeout", (
                f"{where}: no reply within {self.cfg.timeout_s} s "
                f"({self.cfg.retries + 1} tries); check A/B wiring, probe power, slave id and "
                "baud rate"
            )  # fmt: skip
        except ConnectionException as exc:
            client.close()
            return None, "port-unavailable", (
                f"{where}: serial port failed ({exc}); is the USB-RS485 adapter plugged in?"
            )  # fmt: skip
        except Exception as exc:  # any other pymodbus/pyserial failure is one bad read
            return None, "bus-error", f"{where}: {type(exc).__name__}: {exc}"
        if rr.isError():
            code = int(getattr(rr, "exception_code", 0) or 0)
            name = _EXCEPTION_NAMES.get(code, "error")
            return None, f"modbus-exception-{code}", (
                f"{where}: probe answered exception {code} ({name}); the register map does "
                "not match this probe — check model/map"
            )  # fmt: skip
        words = list(rr.registers)
        if len(words) != block.count:
            return None, "bad-frame", f"{where}: got {len(words)} registers, asked {block.count}"
        return words, "", ""

    def read(self, now: float) -> list[Reading]:
        try:
            if self._bus is None:
                self._bus = _acquire(id(self), self.cfg)
        except BusError as exc:
            return self._all_missing(now, exc.reason, str(exc))
        bus = self._bus
        results: dict[str, tuple[float | None, str]] = {}
        failure = ""
        with bus.lock:
            if not bus.client.connect():
                return self._all_missing(
                    now, "port-unavailable",
                    f"cannot open {self.cfg.port}: is the USB-RS485 adapter plugged in? "
                    "(ls /dev/serial/by-id)",
                )  # fmt: skip
            for block in self.blocks:
                words, reason, detail = self._read_block(bus, block)
                if words is None:
                    failure = detail
                    for spec in block.specs:
                        results[spec.quantity] = (None, reason)
                    if reason in ("timeout", "bad-frame", "port-unavailable"):
                        break  # a silent probe costs one timeout, not one per block
                    continue
                offset = 0
                for spec in block.specs:
                    decoded = spec.decode(words[offset : offset + spec.width])
                    offset += spec.width
                    if plausible(spec.quantity, decoded) is False:
                        results[spec.quantity] = (None, "out-of-range")
                        failure = f"{self._where()}: {spec.quantity} = {decoded:g} is implausible"
                    else:
                        results[spec.quantity] = (round(decoded, 7), "")
        out: list[Reading] = []
        # blocks skipped after a silent/corrupt one share its reason
        skipped = next((r for v, r in results.values() if v is None), "timeout")
        for spec in self.specs:
            value, reason = results.get(spec.quantity, (None, skipped))
            if value is None:
                out.append(self.missing(spec.quantity, spec.senml_unit, now, reason))
            else:
                out.append(Reading(self.name, spec.quantity, spec.senml_unit, value, now))
        if failure:
            self._note_failure(failure)
        elif self._failing:
            log.info("%s: %s answers again", self.name, self._where())
            self._failing = False
        return out

    def close(self) -> None:
        if self._bus is not None:
            _release(id(self), self.cfg.port)
            self._bus = None


def scan_bus(
    port: str,
    *,
    baudrate: int = 9600,
    parity: str = "N",
    stopbits: int = 1,
    ids: range = range(1, 248),
    address: int = 0,
    function: int = 3,
    timeout_s: float = 0.2,
) -> list[int]:
    """Slave ids that answer on ``port`` (an exception reply counts: something is there)."""
    from pymodbus.exceptions import ModbusException

    client = _make_client(port, (baudrate, parity, stopbits), timeout_s, 0)
    found: list[int] = []
    try:
        if not client.connect():
            raise OSError(f"cannot open {port}")
        fn = client.read_holding_registers if function == 3 else client.read_input_registers
        for slave in ids:
            try:
                fn(address, count=1, device_id=slave)
            except ModbusException:
                continue
            found.append(slave)
    finally:
        client.close()
    return found
