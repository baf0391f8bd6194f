"""The gateway status format (fieldproof/formats/status.py): hostile bytes are refused with a
reason and nothing else, what the gateway agent builds is what a collector accepts, and every
status a collector accepts turns into stats points InfluxDB can take."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.points import Point
from collector.status import SeenStatus, StatusBoard
from fieldproof.formats.status import (
    MAX_STATUS_BYTES,
    MAX_TEXT,
    OFFLINE,
    STATUS_REASONS,
    StatusRejected,
    clip_text,
    encode_status,
    parse_status,
)

FAST = settings(max_examples=300, deadline=None, database=None)

#: the attacks of issue 13, each with the reason a collector must give
ATTACKS: list[tuple[bytes, str]] = [
    (b'{"online": true, "spool_depth": []}', "bad_field"),
    (b'{"online": true, "uptime_s": {}}', "bad_field"),
    (b'{"online": true, "uptime_s": 1e400}', "bad_field"),
    (b'{"online": true, "spool_depth": 1e400}', "bad_field"),
    (b'{"online": true, "spool_depth": 100000000000000000000000000000}', "bad_field"),
    (b'{"online": true, "spool_depth": -1}', "bad_field"),
    (b'{"online": true, "spool_depth": 3.0}', "bad_field"),
    (b'{"online": "yes"}', "bad_field"),
    (b'{"online": 1}', "bad_field"),
    (b'{"online": true, "version": "1\\n\\u001b[2J"}', "bad_field"),
    (b'{"online": true, "version": "' + b"v" * (MAX_TEXT + 1) + b'"}', "bad_field"),
    (b'{"online": true, "sensors": {"a": {"errors": "many"}}}', "bad_field"),
    (b'{"online": true, "sensors": []}', "bad_field"),
    (b'{"online": true, "clock_state": {"plausible": null}}', "bad_field"),
    (b'{"spool_depth": 3}', "bad_field"),
    (b"[]", "bad_field"),
    (b"1e400", "bad_field"),
    (b'"online"', "bad_field"),
    (b"null", "bad_field"),
    (b"[" * 2000, "invalid_json"),
    (b'{"online": true, "x": ' + b"[" * 300 + b"]" * 300 + b"}", "invalid_json"),
    (b"\xff\xfe{}", "invalid_json"),
    (b'{"online": NaN}', "bad_field"),
    (b'{"online": true, "uptime_s": NaN}', "bad_field"),
    (b'{"online": true, "clock": -Infinity}', "bad_field"),
    (b'{"online": true', "invalid_json"),
    (b" " * (MAX_STATUS_BYTES + 1), "too_large"),
    (b'{"online": true, "pad": "' + b"x" * MAX_STATUS_BYTES + b'"}', "too_large"),
]


@pytest.mark.parametrize(("payload", "reason"), ATTACKS, ids=lambda v: repr(v)[:40])
def test_attacks_are_refused_with_their_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(StatusRejected) as info:
        parse_status(payload)
    assert info.value.reason == reason
    assert info.value.detail  # something an operator can read


def test_sensor_count_is_bounded() -> None:
    sensors = {f"s{i}": {"errors": 0} for i in range(129)}
    with pytest.raises(StatusRejected, match="sensors"):
        parse_status(json.dumps({"online": True, "sensors": sensors}).encode())


def test_empty_retained_message_means_offline() -> None:
    assert parse_status(b"") is OFFLINE and not OFFLINE.online


def test_unknown_keys_are_ignored_and_known_ones_kept() -> None:
    st_ = parse_status(
        b'{"online": true, "spool_depth": 7, "uptime_s": 12, "from_the_future": {"a": [1]},'
        b' "sensors": {"soil": {"errors": 2, "last_error": "timeout"}, "air": {"errors": 1}}}'
    )
    assert st_.online and st_.spool_depth == 7 and st_.uptime_s == 12.0
    assert st_.sensor_errors == 3


@FAST
@given(st.binary(max_size=2048))
def test_any_bytes_give_a_status_or_a_reason(payload: bytes) -> None:
    reason = None
    try:
        parse_status(payload)
    except StatusRejected as exc:
        reason = exc.reason
    assert reason is None or reason in STATUS_REASONS


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=30,
)
KEYS = [
    "online", "gateway", "version", "boot", "uptime_s", "last_publish", "clock", "clock_state",
    "spool_depth", "unconfirmed", "spool_oldest_age_s", "dropped_messages", "next_seq",
    "spool_errors", "spool_writable", "spool_error", "held_in_memory",
    "unspooled_dropped_readings", "sensors",
]  # fmt: skip
VALUE = r'("([^"\\]|\\.)*"|[-0-9.e+]+i?)'
#: one line-protocol line: measurement, tags, fields of known kinds, a timestamp
LINE = re.compile(rf"^[a-z_]+(,[^ ,=]+=[^ ,]+)+ [a-z_]+={VALUE}(,[a-z_]+={VALUE})* \d+$")


def assert_reason(exc: StatusRejected) -> None:
    assert exc.reason in STATUS_REASONS


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=len(KEYS)), st.booleans())
def test_an_accepted_status_always_makes_valid_stats_points(
    fields: dict[str, Any], online: bool
) -> None:
    """Statuses with the real keys and values of every JSON type: each is refused with a
    reason, or it becomes points whose fields are finite and whose lines are one line each."""
    fields["online"] = fields.get("online", online)
    try:
        payload = json.dumps(fields, allow_nan=True).encode()
    except (ValueError, OverflowError):
        return
    try:
        status = parse_status(payload)
    except StatusRejected as exc:
        assert_reason(exc)
        return
    gw = "gw-00000000000000aa"

    class Device:
        farm, field = "farm", "field"

    board = StatusBoard("fieldproof/v1", lambda g: Device() if g == gw else None)  # type: ignore[arg-type,return-value]
    board.latest[gw] = SeenStatus(status, 1.0)
    (point,) = board.points("c1", 1)
    for value in point.fields.values():
        assert not isinstance(value, float) or math.isfinite(value)
    line = point.to_line()
    assert "\n" not in line and LINE.match(line), line


def test_gateway_status_is_what_a_collector_accepts() -> None:
    """The agent builds its status with encode_status: text from sensors (exception messages
    with newlines, escape codes, any length) is clipped so the collector takes it whole."""
    noisy = "Modbus timeout\n\x1b[31mretrying\x1b[0m " + "x" * 500
    payload = encode_status(
        {
            "gateway": "gw-00000000000000aa",
            "online": True,
            "version": "0.1.0",
            "uptime_s": 3.5,
            "clock": 1.8e9,
            "clock_state": {"plausible": True, "synced": None},
            "spool_depth": 4,
            "sensors": {clip_text("soil\n0"): {"errors": 2, "last_error": clip_text(noisy)}},
        }
    )
    status = parse_status(payload)
    assert status.spool_depth == 4 and status.sensor_errors == 2
    (health,) = status.sensors.values()
    assert len(health.last_error) == MAX_TEXT and "\n" not in health.last_error


def test_seen_status_clock_check() -> None:
    good = parse_status(
        b'{"online": true, "clock": 1000.0, "clock_state": {"plausible": true, "synced": true}}'
    )
    assert SeenStatus(good, 1050.0).clock_ok() == 1
    assert SeenStatus(good, 1200.0).clock_ok() == 0  # two minutes apart
    unsynced = parse_status(
        b'{"online": true, "clock": 1000.0, "clock_state": {"plausible": true, "synced": false}}'
    )
    assert SeenStatus(unsynced, 1000.0).clock_ok() == 0
    assert SeenStatus(parse_status(b'{"online": true}'), 1000.0).clock_ok() == 0


def test_unregistered_gateway_and_internal_errors_are_counted_not_raised() -> None:
    def devices(gateway: str) -> None:
        if gateway == "gw-boom":
            raise RuntimeError("registry read failed")
        return None

    board = StatusBoard("fieldproof/v1", devices)
    board.take(
        [
            ("fieldproof/v1/gw-nobody/status", b'{"online": true}', 1.0),
            ("fieldproof/v1/gw-boom/status", b'{"online": true}', 1.0),
            ("elsewhere/status", b'{"online": true}', 1.0),
            ("fieldproof/v1/gw-nobody/status", b"[" * 5000, 1.0),
        ]
    )
    assert board.ignored == {"unknown_gateway": 2, "internal_error": 1, "invalid_json": 1}
    assert board.latest == {}
    assert isinstance(board.points("c1", 1)[0], Point)
