"""The collector's line-protocol fast path equals the plain Point encoding.

``Ingestor.lines`` caches each series' escaped key per device object instead of building a
``Point`` per reading; this checks it byte for byte against the straightforward model (one
Point per reading, tags sorted and escaped) on generated devices and payloads, including tag
values that need escaping, sensor metadata, missing readings and a device that changes."""

from __future__ import annotations

import sqlite3
import string
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.influx import PointWriter, make_writer
from collector.ingest import Incoming, Ingestor, Verified
from collector.points import Point
from collector.registry import Device, Registry
from collector.store import CollectorStore
from fieldproof.config import InfluxConfig
from fieldproof.services import InfluxDB
from fieldproof.wire import Payload, Reading

_text = st.text(
    alphabet=string.ascii_letters + string.digits + ' ,=\\"_-é\n\r', min_size=0, max_size=12
)
_name = st.text(alphabet=string.ascii_lowercase + string.digits + "_", min_size=1, max_size=10)


class _NoWriter:
    def write(self, lines: list[str]) -> int:
        return 0

    def close(self) -> None:
        pass


def _ingestor() -> Ingestor:
    db = sqlite3.connect(":memory:")
    writer: PointWriter = _NoWriter()  # type: ignore[assignment]
    return Ingestor(CollectorStore(db), Registry(db), writer)


def _model(d: Device, p: Payload) -> list[str]:
    """The encoding before the fast path: a Point per reading."""
    out = []
    for r in p.readings:
        tags = {
            "farm": d.farm,
            "field": d.field,
            "gateway": d.gateway,
            "sensor": r.sensor,
            "unit": r.unit,
            **d.sensor_meta.get(r.sensor, {}),
        }
        fields: dict[str, float | int | str | bool] = {"seq": p.seq}
        if r.value is None:
            fields["missing"] = r.missing_reason
        else:
            fields["value"] = r.value
        out.append(Point(r.quantity, tags, fields, round(r.time * 1e9)).to_line())
    return out


_reading = st.builds(
    Reading,
    sensor=st.sampled_from(["soil1", "air", "s0"]),
    quantity=_name,
    unit=st.sampled_from(["", "%", "Cel", "S/m", "%RH"]),
    value=st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)),
    time=st.floats(min_value=0, max_value=4e9),
    missing_reason=st.sampled_from(["", "timeout", 'crc "bad"', "a\\b"]),
)
_device = st.builds(
    Device,
    gateway=st.just("gw-0011223344556677"),
    farm=_text,
    field=_text,
    location=st.just(""),
    status=st.just("active"),
    added_at=st.just(0.0),
    revoked_at=st.none(),
    public_key=st.just(b"\0" * 32),
    sensor_meta=st.dictionaries(
        st.sampled_from(["soil1", "air"]), st.dictionaries(_name, _text, max_size=3), max_size=2
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    devices=st.lists(_device, min_size=1, max_size=3),
    readings=st.lists(_reading, min_size=1, max_size=6),
    seq=st.integers(0, 2**63 - 1),
)
def test_fast_lines_equal_the_point_encoding(
    devices: list[Device], readings: list[Reading], seq: int
) -> None:
    ingestor = _ingestor()
    payload = Payload("gw-0011223344556677", seq, 1, tuple(readings))
    # the same gateway with changing registry data: the cache must follow the device object
    for d in devices + devices[:1]:
        v = Verified(Incoming("t", b""), d, payload)
        lines = ingestor.lines(v)
        assert lines == _model(d, payload)
        # a line break in a tag would end the line there: one reading, one line
        assert not any("\n" in line or "\r" in line for line in lines)


# a farm, a sensor's metadata or a sensor name holding a line break and a line of its own
SMUGGLED = "north\nsoil_moisture,farm=other,gateway=gw-ffffffffffffffff value=99 0"


def _hostile_device() -> Device:
    return Device(
        gateway="gw-0011223344556677", farm="farm-a", field=SMUGGLED, location="",
        status="active", added_at=0.0, revoked_at=None, public_key=b"\0" * 32,
        sensor_meta={"soil1": {"depth\rcm": "20\n"}},
    )  # fmt: skip


def test_a_line_break_in_a_tag_stays_inside_its_line() -> None:
    reading = Reading("soil1", "soil_moisture", "%", 0.31, 1.8e9)
    payload = Payload("gw-0011223344556677", 7, 1, (reading,))
    lines = _ingestor().lines(Verified(Incoming("t", b""), _hostile_device(), payload))
    assert len(lines) == 1 and "\n" not in lines[0] and "\r" not in lines[0]
    assert "field=north\\nsoil_moisture\\,farm\\=other" in lines[0]
    point = Point("m", {"farm": "a\nb", "x\r": "y"}, {"v": 1.0}, 5).to_line()
    assert point == "m,farm=a\\nb,x\\r=y v=1.0 5"


@pytest.mark.integration
def test_a_line_break_in_a_tag_is_one_point_in_a_real_influxdb(tmp_path: Path) -> None:
    """Before: the break ended the line and the text after it was a point of its own (another
    farm's soil moisture, at the attacker's value) or a parse error that refused the batch."""
    influx = InfluxDB(tmp_path / "influxdb")
    influx.start()
    try:
        writer = make_writer(InfluxConfig(url=influx.url, database="t"))
        reading = Reading("soil1", "soil_moisture", "%", 0.31, 1.8e9)
        payload = Payload("gw-0011223344556677", 7, 1, (reading,))
        ingestor = _ingestor()
        writer.write(ingestor.lines(Verified(Incoming("t", b""), _hostile_device(), payload)))
        writer.close()
        r = httpx.get(influx.url + "/query", params={
            "db": "t", "q": 'SELECT * FROM "soil_moisture" GROUP BY *'})  # fmt: skip
        series = r.json()["results"][0]["series"]
        assert len(series) == 1 and len(series[0]["values"]) == 1
        tags = series[0]["tags"]
        assert tags["farm"] == "farm-a" and tags["gateway"] == "gw-0011223344556677"
        assert tags["field"] == SMUGGLED.replace("\n", "\\n")
        assert tags["depth\\rcm"] == "20\\n"
        assert series[0]["values"][0][series[0]["columns"].index("value")] == 0.31
    finally:
        influx.stop()
