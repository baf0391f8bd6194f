"""SDI-12 driver on a pseudo-terminal against ``tests/support/sim/sdi12_sim.py``.

The simulator process stands in for an SDI-12 bus with TEROS-like sensors: it answers
``a!``, ``?!``, ``aI!``, ``aM!``/``aMC!`` (with a service request after a measurement time put
in on purpose) and ``aDn!`` with the SDI-12 CRC, and injects silence, noise, bad CRCs, adapter
echo, a forgotten service request and an aborted measurement. A pty carries neither the break
nor parity, so the break is checked through pyserial's ``spy://`` wrapper on the same pty."""

from __future__ import annotations

import re
import termios
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldproof.wire import Reading
from gateway.sensors.base import SensorConfigError, build_sensor, validate_sensor_table
from gateway.sensors.sdi12 import (
    SDI12Bus,
    SDI12Error,
    SDI12Sensor,
    check_crc,
    crc16_sdi12,
    encode_crc,
    open_port,
    parse_identification,
    scan,
    teros_vwc,
)
from tests.support.sim.harness import Sim, run_sim

TEROS12 = {"values": [2467.5, 21.3, 812], "ident": "13METER   TER12 1120001", "ttt": 1,
           "ready_after": 0.1}  # fmt: skip


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Sim]:
    with run_sim("sdi12_sim.py", tmp_path, {"sensors": {"0": TEROS12}}) as sim:
        yield sim


def sensor(port: str, **extra: Any) -> SDI12Sensor:
    table = {"kind": "sdi12", "name": "teros", "port": port, "response_timeout_s": 0.2, **extra}
    drv = build_sensor(validate_sensor_table(0, table))
    assert isinstance(drv, SDI12Sensor)
    return drv


def read_once(port: str, **extra: Any) -> tuple[list[Reading], SDI12Sensor]:
    drv = sensor(port, **extra)
    try:
        return drv.read(50.0), drv
    finally:
        drv.close()


def commands(sim: Sim) -> list[str]:
    return [e["cmd"] for e in sim.log() if e["event"] == "command"]


def test_crc_matches_the_specification_example() -> None:
    """SDI-12 v1.4 §4.4.12 example: ``0+3.14+2.718+1.414`` carries CRC ``Ipz``."""
    assert encode_crc(crc16_sdi12("0+3.14+2.718+1.414")) == "Ipz"
    assert check_crc("0+3.14+2.718+1.414Ipz") == "0+3.14+2.718+1.414"
    with pytest.raises(SDI12Error):
        check_crc("0+3.14+2.718+1.415Ipz")


def test_teros_equations() -> None:
    """METER's mineral-soil line and soilless-media cubic at hand-computed points."""
    assert teros_vwc(2467.5) == pytest.approx(3.879e-4 * 2467.5 - 0.6956)
    assert teros_vwc(2000, "soilless") == pytest.approx(0.1888, abs=1e-4)
    assert teros_vwc(1793.3) == pytest.approx(0.0, abs=1e-3)  # about dry air


def test_teros12_measure_with_crc(bus: Sim) -> None:
    """A TEROS 12 at address 0: aMC!, service request, aD0! with CRC, SenML units."""
    got, drv = read_once(bus.port)
    assert [(r.quantity, r.unit, r.value) for r in got] == [
        ("soil_moisture", "/", round(3.879e-4 * 2467.5 - 0.6956, 4)),
        ("soil_temperature", "Cel", 21.3),
        ("soil_ec", "S/m", 0.0812),
        ("soil_moisture_raw", "count", 2467.5),
    ]
    assert commands(bus) == ["0MC!", "0D0!"]
    assert any(e["event"] == "service_request" for e in bus.log())
    assert not drv.errors


def test_plain_measure_without_crc(bus: Sim) -> None:
    """crc = false uses aM! and plain data lines."""
    got, _ = read_once(bus.port, crc=False, emit_raw=False)
    assert [r.value for r in got][1:] == [21.3, 0.0812]
    assert commands(bus) == ["0M!", "0D0!"]


def test_teros11_soilless(tmp_path: Path) -> None:
    """A TEROS 11 in potting mix: two values, the soilless equation."""
    sensors = {"5": {"values": [2000, 18.25], "ttt": 0}}
    with run_sim("sdi12_sim.py", tmp_path, {"sensors": sensors}) as sim:
        got, _ = read_once(sim.port, address="5", probe="teros11", medium="soilless")
    assert [(r.quantity, r.value) for r in got] == [
        ("soil_moisture", 0.1888),
        ("soil_temperature", 18.25),
        ("soil_moisture_raw", 2000),
    ]


def test_values_over_several_data_pages(tmp_path: Path) -> None:
    """A generic sensor whose three values come one per aD0!, aD1!, aD2!."""
    sensors = {"2": {"values": [-1.5, 33.0, 7.25], "ttt": 0, "per_page": 1}}
    values = [{"quantity": "soil_temperature"}, {"quantity": ""},
              {"quantity": "soil_ph", "scale": 1.0}]  # fmt: skip
    with run_sim("sdi12_sim.py", tmp_path, {"sensors": sensors}) as sim:
        got, _ = read_once(sim.port, address="2", probe="generic", values=values)
        assert commands(sim) == ["2MC!", "2D0!", "2D1!", "2D2!"]
    assert [(r.quantity, r.unit, r.value) for r in got] == [
        ("soil_temperature", "Cel", -1.5),
        ("soil_ph", "pH", 7.25),
    ]


def test_one_bad_crc_is_asked_again(bus: Sim) -> None:
    """Noise corrupts one data line: D0 is asked again (the data stay in the sensor)."""
    bus.control(sensors={"0": TEROS12}, faults=[None, "bad_crc"])
    got, _drv = read_once(bus.port)
    assert got[1].value == 21.3
    assert commands(bus) == ["0MC!", "0D0!", "0D0!"]


def test_persistent_bad_crc_is_a_gap(bus: Sim) -> None:
    """A line so noisy every CRC fails: gaps with reason bad-crc and advice, no exception."""
    bus.control(sensors={"0": TEROS12}, faults=[None, "bad_crc", "bad_crc", "bad_crc"])
    got, drv = read_once(bus.port)
    assert {r.missing_reason for r in got} == {"bad-crc"}
    assert "shield" in drv.last_error


def test_absent_sensor_is_retried_then_a_gap(bus: Sim) -> None:
    """Nobody at address 7: three attempts (each with a break), then gaps; no exception."""
    got, drv = read_once(bus.port, address="7")
    assert {r.missing_reason for r in got} == {"no-response"}
    assert commands(bus) == ["7MC!"] * 3
    assert "address '7'" in drv.last_error


def test_adapter_echo_is_stripped(bus: Sim) -> None:
    """A one-wire adapter that hears its own transmission."""
    bus.control(sensors={"0": TEROS12}, mode="echo")
    got, _ = read_once(bus.port)
    assert got[1].value == 21.3


@pytest.mark.parametrize("fault", ["garbage", "silent"])
def test_noise_or_silence_on_the_first_command(bus: Sim, fault: str) -> None:
    """The first try is lost; the retry (after a new break) goes through."""
    bus.control(sensors={"0": TEROS12}, faults=[fault])
    got, _ = read_once(bus.port)
    assert got[1].value == 21.3
    assert commands(bus)[:2] == ["0MC!", "0MC!"]


def test_forgotten_service_request(tmp_path: Path) -> None:
    """The sensor never says it is ready: the recorder waits ttt seconds and asks anyway."""
    sensors = {"0": dict(TEROS12, ttt=1)}
    with run_sim(
        "sdi12_sim.py", tmp_path, {"sensors": sensors, "faults": ["no_service_request"]}
    ) as sim:
        got, _ = read_once(sim.port)
        assert commands(sim) == ["0MC!", "0D0!"]
    assert got[1].value == 21.3


def test_aborted_measurement(bus: Sim) -> None:
    """D0 comes back empty (measurement aborted): a short-data gap."""
    bus.control(sensors={"0": TEROS12}, faults=[None, "abort"])
    got, _ = read_once(bus.port)
    assert {r.missing_reason for r in got} == {"short-data"}


def test_two_sensors_share_the_bus(tmp_path: Path) -> None:
    """Two TEROS 12 at addresses 0 and 3 on one adapter."""
    sensors = {"0": TEROS12, "3": dict(TEROS12, values=[2800.0, 15.5, 300])}
    with run_sim("sdi12_sim.py", tmp_path, {"sensors": sensors}) as sim:
        a = sensor(sim.port, name="d10")
        b = sensor(sim.port, address="3", name="d30")
        try:
            assert a.read(1.0)[1].value == 21.3
            assert b.read(1.0)[1].value == 15.5
        finally:
            a.close()
            b.close()
        assert commands(sim) == ["0MC!", "0D0!", "3MC!", "3D0!"]


def test_break_and_line_settings(bus: Sim, tmp_path: Path) -> None:
    """Each command is preceded by break_condition held >= 12 ms, then >= 8.33 ms of marking,
    and the port runs at 1200 baud (parity cannot be seen on a pty: Linux forces CS8 there)."""
    spy_log = tmp_path / "spy.txt"
    port = open_port(f"spy://{bus.port}?file={spy_log}")
    try:
        speed = termios.tcgetattr(port.fd)[4]
        sdi = SDI12Bus(port, response_timeout_s=0.2)
        assert sdi.measure("0") == [2467.5, 21.3, 812]
    finally:
        port.close()
    events = []
    for line in spy_log.read_text().splitlines():
        m = re.match(r"(\d+\.\d+) (BRK|TX)\s+(.*)", line)
        if m:
            events.append((float(m.group(1)), m.group(2), m.group(3)))
    assert speed == termios.B1200
    txs = [i for i, e in enumerate(events) if e[1] == "TX"]
    assert len(txs) == 2
    for i in txs:
        (t_on, k1, v1), (t_off, k2, v2), (t_tx, _, _) = events[i - 2 : i + 1]
        assert (k1, v1, k2, v2) == ("BRK", "active", "BRK", "inactive")
        assert t_off - t_on >= 0.012
        assert t_tx - t_off >= 0.008


def test_scan_and_identify(tmp_path: Path) -> None:
    """`sensors scan`: addresses that acknowledge, with their aI! identification."""
    sensors = {"0": TEROS12, "b": {"values": [1.0], "ident": "14ACME    SOIL01002SN77"}}
    with run_sim("sdi12_sim.py", tmp_path, {"sensors": sensors}) as sim:
        port = open_port(sim.port)
        try:
            found = scan(SDI12Bus(port, response_timeout_s=0.05, retries=1), "0123ab")
        finally:
            port.close()
    assert sorted(found) == ["0", "b"]
    assert str(found["0"]) == "METER TER12 v112 0001"
    assert found["b"] is not None
    assert found["b"].vendor == "ACME"


def test_identification_parse() -> None:
    """The fixed-width aI! fields."""
    ident = parse_identification("0", "013METER   TER12 1120001")
    assert (ident.sdi_version, ident.vendor, ident.model, ident.version) == (
        "13",
        "METER",
        "TER12",
        "112",
    )


def test_port_missing_is_a_gap(tmp_path: Path) -> None:
    """No adapter: gaps naming the port, no exception."""
    got, drv = read_once(str(tmp_path / "ttyUSB7"))
    assert {r.missing_reason for r in got} == {"port-unavailable"}
    assert "ttyUSB7" in drv.last_error


def test_config_errors() -> None:
    """Bad address, a generic probe without a value map, a break shorter than 12 ms."""
    base = {"kind": "sdi12", "name": "s", "port": "/dev/x"}
    with pytest.raises(SensorConfigError, match="address"):
        validate_sensor_table(0, {**base, "address": "!!"})
    with pytest.raises(SensorConfigError, match="generic"):
        validate_sensor_table(0, {**base, "probe": "generic"})
    with pytest.raises(SensorConfigError, match="break_s"):
        validate_sensor_table(0, {**base, "break_s": 0.005})


def test_close_releases_the_port(bus: Sim) -> None:
    """close() closes the serial port once its last sensor is gone (the gateway stopping)."""
    a = sensor(bus.port)
    b = sensor(bus.port, address="3", name="other")
    a.read(1.0)
    b.read(1.0)
    assert a._shared is not None
    port = a._shared.bus.port
    a.close()
    assert port.is_open
    b.close()
    assert not port.is_open
