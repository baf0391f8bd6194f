"""DHT22 / AM2302 air temperature and humidity on a GPIO pin, via ``adafruit-circuitpython-dht``.

The DHT22 fails often by design: Linux cannot time its 26/70 µs pulses reliably, so reads end
in "Checksum did not validate" or "A full buffer was not returned" a good fraction of the time.
The sensor also needs 2 s between conversions, and the library quietly returns its *previous*
values when asked sooner — so retries are spaced at least ``spacing_s`` (> 2 s) apart, every
value is range-checked, and after ``power_cycle_after`` failed reads in a row the sensor's
supply is switched off and on through a GPIO (a hung DHT22 only recovers that way). A failure
becomes a missing reading, never an exception, and the library's ``exit()`` always runs so its
``libgpiod_pulsein`` helper process does not outlive the gateway and hold the pin."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field

from fieldproof.errors import DeviceError
from fieldproof.wire import Reading
from gateway.sensors.base import (
    PLAUSIBLE_RANGES,
    QUANTITY_UNITS,
    SensorConfig,
    SensorDriver,
    register,
)

log = logging.getLogger(__name__)

#: the library refuses to start a new conversion within 2 s of the last (strictly greater)
LIBRARY_MIN_INTERVAL_S = 2.0


class DHTDevice(Protocol):
    """What the driver uses of ``adafruit_dht.DHT22`` (a test may pass its own subclass)."""

    @property
    def temperature(self) -> float | None: ...

    @property
    def humidity(self) -> float | None: ...

    def exit(self) -> None: ...


class DHT22Config(SensorConfig):
    kind: str = "dht22"
    #: Blinka ``board`` pin name of the data line (BCM numbering: D4 = GPIO4, header pin 7)
    pin: str = Field(default="D4", pattern=r"^D\d{1,2}$")
    model: Literal["dht22", "am2302", "dht21"] = "dht22"
    #: conversions tried per read before the reading is recorded missing (3-5 is usual)
    attempts: int = Field(default=4, ge=1, le=10)
    #: seconds between conversions; the datasheet and the library need more than 2
    spacing_s: float = Field(default=2.5, gt=LIBRARY_MIN_INTERVAL_S, le=60)
    #: None = the library's choice (pulseio helper on a Pi 4, bit-banging elsewhere)
    use_pulseio: bool | None = None
    #: Blinka pin that switches the sensor's supply ("" = no power cycling wired)
    power_pin: str = Field(default="", pattern=r"^(D\d{1,2})?$")
    #: failed reads in a row before the supply is cycled
    power_cycle_after: int = Field(default=3, ge=1, le=100)
    power_off_s: float = Field(default=3.0, ge=0.5, le=60)
    temperature_quantity: str = "air_temperature"
    humidity_quantity: str = "air_humidity"


class DHTSetupError(DeviceError):
    """The library or the pin could not be set up: retrying within this read will not help."""


_LIBRARY_MESSAGES = (
    ("checksum", "checksum"),
    ("full buffer", "short-buffer"),
    ("not found", "no-response"),
    ("unplausible", "out-of-range"),
)


def classify(exc: BaseException) -> str:
    """The short wire reason for one of the library's RuntimeErrors."""
    text = str(exc).lower()
    for needle, reason in _LIBRARY_MESSAGES:
        if needle in text:
            return reason
    return "read-error"


_ADVICE = {
    "checksum": "timing jitter or a noisy cable; usual on a Pi now and then, check the 10 kΩ "
    "pull-up and keep the cable under 20 m",
    "short-buffer": "pulses were missed (CPU busy or long cable); usual now and then",
    "no-response": "the sensor did not answer: check power, ground and the data wire",
    "out-of-range": "the sensor reported an impossible value; replace it if this persists",
    "stuck-line": "all-zero frame: the data line is stuck low; check for a short",
    "no-data": "the library returned no value",
    "setup-failed": "",
    "read-error": "unexpected library error",
}


@register
class DHT22Sensor(SensorDriver):
    kind: ClassVar[str] = "dht22"
    Config: ClassVar[type[SensorConfig]] = DHT22Config

    def __init__(
        self,
        config: SensorConfig,
        *,
        device_factory: Callable[[], DHTDevice] | None = None,
        power: Callable[[bool], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config)
        assert isinstance(config, DHT22Config)
        self.cfg = config
        self._factory = device_factory or self._library_device
        self._power = (
            power if power is not None else (self._gpio_power if config.power_pin else None)
        )
        self._power_io: Any = None
        self._sleep = sleep
        self._monotonic = monotonic
        self._device: DHTDevice | None = None
        self._last_attempt: float | None = None
        self.consecutive_failures = 0
        self.power_cycles = 0

    # -- hardware setup (lazy: a missing library or pin is a fault reading, not a crash) ------

    def _library_device(self) -> DHTDevice:
        try:
            import adafruit_dht
            import board
        except (ImportError, NotImplementedError, RuntimeError) as exc:
            raise DHTSetupError(
                f"cannot load adafruit_dht/Blinka ({exc}); install adafruit-circuitpython-dht"
            ) from None
        pin = getattr(board, self.cfg.pin, None)
        if pin is None:
            raise DHTSetupError(
                f"this board has no pin {self.cfg.pin} (not a Raspberry Pi, or wrong name); "
                "set pin to the BCM name, e.g. D4 for GPIO4"
            )
        cls = adafruit_dht.DHT21 if self.cfg.model == "dht21" else adafruit_dht.DHT22
        kwargs = {} if self.cfg.use_pulseio is None else {"use_pulseio": self.cfg.use_pulseio}
        try:
            device: DHTDevice = cls(pin, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise DHTSetupError(f"cannot open {self.cfg.pin}: {exc} (pin in use?)") from None
        return device

    def _gpio_power(self, on: bool) -> None:
        if self._power_io is None:
            import board
            import digitalio  # type: ignore[import-untyped,import-not-found,unused-ignore]

            self._power_io = digitalio.DigitalInOut(getattr(board, self.cfg.power_pin))
            self._power_io.direction = digitalio.Direction.OUTPUT
        self._power_io.value = on

    def _close_device(self) -> None:
        if self._device is not None:
            device, self._device = self._device, None
            try:
                device.exit()
            except Exception as exc:  # the helper may already be gone; closing must finish
                log.warning("%s: DHT exit() failed: %s", self.name, exc)

    # -- reading ------------------------------------------------------------------------------

    def _wait_spacing(self) -> None:
        if self._last_attempt is not None:
            wait = self.cfg.spacing_s - (self._monotonic() - self._last_attempt)
            if wait > 0:
                self._sleep(wait)
        self._last_attempt = self._monotonic()

    def _attempt(self) -> tuple[float, float]:
        if self._device is None:
            self._device = self._factory()
        temperature = self._device.temperature
        humidity = self._device.humidity
        if temperature is None or humidity is None:
            raise RuntimeError("no-data")
        return float(temperature), float(humidity)

    def _check(self, temperature: float, humidity: float) -> str:
        if temperature == 0.0 and humidity == 0.0:
            return "stuck-line"
        t_low, t_high = PLAUSIBLE_RANGES["air_temperature"]
        h_low, h_high = PLAUSIBLE_RANGES["air_humidity"]
        if not (t_low <= temperature <= t_high and h_low <= humidity <= h_high):
            return "out-of-range"
        return ""

    def read(self, now: float) -> list[Reading]:
        reason, detail = "no-data", ""
        tried = 0
        for _ in range(self.cfg.attempts):
            tried += 1
            self._wait_spacing()
            try:
                temperature, humidity = self._attempt()
            except DHTSetupError as exc:
                reason, detail = "setup-failed", str(exc)
                self._close_device()
                break
            except RuntimeError as exc:
                reason = "no-data" if str(exc) == "no-data" else classify(exc)
                detail = str(exc)
                continue
            except Exception as exc:  # a driver fault must not stop the gateway
                reason, detail = "read-error", f"{type(exc).__name__}: {exc}"
                self._close_device()
                continue
            reason = self._check(temperature, humidity)
            if reason:
                detail = f"T={temperature} °C RH={humidity} %"
                continue
            self.consecutive_failures = 0
            return [
                Reading(
                    self.name,
                    self.cfg.temperature_quantity,
                    QUANTITY_UNITS["air_temperature"],
                    temperature,
                    now,
                ),
                Reading(
                    self.name,
                    self.cfg.humidity_quantity,
                    QUANTITY_UNITS["air_humidity"],
                    humidity,
                    now,
                ),
            ]
        self.consecutive_failures += 1
        out = [
            self.missing(
                self.cfg.temperature_quantity, QUANTITY_UNITS["air_temperature"], now, reason
            ),
            self.missing(self.cfg.humidity_quantity, QUANTITY_UNITS["air_humidity"], now, reason),
        ]
        if reason == "setup-failed":
            self.last_error = f"{self.cfg.model} on {self.cfg.pin}: {detail}"
        else:
            self.last_error = (
                f"{self.cfg.model} on {self.cfg.pin}: {reason} after {tried} attempt(s) spaced "
                f"{self.cfg.spacing_s} s ({detail}); {_ADVICE.get(reason, '')}"
            ).rstrip("; ")
        if self.consecutive_failures >= self.cfg.power_cycle_after:
            self.power_cycle()
        return out

    def power_cycle(self) -> None:
        """Switch the sensor's supply off and on; recreate the library object afterwards."""
        self._close_device()
        self.consecutive_failures = 0
        if self._power is None:
            return
        try:
            self._power(False)
            self._sleep(self.cfg.power_off_s)
            self._power(True)
        except Exception as exc:
            self.errors["power-cycle-failed"] += 1
            self.last_error = (
                f"{self.cfg.model}: power cycle via {self.cfg.power_pin} failed: {exc}"
            )
            return
        self.power_cycles += 1
        # the sensor needs ~1 s after power-up before its first conversion
        self._last_attempt = self._monotonic()

    def close(self) -> None:
        self._close_device()
        if self._power_io is not None:
            try:
                self._power_io.deinit()
            except Exception as exc:
                log.warning("%s: releasing %s failed: %s", self.name, self.cfg.power_pin, exc)
            self._power_io = None
