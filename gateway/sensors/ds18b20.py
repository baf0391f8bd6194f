"""DS18B20 temperature probes on the Raspberry Pi's 1-Wire bus, read through the kernel's sysfs.

The ``w1-gpio`` and ``w1-therm`` kernel modules expose each probe as
``/sys/bus/w1/devices/28-<serial>/w1_slave``; reading that file makes the kernel run a
conversion (~750 ms) and returns two lines::

    72 01 4b 46 7f ff 0e 10 57 : crc=57 YES
    72 01 4b 46 7f ff 0e 10 57 t=23125

What goes wrong in the field, and what this driver does about it:

* ``crc=.. NO`` — noise on a long cable corrupted the scratchpad: retry.
* ``t=85000`` with scratchpad ``50 05`` — the power-on reset value, read when the probe browned
  out (parasite power, long cable) before converting: not a temperature, retry.
* all ``ff`` bytes / all ``00`` bytes — nobody answered (data line open or shorted); the kernel
  still prints ``YES`` for all zeros because their CRC is zero: refused, not 0 °C.
* the device directory vanishes — the probe was unplugged (the kernel drops it after a few
  failed searches): ``disconnected``.

The CRC is checked here again over the nine bytes and the temperature is re-derived from the
scratchpad, so a kernel or text glitch cannot pass a value the probe never sent."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from fieldproof.errors import DeviceError
from fieldproof.wire import Reading
from gateway.sensors.base import QUANTITY_UNITS, SensorConfig, SensorDriver, register

DEFAULT_BASE_DIR = Path("/sys/bus/w1/devices")
#: the scratchpad bytes of the power-on reset value +85 °C (0x0550)
POWER_ON_RAW = 0x0550
DS18B20_MIN, DS18B20_MAX = -55.0, 125.0


class DS18B20Config(SensorConfig):
    kind: str = "ds18b20"
    #: ``28-xxxxxxxxxxxx``; empty = the one and only DS18B20 on the bus
    device_id: str = Field(default="", pattern=r"^(28-[0-9a-f]{12})?$")
    base_dir: Path = DEFAULT_BASE_DIR
    quantity: str = Field(default="soil_temperature", pattern=r"^[a-z_]+_temperature$")
    retries: int = Field(default=3, ge=1, le=10)
    retry_delay_s: float = Field(default=0.2, ge=0, le=10)
    #: added to every value: the offset found against a reference thermometer
    offset: float = Field(default=0.0, ge=-5, le=5)


class W1Error(DeviceError):
    """One failed read; ``reason`` is the short code that goes on the wire."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def crc8_maxim(data: bytes) -> int:
    """Dallas/Maxim 1-Wire CRC-8 (poly x^8+x^5+x^4+1, reflected 0x8C, init 0)."""
    crc = 0
    for byte in data:
        for _ in range(8):
            mix = (crc ^ byte) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            byte >>= 1
    return crc


def parse_w1_slave(text: str, where: str) -> float:
    """Temperature in °C from the text of a ``w1_slave`` file, or raise :class:`W1Error`."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    if len(lines) != 2 or " : crc=" not in lines[0] or " t=" not in lines[1]:
        raise W1Error("bad-format", f"{where}: unexpected w1_slave content {text[:80]!r}")
    hex_part, _, verdict = lines[0].partition(" : crc=")
    try:
        scratch = bytes(int(b, 16) for b in hex_part.split())
    except ValueError:
        raise W1Error("bad-format", f"{where}: scratchpad is not hex: {hex_part!r}") from None
    if len(scratch) != 9:
        raise W1Error("bad-format", f"{where}: scratchpad has {len(scratch)} bytes, not 9")
    if scratch == b"\xff" * 9:
        raise W1Error(
            "disconnected",
            f"{where}: no answer on the 1-Wire bus (all ff); check the data wire and the "
            "4.7 kΩ pull-up to 3.3 V",
        )
    if scratch == b"\x00" * 9:
        raise W1Error(
            "disconnected",
            f"{where}: scratchpad all zero (data line held low?); check for a short between "
            "data and ground",
        )
    if not verdict.endswith("YES") or crc8_maxim(scratch[:8]) != scratch[8]:
        raise W1Error("crc", f"{where}: CRC mismatch (noise on the cable); will retry")
    raw = int.from_bytes(scratch[:2], "little", signed=True)
    if raw == POWER_ON_RAW:
        raise W1Error(
            "power-on-value",
            f"{where}: read 85 °C power-on value: the probe reset before converting; check "
            "the supply (use 3-wire power, not parasite) and cable length",
        )
    try:
        milli = int(lines[1].rsplit("t=", 1)[1])
    except ValueError:
        raise W1Error("bad-format", f"{where}: t= is not an integer: {lines[1]!r}") from None
    # the kernel masks the undefined low bits at 9..11-bit resolution, so allow up to 7/16 °C
    celsius = milli / 1000.0
    if abs(celsius - raw / 16.0) > 0.5:
        raise W1Error("bad-format", f"{where}: t={milli} disagrees with scratchpad {raw / 16} °C")
    if not DS18B20_MIN <= celsius <= DS18B20_MAX:
        raise W1Error("out-of-range", f"{where}: {celsius} °C is outside the DS18B20 range")
    return celsius


def list_devices(base_dir: Path = DEFAULT_BASE_DIR) -> list[str]:
    """DS18B20 ids (family 0x28) present on the bus, sorted."""
    try:
        return sorted(p.name for p in base_dir.glob("28-*") if p.is_dir())
    except OSError:
        return []


@register
class DS18B20Sensor(SensorDriver):
    kind: ClassVar[str] = "ds18b20"
    Config: ClassVar[type[SensorConfig]] = DS18B20Config

    def __init__(
        self, config: SensorConfig, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        super().__init__(config)
        assert isinstance(config, DS18B20Config)
        self.cfg = config
        self._sleep = sleep

    def _device_dir(self) -> Path:
        if self.cfg.device_id:
            return self.cfg.base_dir / self.cfg.device_id
        found = list_devices(self.cfg.base_dir)
        if len(found) == 1:
            return self.cfg.base_dir / found[0]
        if not found:
            raise W1Error(
                "disconnected",
                f"no DS18B20 (28-*) under {self.cfg.base_dir}; check wiring and that "
                "dtoverlay=w1-gpio is in /boot/firmware/config.txt",
            )
        raise W1Error(
            "ambiguous",
            f"{len(found)} DS18B20s under {self.cfg.base_dir} ({', '.join(found)}); set device_id",
        )

    def _read_once(self) -> float:
        device = self._device_dir()
        where = f"DS18B20 {device.name}"
        try:
            text = (device / "w1_slave").read_text(encoding="ascii", errors="replace")
        except FileNotFoundError:
            raise W1Error(
                "disconnected",
                f"{where}: {device} is gone: the probe was unplugged or its cable broke",
            ) from None
        except OSError as exc:
            raise W1Error("io-error", f"{where}: reading w1_slave failed: {exc}") from None
        return parse_w1_slave(text, where)

    def read(self, now: float) -> list[Reading]:
        unit = QUANTITY_UNITS.get(self.cfg.quantity, "Cel")
        last: W1Error | None = None
        for attempt in range(self.cfg.retries):
            if attempt:
                self._sleep(self.cfg.retry_delay_s)
            try:
                value = self._read_once() + self.cfg.offset
            except W1Error as exc:
                last = exc
                if exc.reason in ("ambiguous",):
                    break
                continue
            return [Reading(self.name, self.cfg.quantity, unit, round(value, 4), now)]
        assert last is not None
        reading = self.missing(self.cfg.quantity, unit, now, last.reason)
        self.last_error = f"{last} (after {attempt + 1} attempt(s))"
        return [reading]
