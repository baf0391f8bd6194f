"""Modbus-RTU soil probes over a pseudo-terminal, against ``tests/support/sim/modbus_rtu_sim.py``.

The simulator is a separate process standing in for an RS-485 bus with one or more soil
probes on it; it builds every reply by hand (CRC-16/MODBUS included) and injects the faults a
field bus has: a dead probe, noise, corrupted CRCs, two probes with one address, exception
replies. The driver under test runs the real pymodbus serial client on the pty."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fieldproof.wire import Reading
from gateway.sensors.base import SensorConfigError, build_sensor, validate_sensor_table
from gateway.sensors.modbus_soil import ModbusSoilSensor, plan_blocks, scan_bus
from tests.support.sim.harness import Sim, run_sim

CWT = {"0": 312, "1": 0x10000 - 50, "2": 1250, "3": 68, "4": 41, "5": 17, "6": 120}
JXBS = {"6": 653, "18": 275, "19": 183, "21": 480, "30": 22, "31": 9, "32": 150}


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Sim]:
    with run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"1": CWT}}) as sim:
        yield sim


def probe(port: str, **extra: Any) -> ModbusSoilSensor:
    table = {
        "kind": "modbus_soil",
        "name": "soil",
        "port": port,
        "model": "cwt-soil",
        "timeout_s": 0.3,
        "retries": 0,
        **extra,
    }
    drv = build_sensor(validate_sensor_table(0, table))
    assert isinstance(drv, ModbusSoilSensor)
    return drv


def as_dict(readings: list[Reading]) -> dict[str, tuple[float | None, str, str]]:
    return {r.quantity: (r.value, r.unit, r.missing_reason) for r in readings}


def test_cwt_probe_all_quantities_scaled(bus: Sim) -> None:
    """A CWT-Soil 7-in-1 probe at factory address 1: one request, every value in SenML units."""
    drv = probe(bus.port)
    try:
        got = as_dict(drv.read(10.0))
    finally:
        drv.close()
    assert got == {
        "soil_moisture": (0.312, "/", ""),
        "soil_temperature": (-5.0, "Cel", ""),
        "soil_ec": (0.125, "S/m", ""),
        "soil_ph": (6.8, "pH", ""),
        "soil_nitrogen": (41.0, "mg/kg", ""),
        "soil_phosphorus": (17.0, "mg/kg", ""),
        "soil_potassium": (120.0, "mg/kg", ""),
    }
    [req] = [e for e in bus.log() if e["event"] == "request"]
    assert (req["slave"], req["func"], req["address"], req["count"]) == (1, 3, 0, 7)


def test_jxbs_map_reads_scattered_registers(tmp_path: Path) -> None:
    """A JXBS-3001 probe: pH at 0x06, moisture/temperature at 0x12, EC 0x15, NPK 0x1E..0x20."""
    with run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"4": JXBS}}) as sim:
        drv = probe(sim.port, model="jxbs-3001", slave_id=4)
        try:
            got = as_dict(drv.read(1.0))
        finally:
            drv.close()
        blocks = [(e["address"], e["count"]) for e in sim.log() if e["event"] == "request"]
    assert got["soil_ph"] == (6.53, "pH", "")
    assert got["soil_moisture"] == (0.275, "/", "")
    assert got["soil_temperature"] == (18.3, "Cel", "")
    assert got["soil_ec"] == (0.048, "S/m", "")
    assert got["soil_potassium"] == (150.0, "mg/kg", "")
    assert blocks == [(6, 1), (18, 2), (21, 1), (30, 3)]


def test_two_probes_share_one_bus(tmp_path: Path) -> None:
    """Two probes on one adapter, ids 2 and 5: one port, each answers for itself."""
    other = dict(CWT, **{"0": 401})
    with run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"2": CWT, "5": other}}) as sim:
        a = probe(sim.port, slave_id=2, name="row1", quantities=["soil_moisture"])
        b = probe(sim.port, slave_id=5, name="row2", quantities=["soil_moisture"])
        try:
            assert a.read(1.0)[0].value == 0.312
            assert b.read(1.0)[0].value == 0.401
            assert a.read(2.0)[0].value == 0.312
        finally:
            a.close()
            b.close()
        assert [e["slave"] for e in sim.log() if e["event"] == "request"] == [2, 5, 2]


def test_different_settings_on_one_bus_is_a_clear_fault(bus: Sim) -> None:
    """A 4800-baud CWT and a 9600-baud JXBS wired to one adapter cannot both work."""
    a = probe(bus.port)
    b = probe(bus.port, model="jxbs-3001", slave_id=2, name="jx")
    try:
        assert a.read(1.0)[0].value == 0.312
        got = b.read(1.0)
        assert {r.missing_reason for r in got} == {"bus-conflict"}
        assert "same settings" in b.last_error
    finally:
        a.close()
        b.close()


def test_silent_bus_is_one_timeout_not_a_storm(bus: Sim, caplog: pytest.LogCaptureFixture) -> None:
    """A cut cable: each read asks once, returns seven timeout gaps, logs once; then the
    cable is fixed and the next read is whole again."""
    bus.control(slaves={"1": CWT}, mode="silent")
    drv = probe(bus.port, model="jxbs-3001", slave_id=1)  # four blocks: still one request
    caplog.set_level(logging.INFO)
    try:
        for t in (1.0, 2.0, 3.0):
            got = drv.read(t)
            assert {r.missing_reason for r in got} == {"timeout"}
            assert len(got) == 7
        assert len([e for e in bus.log() if e["event"] == "request"]) == 3
        assert drv.errors["timeout"] == 21
        assert "no reply within" in drv.last_error
        assert "slave 1" in drv.last_error
        pymodbus_errors = [r for r in caplog.records if r.name == "pymodbus.logging"]
        assert len(pymodbus_errors) <= 2  # the first, and pymodbus's own "Repeating"
        ours = [r for r in caplog.records if r.name == "gateway.sensors.modbus_soil"]
        assert len([r for r in ours if r.levelno == logging.WARNING]) == 1
        bus.control(slaves={"1": JXBS})
        assert all(r.value is not None for r in drv.read(4.0))
    finally:
        drv.close()


@pytest.mark.parametrize("fault", ["bad_crc", "garbage", "truncated", "silent"])
def test_one_bad_reply_is_retried(bus: Sim, fault: str) -> None:
    """Noise hits one reply: with one retry configured the read still comes back whole."""
    bus.control(slaves={"1": CWT}, faults=[fault])
    drv = probe(bus.port, retries=1)
    try:
        got = drv.read(1.0)
    finally:
        drv.close()
    assert [r.missing_reason for r in got] == [""] * 7
    assert len([e for e in bus.log() if e["event"] == "request"]) == 2


@pytest.mark.parametrize("fault", ["bad_crc", "garbage", "truncated"])
def test_bad_reply_without_retry_then_resync(bus: Sim, fault: str) -> None:
    """Without retries a corrupted reply is a gap that says "bad frame" (noise, not silence);
    the next read resynchronises."""
    bus.control(slaves={"1": CWT}, faults=[fault])
    drv = probe(bus.port)
    try:
        assert {r.missing_reason for r in drv.read(1.0)} == {"bad-frame"}
        assert "corrupted" in drv.last_error
        assert drv.read(2.0)[0].value == 0.312
    finally:
        drv.close()


def test_reply_from_the_wrong_slave(bus: Sim) -> None:
    """Two probes left at the same address: a reply that names another id is refused."""
    bus.control(slaves={"1": CWT}, faults=["wrong_slave"])
    drv = probe(bus.port)
    try:
        got = drv.read(1.0)
        assert {r.missing_reason for r in got} == {"wrong-slave"}
        assert "unique slave id" in drv.last_error
        assert drv.read(2.0)[0].value == 0.312
    finally:
        drv.close()


def test_exception_reply_names_the_map(bus: Sim) -> None:
    """The probe answers 'illegal data address': the map does not fit this probe."""
    bus.control(slaves={"1": CWT}, faults=["exception:2"])
    drv = probe(bus.port)
    try:
        got = drv.read(1.0)
    finally:
        drv.close()
    assert {r.missing_reason for r in got} == {"modbus-exception-2"}
    assert "illegal data address" in drv.last_error


def test_implausible_value_is_missing_alone(bus: Sim) -> None:
    """A broken moisture element reporting 150 %: only that quantity is a gap."""
    bus.control(slaves={"1": dict(CWT, **{"0": 1500})})
    drv = probe(bus.port)
    try:
        got = as_dict(drv.read(1.0))
    finally:
        drv.close()
    assert got["soil_moisture"] == (None, "/", "out-of-range")
    assert got["soil_temperature"] == (-5.0, "Cel", "")


def test_custom_map_from_config(tmp_path: Path) -> None:
    """An unlisted probe described in the config: input registers, a 32-bit float EC."""
    import struct

    hi, lo = struct.unpack(">HH", struct.pack(">f", 1234.5))
    regs = {"100": 2215, "101": hi, "102": lo}
    custom = {
        "function": 4, "baudrate": 19200,
        "registers": [
            {"quantity": "soil_temperature", "address": 100, "type": "int16", "scale": 0.01},
            {"quantity": "soil_ec", "address": 101, "type": "float32", "scale": 1e-4},
        ],
    }  # fmt: skip
    with run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"9": regs}}) as sim:
        drv = probe(sim.port, model="", map=custom, slave_id=9)
        try:
            got = as_dict(drv.read(1.0))
        finally:
            drv.close()
        [req] = [e for e in sim.log() if e["event"] == "request"]
    assert got == {"soil_temperature": (22.15, "Cel", ""), "soil_ec": (0.12345, "S/m", "")}
    assert req["func"] == 4


def test_port_missing_is_a_gap(tmp_path: Path) -> None:
    """The USB adapter is unplugged: gaps that say so, no exception."""
    drv = probe(str(tmp_path / "ttyUSB9"))
    try:
        got = drv.read(1.0)
    finally:
        drv.close()
    assert {r.missing_reason for r in got} == {"port-unavailable"}
    assert "adapter" in drv.last_error


def test_scan_finds_the_probes(tmp_path: Path) -> None:
    """`sensors scan` on a bus with probes at 2 and 5 (one of them answering an exception)."""
    with run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"2": CWT, "5": {"7": 1}}}) as sim:
        assert scan_bus(sim.port, baudrate=4800, ids=range(1, 8), timeout_s=0.1) == [2, 5]


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"model": "cwt-soil", "map": {"registers": [{"quantity": "x", "address": 1}]}}, "map"),
        ({"model": "no-such-probe"}, "no built-in map"),
        ({"model": "cwt-soil", "quantities": ["air_humidity"]}, "not in this probe"),
        ({"model": "cwt-soil", "slave_id": 300}, "slave_id"),
    ],
)
def test_config_errors(table: dict[str, Any], key: str) -> None:
    """Mistakes in a [[sensors]] table are caught before anything opens a port."""
    with pytest.raises(SensorConfigError, match=key):
        validate_sensor_table(0, {"kind": "modbus_soil", "name": "s", "port": "/dev/x", **table})


def test_blocks_are_contiguous_runs() -> None:
    """Gaps in a map are never bridged (probes reject unimplemented registers)."""
    from gateway.sensors.modbus_soil import builtin_map

    blocks = plan_blocks(builtin_map("jxbs-3001").registers)
    assert [(b.start, b.count) for b in blocks] == [(6, 1), (18, 2), (21, 1), (30, 3)]


def test_late_reply_is_not_taken_for_the_next_answer(bus: Sim) -> None:
    """A slow probe answers after the timeout: that read is a gap, and its stale reply (which
    lands during the gap) must not be read as the answer to the next request."""
    bus.control(slaves={"1": CWT}, faults=["delay:0.5"])
    drv = probe(bus.port)
    try:
        assert {r.missing_reason for r in drv.read(1.0)} == {"timeout"}
        bus.control(slaves={"1": dict(CWT, **{"0": 288})})
        time.sleep(0.4)  # let the late reply arrive before the next request (not a timed assert)
        assert drv.read(2.0)[0].value == 0.288
    finally:
        drv.close()
