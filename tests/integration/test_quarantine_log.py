"""A replay flood must not flood the collector's log: per batch one WARNING per (reason,
gateway) with the count and the first message's detail, at most one per pair per 60 s, and
the messages held back are counted in the next line. Rows and counters still record every
single message. Real store, log, registry and InfluxDB (the hostile-message rig); the 60 s
window runs on a clock the test moves, so nothing waits a minute."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.ingest import Incoming, QuarantineLog
from fieldproof import wire
from fieldproof.services import InfluxDB
from tests.support.hostile import Rig, key_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def rig(tmp_path: Path, influx: InfluxDB) -> Iterator[Rig]:
    r = Rig(tmp_path, influx, quarantine_max_rows=100_000)
    try:
        yield r
    finally:
        r.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "fieldproof.collector" and r.levelno == logging.WARNING
    ]


def test_replay_flood_is_summarised_not_logged_per_message(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    rig.ingestor.quarantine_log = QuarantineLog(clock=clock)
    captured = Incoming(rig.topic(rig.victim), rig.message(rig.victim, seq=1))
    assert rig.process([captured]).accepted == 1
    forger = key_for("forger")

    def forged(seq: int) -> Incoming:
        """Signed by a key that is not the good gateway's: bad_signature."""
        reading = wire.Reading("s0", "soil_moisture", "/", 0.2, rig.t0 + seq)
        msg = wire.encode_message(wire.Payload(rig.good, seq, 1, (reading,)), forger)
        return Incoming(rig.topic(rig.good), msg)

    caplog.set_level(logging.WARNING, logger="fieldproof.collector")
    total: Counter[str] = Counter()

    def batch(replays: int, forgeries: int) -> None:
        result = rig.process([captured] * replays + [forged(900 + i) for i in range(forgeries)])
        assert result.quarantined == Counter(
            {k: v for k, v in {"replay": replays, "bad_signature": forgeries}.items() if v}
        )
        total.update(result.quarantined)

    batch(400, 3)  # t = 0
    lines = warnings(caplog)
    assert len(lines) == 2, lines  # not 403
    replay = next(line for line in lines if " as replay" in line)
    assert replay.startswith(f"quarantined 400 message(s) from {rig.victim} as replay, first: ")
    assert "seq 1 already accepted with identical content" in replay
    forged_line = next(line for line in lines if " as bad_signature" in line)
    assert forged_line.startswith(f"quarantined 3 message(s) from {rig.good} as bad_signature")

    caplog.clear()
    for _ in range(3):  # t = 10, 20, 30 s: inside the window, held back and counted
        clock.now += 10
        batch(400, 2)
    assert warnings(caplog) == []

    caplog.clear()
    clock.now += 31  # 61 s after the first lines
    batch(400, 1)
    lines = warnings(caplog)
    assert len(lines) == 2, lines
    replay = next(line for line in lines if " as replay" in line)
    assert replay.startswith(f"quarantined 400 message(s) from {rig.victim} as replay")
    assert replay.endswith("; 1200 more were quarantined since the previous such line 61 s ago")
    forged_line = next(line for line in lines if " as bad_signature" in line)
    assert forged_line.endswith("; 6 more were quarantined since the previous such line 61 s ago")

    caplog.clear()
    clock.now += 5
    batch(250, 0)  # held back: the replay line was 5 s ago
    assert warnings(caplog) == []
    clock.now += 60  # the flood stopped; the next batch (good only) reports the held ones
    good = rig.good_message()
    assert rig.process([good]).accepted == 1
    assert warnings(caplog) == [
        f"quarantined 250 more message(s) from {rig.victim} as replay since the previous "
        f"such line 65 s ago, first: seq 1 already accepted with identical content "
        "(a redelivery or a replay)"
    ]

    # every message is still a counter and a row, exactly as before
    assert total == Counter(replay=2250, bad_signature=10)
    assert rig.store.quarantine_by_reason() == {"replay": 2250, "bad_signature": 10}
    rows = rig.db.execute("SELECT reason, count(*) FROM quarantine GROUP BY reason").fetchall()
    assert dict(rows) == {"replay": 2250, "bad_signature": 10}
    rig.check_counters_and_log()


def test_messages_without_a_gateway_are_grouped_by_reason(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fieldproof.collector")
    junk = [Incoming("somewhere/else", b"x") for _ in range(50)]
    assert rig.process(junk).quarantined == Counter(topic_mismatch=50)
    assert warnings(caplog) == [
        "quarantined 50 message(s) from topic 'somewhere/else' as topic_mismatch, first: "
        "not a readings topic: 'somewhere/else'"
    ]
