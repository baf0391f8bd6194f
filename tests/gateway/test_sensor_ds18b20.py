"""DS18B20 over 1-Wire sysfs, against a fake ``/sys/bus/w1/devices`` tree.

The fake tree stands in for the kernel's w1-therm driver: each ``w1_slave`` file holds what the
kernel prints. Scratchpad lines marked "real" were captured from probes (they are the widely
published examples); the others are made here with an independent CRC-8 written in the test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.sensors.base import SensorConfigError, build_sensor, validate_sensor_table
from gateway.sensors.ds18b20 import DS18B20Sensor, W1Error, list_devices, parse_w1_slave
from tests.support.w1 import DEV, REAL_23125, make_tree

REAL_POWER_ON = "50 05 4b 46 7f ff 0c 10 1c : crc=1c YES\n50 05 4b 46 7f ff 0c 10 1c t=85000\n"
CRC_NO = "72 01 4b 46 7f ff 0e 10 58 : crc=58 NO\n72 01 4b 46 7f ff 0e 10 58 t=23125\n"
ALL_FF = "ff ff ff ff ff ff ff ff ff : crc=c9 NO\nff ff ff ff ff ff ff ff ff t=-62\n"
ALL_00 = "00 00 00 00 00 00 00 00 00 : crc=00 YES\n00 00 00 00 00 00 00 00 00 t=0\n"


def _crc8(data: bytes) -> int:
    """Table-free CRC-8/MAXIM written the other way round (MSB-first on the reversed poly)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x8C if crc & 1 else 0)
    return crc


def w1_text(celsius: float) -> str:
    raw = round(celsius * 16) & 0xFFFF
    body = bytes([raw & 0xFF, raw >> 8, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10])
    pad = body + bytes([_crc8(body)])
    hexes = " ".join(f"{b:02x}" for b in pad)
    signed = raw - 0x10000 if raw & 0x8000 else raw
    return f"{hexes} : crc={pad[8]:02x} YES\n{hexes} t={signed * 1000 // 16}\n"




def sensor(base: Path, sleep: Callable[[float], None], **extra: object) -> DS18B20Sensor:
    cfg = validate_sensor_table(
        0, {"kind": "ds18b20", "name": "soil-t", "base_dir": str(base), **extra}
    )
    drv = DS18B20Sensor(cfg, sleep=sleep)
    return drv


def conversions(path: Path, texts: list[str]) -> Callable[[float], None]:
    """A sleep() that, like the kernel between two reads, leaves the next conversion's text."""
    pending = list(texts)

    def sleep(_: float) -> None:
        if pending:
            path.write_text(pending.pop(0))

    return sleep


def test_real_line_reads_23_125(tmp_path: Path) -> None:
    """A healthy probe: the published example line gives 23.125 °C in Cel."""
    make_tree(tmp_path, {DEV: REAL_23125})
    [r] = sensor(tmp_path, lambda _: None).read(100.0)
    assert (r.quantity, r.unit, r.value, r.time) == ("soil_temperature", "Cel", 23.125, 100.0)


@pytest.mark.parametrize("celsius", [-55.0, -10.125, -0.5, 0.0625, 25.0625, 124.9375])
def test_negative_and_extreme_temperatures(celsius: float) -> None:
    """Two's-complement scratchpads across the DS18B20's whole range."""
    assert parse_w1_slave(w1_text(celsius), "t") == pytest.approx(celsius, abs=1e-3)


def test_crc_no_is_retried_then_succeeds(tmp_path: Path) -> None:
    """Noise on a long cable: the kernel says NO once, the retry reads a good conversion."""
    make_tree(tmp_path, {DEV: CRC_NO})
    drv = sensor(tmp_path, conversions(tmp_path / DEV / "w1_slave", [w1_text(18.5)]))
    [r] = drv.read(1.0)
    assert r.value == 18.5
    assert not drv.errors


def test_power_on_85_is_not_a_temperature(tmp_path: Path) -> None:
    """A browned-out probe returns +85 °C every time: recorded missing, never 85."""
    make_tree(tmp_path, {DEV: REAL_POWER_ON})
    drv = sensor(tmp_path, lambda _: None, retries=3)
    [r] = drv.read(1.0)
    assert r.value is None
    assert r.missing_reason == "power-on-value"
    assert drv.errors["power-on-value"] == 1
    assert "85" in drv.last_error
    assert "3 attempt" in drv.last_error


def test_power_on_then_real_value(tmp_path: Path) -> None:
    """85 °C once after a brown-out, then a real conversion: the real one is kept."""
    make_tree(tmp_path, {DEV: REAL_POWER_ON})
    drv = sensor(tmp_path, conversions(tmp_path / DEV / "w1_slave", [REAL_23125]))
    assert drv.read(1.0)[0].value == 23.125


def test_genuine_85_degrees_is_accepted() -> None:
    """The scratchpad, not the number, marks the reset value: 85.0625 °C is a real reading."""
    assert parse_w1_slave(w1_text(85.0625), "t") == pytest.approx(85.0625, abs=1e-3)


@pytest.mark.parametrize(("text", "reason"), [(ALL_FF, "disconnected"), (ALL_00, "disconnected")])
def test_dead_bus_patterns(tmp_path: Path, text: str, reason: str) -> None:
    """Open data line (all ff) and shorted line (all 00, which the kernel calls YES)."""
    make_tree(tmp_path, {DEV: text})
    [r] = sensor(tmp_path, lambda _: None).read(1.0)
    assert r.value is None
    assert r.missing_reason == reason


def test_unplugged_probe_directory_vanishes(tmp_path: Path) -> None:
    """The kernel removes an unplugged probe; the configured id is then reported missing."""
    make_tree(tmp_path, {DEV: REAL_23125})
    drv = sensor(tmp_path, lambda _: None, device_id=DEV)
    assert drv.read(1.0)[0].value == 23.125
    (tmp_path / DEV / "w1_slave").unlink()
    (tmp_path / DEV).rmdir()
    [r] = drv.read(2.0)
    assert r.value is None
    assert r.missing_reason == "disconnected"
    assert DEV in drv.last_error
    assert "unplugged" in drv.last_error


def test_no_probe_at_all_names_the_overlay(tmp_path: Path) -> None:
    """A Pi without the w1-gpio overlay: nothing under the base dir; the error says what to do."""
    make_tree(tmp_path, {})
    drv = sensor(tmp_path, lambda _: None)
    [r] = drv.read(1.0)
    assert r.missing_reason == "disconnected"
    assert "w1-gpio" in drv.last_error


def test_several_probes_need_device_id(tmp_path: Path) -> None:
    """Two probes on one bus: each table picks its own by id; no id is an explicit error."""
    other = "28-000005e2fdc3"
    make_tree(tmp_path, {DEV: REAL_23125, other: w1_text(-3.5)})
    assert list_devices(tmp_path) == [other, DEV]
    assert sensor(tmp_path, lambda _: None, device_id=other).read(1.0)[0].value == -3.5
    drv = sensor(tmp_path, lambda _: None)
    [r] = drv.read(1.0)
    assert r.missing_reason == "ambiguous"
    assert other in drv.last_error


def test_corrupted_text_and_crc_mismatch(tmp_path: Path) -> None:
    """Text the kernel would never write (truncated; YES over a wrong CRC) is refused."""
    with pytest.raises(W1Error, match="unexpected"):
        parse_w1_slave("72 01 4b", "t")
    bad = REAL_23125.replace("0e 10 57 :", "0e 11 57 :")
    with pytest.raises(W1Error, match="CRC"):
        parse_w1_slave(bad, "t")


def test_offset_and_quantity_from_config(tmp_path: Path) -> None:
    """An air probe with a reference-thermometer offset."""
    make_tree(tmp_path, {DEV: REAL_23125})
    drv = sensor(tmp_path, lambda _: None, quantity="air_temperature", offset=-0.25)
    [r] = drv.read(1.0)
    assert (r.quantity, r.value) == ("air_temperature", 22.875)


def test_config_rejects_bad_device_id() -> None:
    """A typo in the id is caught at config time, naming the key."""
    with pytest.raises(SensorConfigError, match="device_id"):
        validate_sensor_table(0, {"kind": "ds18b20", "name": "x", "device_id": "10-abc"})


def test_registered_kind_builds(tmp_path: Path) -> None:
    """The registry finds the kind, as the gateway does from its TOML."""
    make_tree(tmp_path, {DEV: REAL_23125})
    drv = build_sensor(
        validate_sensor_table(0, {"kind": "ds18b20", "name": "s", "base_dir": str(tmp_path)})
    )
    assert drv.read(5.0)[0].value == 23.125
