"""DHT22 driver over the real ``adafruit_dht`` decoder, fed pulse trains instead of a GPIO pin.

``PulseDHT22`` is the library's own ``DHT22`` class with only the pin capture replaced: each
conversion returns the next pulse train from a queue, built here bit by bit the way a DHT22
drives its data line (50 µs low, then 26 µs high for a 0 or 70 µs high for a 1). So the
library's pulse-to-bit decoding, its checksum and its 2-second cache all run for real; the
queue stands in for the sensor and the fake clock for the passing of time on the Pi."""

from __future__ import annotations

import array
from types import SimpleNamespace

import adafruit_dht
import pytest

from fieldproof.wire import Reading
from gateway.sensors.base import SensorConfigError, validate_sensor_table
from gateway.sensors.dht22 import DHT22Sensor


class FakeClock:
    """monotonic()/sleep() for both the driver and the library; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    c = FakeClock()
    monkeypatch.setattr(adafruit_dht, "time", SimpleNamespace(monotonic=c.monotonic, sleep=c.sleep))
    return c


def frame(
    temperature: float, humidity: float, *, bad_checksum: bool = False, keep: int | None = None
) -> array.array[int]:
    """The pulse train of one DHT22 answer (40 bits, MSB first, checksum last)."""
    hum = round(humidity * 10)
    temp = round(abs(temperature) * 10) | (0x8000 if temperature < 0 else 0)
    data = [hum >> 8, hum & 0xFF, temp >> 8, temp & 0xFF]
    data.append((sum(data) + (1 if bad_checksum else 0)) & 0xFF)
    pulses = array.array("H")
    for byte in data:
        for bit in range(7, -1, -1):
            pulses.extend([50, 70 if byte >> bit & 1 else 26])
    pulses.append(50)
    return pulses[:keep] if keep is not None else pulses


class PulseDHT22(adafruit_dht.DHT22):  # type: ignore[misc]  # adafruit_dht ships no type hints
    """The library's DHT22 with the GPIO capture swapped for a queue of pulse trains."""

    def __init__(self, trains: list[array.array[int]]) -> None:
        super().__init__(object(), use_pulseio=False)
        self.trains = trains
        self.captures = 0
        self.exits = 0

    def _get_pulses_bitbang(self) -> array.array[int]:
        self.captures += 1
        return self.trains.pop(0) if self.trains else array.array("H")

    def exit(self) -> None:
        self.exits += 1
        super().exit()


def make(
    clock: FakeClock, trains: list[array.array[int]], **extra: object
) -> tuple[DHT22Sensor, list[PulseDHT22], list[bool]]:
    devices: list[PulseDHT22] = []
    power: list[bool] = []

    def factory() -> PulseDHT22:
        devices.append(PulseDHT22(trains))
        return devices[-1]

    cfg = validate_sensor_table(0, {"kind": "dht22", "name": "air", **extra})
    drv = DHT22Sensor(
        cfg,
        device_factory=factory,
        power=power.append,
        sleep=clock.sleep,
        monotonic=clock.monotonic,
    )
    return drv, devices, power


def values(readings: list[Reading]) -> list[tuple[str, str, float | None, str]]:
    return [(r.quantity, r.unit, r.value, r.missing_reason) for r in readings]


def test_good_frame(clock: FakeClock) -> None:
    """A clean answer from the sensor."""
    drv, devices, _ = make(clock, [frame(21.3, 55.2)])
    assert values(drv.read(5.0)) == [
        ("air_temperature", "Cel", 21.3, ""),
        ("air_humidity", "%RH", 55.2, ""),
    ]
    assert devices[0].captures == 1


def test_below_zero(clock: FakeClock) -> None:
    """Frost: the sign bit of the temperature word."""
    drv, _, _ = make(clock, [frame(-7.5, 91.0)])
    assert [r.value for r in drv.read(5.0)] == [-7.5, 91.0]


def test_retries_are_spaced_and_really_remeasure(clock: FakeClock) -> None:
    """Two checksum failures, then a good answer: three real conversions, each > 2 s apart
    (the library would silently hand back its cached value if asked sooner)."""
    trains = [frame(20.0, 50.0, bad_checksum=True), frame(20.0, 50.0, keep=60), frame(22.0, 48.0)]
    drv, devices, _ = make(clock, trains)
    assert [r.value for r in drv.read(5.0)] == [22.0, 48.0]
    assert devices[0].captures == 3
    assert len(clock.sleeps) == 2
    assert all(s > 2.0 for s in clock.sleeps)
    assert not drv.errors


def test_back_to_back_reads_never_return_stale_values(clock: FakeClock) -> None:
    """The gateway asking again at once must get a new conversion, not the cached one."""
    drv, devices, _ = make(clock, [frame(20.0, 50.0), frame(26.0, 40.0)])
    assert drv.read(1.0)[0].value == 20.0
    assert drv.read(1.5)[0].value == 26.0
    assert devices[0].captures == 2


@pytest.mark.parametrize(
    ("train", "reason"),
    [
        (frame(20.0, 50.0, bad_checksum=True), "checksum"),
        (frame(20.0, 50.0, keep=40), "short-buffer"),
        (array.array("H"), "no-response"),
        (frame(0.0, 0.0), "stuck-line"),
        (frame(95.0, 20.0), "out-of-range"),
    ],
)
def test_failures_become_missing_readings(
    clock: FakeClock, train: array.array[int], reason: str
) -> None:
    """Every attempt fails the same way: two signed gaps, counted, and no exception."""
    drv, _, _ = make(clock, [train] * 4, attempts=4)
    got = drv.read(5.0)
    assert values(got) == [
        ("air_temperature", "Cel", None, reason),
        ("air_humidity", "%RH", None, reason),
    ]
    assert drv.errors[reason] == 2
    assert "D4" in drv.last_error
    assert "4 attempt" in drv.last_error


def test_zero_humidity_alone_is_a_reading(clock: FakeClock) -> None:
    """0 %RH with a real temperature is extreme but possible; only an all-zero frame is refused."""
    drv, _, _ = make(clock, [frame(20.0, 0.0)])
    assert [r.value for r in drv.read(5.0)] == [20.0, 0.0]


def test_power_cycle_after_repeated_failures(clock: FakeClock) -> None:
    """A hung sensor: after 2 failed reads the supply is cycled, the library object is
    exit()ed and rebuilt, and the next read works again."""
    drv, devices, power = make(
        clock,
        [array.array("H")] * 4 + [frame(19.0, 60.0)],
        attempts=2,
        power_cycle_after=2,
        power_pin="D17",
    )
    assert drv.read(1.0)[0].value is None
    assert power == []
    assert drv.read(2.0)[0].value is None
    assert power == [False, True]
    assert devices[0].exits == 1
    assert 3.0 in clock.sleeps  # supply held off for power_off_s
    assert drv.read(3.0)[0].value == 19.0
    assert len(devices) == 2
    assert drv.power_cycles == 1


def test_close_always_exits(clock: FakeClock) -> None:
    """Stopping the gateway releases the pin even after failures."""
    drv, devices, _ = make(clock, [frame(20.0, 50.0, bad_checksum=True)] * 4)
    drv.read(1.0)
    drv.close()
    assert devices[0].exits == 1
    drv.close()  # idempotent
    assert devices[0].exits == 1


def test_missing_pin_is_a_fault_reading_not_a_crash(clock: FakeClock) -> None:
    """No such GPIO on this board (x86 here, or a typo on a Pi): the real Blinka lookup fails,
    the reading is missing with advice, and it is not retried four times."""
    cfg = validate_sensor_table(0, {"kind": "dht22", "name": "air", "pin": "D99"})
    drv = DHT22Sensor(cfg, sleep=clock.sleep, monotonic=clock.monotonic)
    got = drv.read(1.0)
    assert [r.missing_reason for r in got] == ["setup-failed", "setup-failed"]
    assert "D99" in drv.last_error
    assert clock.sleeps == []
    drv.close()


def test_spacing_below_the_datasheet_is_refused() -> None:
    """2 s is the sensor's minimum; the config cannot ask for less."""
    with pytest.raises(SensorConfigError, match="spacing_s"):
        validate_sensor_table(0, {"kind": "dht22", "name": "a", "spacing_s": 1.0})
