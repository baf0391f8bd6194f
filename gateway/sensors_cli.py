"""Field technician commands: find sensors, test them, calibrate soil probes.

Mounted under ``fieldproof gateway``::

    sensors scan       what answers on these ports (Modbus ids, SDI-12 addresses,
                       1-Wire devices, the fieldproof sensor node)
    sensors test       read every configured sensor N times: value, unit, plausibility,
                       errors, timing — the check before leaving the field
    calibrate SENSOR   two-point (dry air / water) calibration of a node's soil probe

Output is laid out for a phone's SSH terminal: never wider than 60 columns. The commands
need only a list of sensor configs, so the config loader is a parameter
(:func:`make_sensors_group`, :func:`make_calibrate_command`); the defaults read the gateway's
TOML config with :func:`fieldproof.config.load_gateway_config`."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table

from gateway.sensors.base import SensorConfig, SensorDriver, build_sensor, plausible

MAX_WIDTH = 60

SensorLoader = Callable[[Path | None], list[SensorConfig]]


def load_from_gateway_config(path: Path | None) -> list[SensorConfig]:
    """The ``[[sensors]]`` of the gateway config (``--config`` or its default location)."""
    from gateway.config import load_gateway_config

    return list(load_gateway_config(path).sensors)


def console() -> Console:
    con = Console(highlight=False)
    con.width = min(con.width, MAX_WIDTH)
    return con


def _config_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--config", "config_path", type=click.Path(path_type=Path), default=None,
        help="gateway config (TOML) with the [[sensors]] tables",
    )(f)  # fmt: skip


def _load(loader: SensorLoader, path: Path | None) -> list[SensorConfig]:
    try:
        return loader(path)
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot load sensors from config: {exc}") from None


# --------------------------------------------------------------------------------------------
# sensors test
# --------------------------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if value == int(value) and abs(value) < 1e9:
        text = f"{value:.0f}"  # counts, mg/kg
    else:
        text = f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return f"{text} {unit}".strip()


def run_test(drivers: list[SensorDriver], count: int, con: Console, pause_s: float = 0.0) -> bool:
    """Read each driver ``count`` times, print the table; True if every quantity had a good,
    plausible value every time it was read."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), expand=False)
    table.add_column("reading", overflow="fold", max_width=22)
    table.add_column("value", justify="right", overflow="fold", max_width=14)
    table.add_column("ok", justify="right")
    table.add_column("sane", justify="center")
    table.add_column("ms", justify="right")
    healthy = True
    notes: list[str] = []
    for drv in drivers:
        rows: dict[tuple[str, str], list[Any]] = defaultdict(list)
        durations: list[float] = []
        for i in range(count):
            if i and pause_s:
                time.sleep(pause_s)
            start = time.monotonic()
            try:
                readings = drv.read(time.time())
            except Exception as exc:  # a driver that breaks the rule is reported, not fatal
                readings = []
                drv.errors[f"raised-{type(exc).__name__}"] += 1
                drv.last_error = f"read() raised {exc!r} (a driver bug)"
            durations.append((time.monotonic() - start) * 1000)
            for r in readings:
                rows[(r.sensor, r.quantity)].append(r)
        ms = f"{statistics.median(durations):.0f}" if durations else "-"
        table.add_row(f"[bold]{drv.name}[/] ({drv.kind})", "", "", "", ms)
        if not rows:
            healthy = False
        for (sensor, quantity), readings in rows.items():
            good = [r.value for r in readings if r.value is not None]
            label = (
                quantity if sensor == drv.name else f"{sensor.removeprefix(drv.name)} {quantity}"
            )
            unit = readings[-1].unit
            if good:
                checks = [plausible(quantity, v) for v in good]
                sane = "-" if all(c is None for c in checks) else (
                    "yes" if all(c is not False for c in checks) else "[red]NO[/]"
                )  # fmt: skip
                value = _fmt(good[-1], unit)
            else:
                sane, value = "-", "[red]missing[/]"
            if len(good) < len(readings) or "NO" in sane:
                healthy = False
            ok = f"{len(good)}/{len(readings)}"
            if len(good) < len(readings):
                ok = f"[red]{ok}[/]"
            table.add_row(f"  {label}", value, ok, sane, "")
        if drv.errors:
            counts = ", ".join(f"{k} x{v}" for k, v in sorted(drv.errors.items()) if v)
            notes.append(f"[bold]{drv.name}[/]: {counts}\n  {drv.last_error}")
    con.print(table)
    for note in notes:
        con.print(note)
    con.print("[green]all sensors OK[/]" if healthy else "[red]some readings failed[/]")
    return healthy


def make_test_command(loader: SensorLoader = load_from_gateway_config) -> click.Command:
    @click.command("test")
    @_config_option
    @click.option("-n", "--count", default=3, show_default=True, type=click.IntRange(1, 100),
                  help="reads per sensor")  # fmt: skip
    @click.option("--only", "only", multiple=True, help="test only this sensor (repeatable)")
    def test_command(config_path: Path | None, count: int, only: tuple[str, ...]) -> None:
        """Read every configured sensor N times and show what came back."""
        configs = [c for c in _load(loader, config_path) if not only or c.name in only]
        if not configs:
            raise click.ClickException("no sensors to test (check [[sensors]] and --only)")
        con = console()
        drivers = [build_sensor(c) for c in configs]
        try:
            healthy = run_test(drivers, count, con)
        finally:
            for d in drivers:
                d.close()
        if not healthy:
            raise SystemExit(1)

    return test_command


# --------------------------------------------------------------------------------------------
# sensors scan
# --------------------------------------------------------------------------------------------


def _id_range(text: str) -> range:
    low, _, high = text.partition("-")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not N or N-M") from None
    if not 1 <= first <= last <= 247:
        raise click.BadParameter("Modbus slave ids are 1-247")
    return range(first, last + 1)


@click.command("scan")
@click.option("--modbus", "modbus_ports", multiple=True, metavar="PORT",
              help="RS-485 adapter to scan for Modbus probes")  # fmt: skip
@click.option("--modbus-baud", default="4800,9600", show_default=True,
              help="baud rates to try, comma separated")  # fmt: skip
@click.option("--ids", default="1-16", show_default=True, help="slave ids to try, N-M")
@click.option("--sdi12", "sdi12_ports", multiple=True, metavar="PORT",
              help="SDI-12 adapter to scan for addresses")  # fmt: skip
@click.option("--sdi12-addresses", default="0123456789", show_default=True,
              help="addresses to try (all 62 take ~1 min)")  # fmt: skip
@click.option("--w1", "w1_dir", type=click.Path(path_type=Path),
              default=Path("/sys/bus/w1/devices"), show_default=True,
              help="1-Wire sysfs directory")  # fmt: skip
@click.option("--node", "node_ports", multiple=True, metavar="PORT",
              help="serial port of a fieldproof sensor node")  # fmt: skip
@click.option("--node-baud", default=115200, show_default=True)
def scan_command(
    modbus_ports: tuple[str, ...], modbus_baud: str, ids: str, sdi12_ports: tuple[str, ...],
    sdi12_addresses: str, w1_dir: Path, node_ports: tuple[str, ...], node_baud: int,
) -> None:  # fmt: skip
    """Find sensors: Modbus ids, SDI-12 addresses, 1-Wire devices, sensor nodes."""
    from gateway.sensors import ds18b20, modbus_soil, sdi12, sensor_node

    con = console()
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    table.add_column("bus")
    table.add_column("where", overflow="fold", max_width=18)
    table.add_column("found", overflow="fold")
    id_range = _id_range(ids)
    for port in modbus_ports:
        for baud_text in modbus_baud.split(","):
            baud = int(baud_text)
            con.print(f"modbus {port} @{baud}: ids {id_range.start}-{id_range.stop - 1}…")
            try:
                found = modbus_soil.scan_bus(port, baudrate=baud, ids=id_range)
            except OSError as exc:
                table.add_row("modbus", port, f"[red]{exc}[/]")
                break
            shown = ", ".join(map(str, found)) if found else "[dim]nothing[/]"
            table.add_row("modbus", f"{port} @{baud}", f"ids {shown}" if found else shown)
    for port in sdi12_ports:
        con.print(f"sdi-12 {port}: addresses {sdi12_addresses}…")
        try:
            serial_port = sdi12.open_port(port)
        except Exception as exc:
            table.add_row("sdi-12", port, f"[red]{exc}[/]")
            continue
        try:
            bus = sdi12.SDI12Bus(serial_port, response_timeout_s=0.1, retries=1)
            found_sdi = sdi12.scan(bus, sdi12_addresses)
        finally:
            serial_port.close()
        if not found_sdi:
            table.add_row("sdi-12", port, "[dim]nothing[/]")
        for address, ident in found_sdi.items():
            table.add_row("sdi-12", port, f"{address}: {ident or '(no id)'}")
    devices = ds18b20.list_devices(w1_dir)
    table.add_row("1-wire", str(w1_dir), "\n".join(devices) or "[dim]nothing[/]")
    for port in node_ports:
        con.print(f"node {port}: IDENT…")
        try:
            node = sensor_node.probe_node(port, node_baud)
        except Exception as exc:
            table.add_row("node", port, f"[red]{exc}[/]")
            continue
        if node is None:
            table.add_row("node", port, "[dim]no answer[/]")
        else:
            info = f"fw {node.get('fw')} {node.get('board')} uid {node.get('uid')}"
            table.add_row("node", port, f"{info} probes {node.get('probes')}")
    con.print(table)


def make_sensors_group(loader: SensorLoader = load_from_gateway_config) -> click.Group:
    """The ``sensors`` group with ``scan`` and ``test``; ``loader`` gives the sensor configs."""
    group = click.Group("sensors", help="Find and test the gateway's sensors.")
    group.add_command(scan_command)
    group.add_command(make_test_command(loader))
    return group


# --------------------------------------------------------------------------------------------
# calibrate
# --------------------------------------------------------------------------------------------


def make_calibrate_command(loader: SensorLoader = load_from_gateway_config) -> click.Command:
    @click.command("calibrate")
    @_config_option
    @click.argument("sensor")
    @click.option("--probe", "channel", default=0, show_default=True, help="probe channel (m0=0)")
    @click.option("--file", "cal_file", type=click.Path(path_type=Path), default=None,
                  help="calibration file (default: the sensor's calibration_file)")  # fmt: skip
    def calibrate_command(
        config_path: Path | None, sensor: str, channel: int, cal_file: Path | None
    ) -> None:
        """Two-point calibration of a sensor node's soil probe: dry air, then water."""
        from gateway.sensors.calibration import CalibrationStore, TwoPointCalibration
        from gateway.sensors.sensor_node import NodeError, SensorNodeConfig, SensorNodeSensor

        configs = {c.name: c for c in _load(loader, config_path)}
        cfg = configs.get(sensor)
        if not isinstance(cfg, SensorNodeConfig):
            nodes = [n for n, c in configs.items() if isinstance(c, SensorNodeConfig)]
            raise click.ClickException(
                f"{sensor!r} is not a sensor_node in the config; "
                f"nodes: {', '.join(nodes) or 'none'}"
            )
        probe = next((p for p in cfg.probes if p.channel == channel), None)
        if probe is None:
            raise click.ClickException(f"{sensor} has no probe on channel {channel}")
        path = cal_file or cfg.calibration_file
        if path is None:
            raise click.ClickException(
                f"no calibration file: set calibration_file in [[sensors]] {sensor} or --file"
            )
        con = console()
        drv = SensorNodeSensor(cfg)
        try:
            ident = drv.identify()
            con.print(f"node {ident.get('uid')} fw {ident.get('fw')} on {cfg.port}")
            con.print(
                "\n[bold]1/2 DRY[/]: wipe the probe dry and hold it in the air, touching nothing."
            )
            click.prompt("Enter when ready", default="", show_default=False, prompt_suffix=" ")
            dry = drv.calibration_point(channel, "dry")
            con.print(f"dry air: raw [bold]{dry:.0f}[/]")
            con.print(
                "\n[bold]2/2 WET[/]: stand the probe in water up to the line — "
                "never the electronics."
            )
            click.prompt("Enter when ready", default="", show_default=False, prompt_suffix=" ")
            wet = drv.calibration_point(channel, "wet")
            con.print(f"water: raw [bold]{wet:.0f}[/]")
        except NodeError as exc:
            raise click.ClickException(
                f"{exc}; check the node with `sensors scan --node`"
            ) from None
        finally:
            drv.close()
        try:
            cal = TwoPointCalibration(dry=dry, wet=wet)
        except ValidationError as exc:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise click.ClickException(problems) from None
        span = abs(dry - wet) / max(dry, wet, 1)
        if wet > dry:
            con.print("[yellow]water reads HIGHER than air: steps swapped, or not a "
                      "capacitive probe?[/]")  # fmt: skip
            click.confirm("store anyway?", abort=True)
        elif span < 0.1:
            con.print(f"[yellow]only {span:.0%} between air and water: probe unpowered "
                      "or broken?[/]")  # fmt: skip
            click.confirm("store anyway?", abort=True)
        name = drv.sensor_name(probe.label)
        CalibrationStore(path).put(name, f"m{channel}", cal, note=f"node {ident.get('uid')}")
        con.print(f"[green]stored[/] {name} m{channel}: dry {dry:.0f}, wet {wet:.0f} in {path}")
        if probe.inline() is not None:
            con.print(
                "[yellow]note: the config has dry/wet for this probe; those win. Remove "
                "them to use this calibration.[/]"
            )
        con.print("check it: fieldproof gateway sensors test --only " + sensor)

    return calibrate_command


sensors_group = make_sensors_group()
calibrate_command = make_calibrate_command()
