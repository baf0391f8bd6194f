"""`fieldproof gateway sensors scan|test` and `calibrate`, run through click's CliRunner against
the same device simulators as the driver tests (Modbus and SDI-12 simulator processes on
ptys, the node firmware under MicroPython, a fake 1-Wire sysfs tree). The runner's terminal
is not a tty, so the 60-column limit is checked on the plain text it prints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from gateway.sensors.base import SensorConfig, validate_sensor_table
from gateway.sensors.calibration import CalibrationStore
from gateway.sensors_cli import make_calibrate_command, make_sensors_group
from tests.support.sim.harness import run_node, run_sim
from tests.support.w1 import DEV, REAL_23125, make_tree

CWT = {"0": 312, "1": 215, "2": 1250, "3": 68, "4": 41, "5": 17, "6": 120}


def loader_for(*tables: dict[str, Any]) -> Any:
    configs = [validate_sensor_table(i, t) for i, t in enumerate(tables)]

    def load(_: Path | None) -> list[SensorConfig]:
        return configs

    return load


def fits_a_phone(result: Result) -> None:
    # Blinka prints its own platform warning when imported on x86; a Pi never shows it
    lines = [ln for ln in result.output.splitlines() if not ln.startswith("WARNING: GENERIC_X86")]
    wide = [line for line in lines if len(line) > 60]
    assert not wide, wide


def test_sensors_test_table(tmp_path: Path) -> None:
    """A Modbus probe and a DS18B20 that work and a DHT22 on a pin that does not exist:
    values with units and plausibility, the failure named with advice, exit status 1."""
    make_tree(tmp_path / "w1", {DEV: REAL_23125})
    with run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"1": CWT}}) as sim:
        load = loader_for(
            {"kind": "modbus_soil", "name": "probe-north", "port": sim.port, "model": "cwt-soil",
             "timeout_s": 0.3, "quantities": ["soil_moisture", "soil_ec"]},
            {"kind": "ds18b20", "name": "soil-t", "base_dir": str(tmp_path / "w1")},
            {"kind": "dht22", "name": "air", "pin": "D99"},
        )  # fmt: skip
        result = CliRunner().invoke(make_sensors_group(load), ["test", "-n", "2"])
    assert result.exit_code == 1, result.output
    out = result.output
    assert "0.312 /" in out
    assert "0.125 S/m" in out
    assert "23.12 Cel" in out
    assert "setup-failed x4" in out  # two reads x two quantities
    assert "D99" in out
    assert "some readings failed" in out
    fits_a_phone(result)


def test_sensors_test_all_good_exits_zero(tmp_path: Path) -> None:
    """Only working sensors: exit status 0 and the all-clear line."""
    make_tree(tmp_path, {DEV: REAL_23125})
    load = loader_for({"kind": "ds18b20", "name": "soil-t", "base_dir": str(tmp_path)})
    result = CliRunner().invoke(make_sensors_group(load), ["test", "-n", "1"])
    assert result.exit_code == 0, result.output
    assert "all sensors OK" in result.output


def test_implausible_value_fails_the_test(tmp_path: Path) -> None:
    """A probe reporting 150 % moisture is flagged, not passed."""
    with run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"1": dict(CWT, **{"0": 1500})}}) as sim:
        load = loader_for({"kind": "modbus_soil", "name": "p", "port": sim.port,
                           "model": "cwt-soil", "quantities": ["soil_moisture"]})  # fmt: skip
        result = CliRunner().invoke(make_sensors_group(load), ["test", "-n", "1"])
    assert result.exit_code == 1
    assert "out-of-range" in result.output


def test_scan_every_bus(tmp_path: Path) -> None:
    """One scan over a Modbus bus (probe at id 3), an SDI-12 bus (address 0), a 1-Wire tree
    and a sensor node."""
    make_tree(tmp_path / "w1", {DEV: REAL_23125})
    sdi = {"sensors": {"0": {"values": [1.0], "ident": "13METER   TER12 1120001"}}}
    with (
        run_sim("modbus_rtu_sim.py", tmp_path, {"slaves": {"3": CWT}}) as mb,
        run_sim("sdi12_sim.py", tmp_path, sdi) as sd,
        run_node(tmp_path, {"adc": {"26": 30000}}) as node,
    ):
        result = CliRunner().invoke(make_sensors_group(loader_for()), [
            "scan", "--modbus", mb.port, "--modbus-baud", "4800", "--ids", "1-4",
            "--sdi12", sd.port, "--sdi12-addresses", "01", "--w1", str(tmp_path / "w1"),
            "--node", node.port,
        ])  # fmt: skip
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ids 3" in out
    assert "0: METER TER12 v112" in out
    assert DEV in out
    assert "e6614104032b2c22" in out
    fits_a_phone(result)


def test_calibrate_walks_through_dry_and_wet(tmp_path: Path) -> None:
    """The technician presses Enter twice; the probe moves from air (raw 52000) to water
    (raw 21000) between the two power-ups; both counts land in the calibration file."""
    cal = tmp_path / "cal.toml"
    world = {"adc_sessions": {"26": [52000, 21000]}, "power": {"26": 22}}
    with run_node(tmp_path, world) as node:
        load = loader_for({"kind": "sensor_node", "name": "node1", "port": node.port,
                           "calibration_file": str(cal), "probes": [{"channel": 0}]})  # fmt: skip
        result = CliRunner().invoke(make_calibrate_command(load), ["node1"], input="\n\n")
    assert result.exit_code == 0, result.output
    stored = CalibrationStore(cal).get("node1", "m0")
    assert stored is not None
    assert (stored.dry, stored.wet) == (52000, 21000)
    assert "1/2 DRY" in result.output
    assert "2/2 WET" in result.output
    fits_a_phone(result)


def test_calibrate_refuses_a_dead_probe(tmp_path: Path) -> None:
    """Air and water read the same (probe not powered / broken): nothing is stored."""
    cal = tmp_path / "cal.toml"
    with run_node(tmp_path, {"adc": {"26": 150}}) as node:
        load = loader_for({"kind": "sensor_node", "name": "node1", "port": node.port,
                           "calibration_file": str(cal)})  # fmt: skip
        result = CliRunner().invoke(make_calibrate_command(load), ["node1"], input="\n\n")
    assert result.exit_code != 0
    assert "did not change" in result.output
    assert not cal.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["nope"], "not a sensor_node"), (["node1", "--probe", "4"], "no probe on channel 4")],
)
def test_calibrate_argument_errors(args: list[str], message: str) -> None:
    """Wrong sensor name or channel: said plainly, nothing opened."""
    load = loader_for({"kind": "sensor_node", "name": "node1", "port": "/dev/null-node",
                       "calibration_file": "/tmp/x.toml"})  # fmt: skip
    result = CliRunner().invoke(make_calibrate_command(load), args)
    assert result.exit_code != 0
    assert message in result.output
