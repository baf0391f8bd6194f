"""The collector's line-protocol fast path equals the plain Point encoding.

``Ingestor.lines`` caches each series' escaped key per device object instead of building a
``Point`` per reading; this checks it byte for byte against the straightforward model (one
Point per reading, tags sorted and escaped) on generated devices and payloads, including tag
values that need escaping, sensor metadata, missing readings and a device that changes."""

from __future__ import annotations

import sqlite3
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from collector.influx import PointWriter
from collector.ingest import Incoming, Ingestor, Verified
from collector.points import Point
from collector.registry import Device, Registry
from collector.store import CollectorStore
from fieldproof.wire import Payload, Reading

_text = st.text(
    alphabet=string.ascii_letters + string.digits + ' ,=\\"_-é', min_size=0, max_size=12
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
        assert ingestor.lines(v) == _model(d, payload)
