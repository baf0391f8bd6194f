"""The quarantine is bounded by bytes as well as rows (issue 13, Low): 100,000 rows of 64 KiB
messages were ~6.4 GB on the volume that holds collector.sqlite. Past the bytes bound a row is
kept without the message's bytes (and with its topic and detail cut short); the counters count
every message. On a real SQLite file, reopened as a restarted collector would."""

from __future__ import annotations

from pathlib import Path

from collector.store import QUARANTINE_TEXT_KEPT, CollectorStore, QuarantineRow
from fieldproof.config import CollectorConfig
from fieldproof.datadir import open_db

GW = "gw-0011223344556677"


def _row(i: int, size: int = 10_000, detail: str = "bad signature") -> QuarantineRow:
    return QuarantineRow(f"fieldproof/v1/{GW}/readings", GW, "bad_signature", detail,
                         bytes([i % 251]) * size)  # fmt: skip


def _held(path: Path) -> tuple[int, int, int]:
    """(rows, rows with their message, bytes held) as SQLite has them."""
    db = open_db(path)
    try:
        rows, with_message, held = db.execute(
            "SELECT count(*), count(message), coalesce(sum(length(CAST(topic AS BLOB))"
            " + length(CAST(detail AS BLOB)) + coalesce(length(message), 0)), 0)"
            " FROM quarantine"
        ).fetchone()
    finally:
        db.close()
    return int(rows), int(with_message), int(held)


def test_quarantine_keeps_message_bytes_up_to_its_bound_and_counts_on(tmp_path: Path) -> None:
    path = tmp_path / "collector.sqlite"
    bound = 100_000
    store = CollectorStore(open_db(path), quarantine_max_rows=1000, quarantine_max_bytes=bound)
    for batch in range(5):
        batch_rows = [_row(batch * 10 + i) for i in range(10)]
        store.commit([], batch_rows, {"quarantined:bad_signature": 10})
    rows, with_message, held = _held(path)
    assert rows == 50  # every message still has its row (the rows bound is not reached)
    assert with_message == 9  # 9 × ~10 KB fit under 100 KB, the tenth would not
    assert held <= bound
    counters = store.counters()
    assert counters["quarantined:bad_signature"] == 50
    assert counters["quarantine_unkept"] == 41
    store.db.close()

    # a restarted collector goes on from what the database holds, not from zero
    store = CollectorStore(open_db(path), quarantine_max_rows=1000, quarantine_max_bytes=bound)
    huge_detail = "x" * 5000
    store.commit([], [_row(99, detail=huge_detail)], {"quarantined:bad_signature": 1})
    rows, with_message, held = _held(path)
    assert (rows, with_message) == (51, 9) and held <= bound
    last = store.quarantine_rows(1)[0]
    assert len(last[4]) == QUARANTINE_TEXT_KEPT  # the detail is cut short too
    # small messages still fit in what is left
    store.commit([], [_row(1, size=10)], {"quarantined:bad_signature": 1})
    assert _held(path)[1] == 10
    assert store.counters()["quarantined:bad_signature"] == 52
    store.db.close()


def test_the_rows_bound_still_holds_and_is_counted(tmp_path: Path) -> None:
    path = tmp_path / "collector.sqlite"
    store = CollectorStore(open_db(path), quarantine_max_rows=20, quarantine_max_bytes=10**9)
    store.commit([], [_row(i, size=100) for i in range(30)], {"quarantined:bad_signature": 30})
    assert _held(path)[:2] == (20, 20)
    assert store.counters()["quarantine_unkept"] == 10
    assert store.counters()["quarantined:bad_signature"] == 30
    store.db.close()


def test_the_bound_is_a_setting_with_a_bounded_default() -> None:
    cfg = CollectorConfig()
    assert 0 < cfg.quarantine_max_bytes <= 1024**3
    assert CollectorConfig(quarantine_max_bytes=5).quarantine_max_bytes == 5
