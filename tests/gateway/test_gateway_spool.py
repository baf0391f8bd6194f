"""The gateway spool: sequence numbers never repeat, nothing leaves without a receipt, a full
spool drops the oldest and says so, and a power cut mid-write loses nothing committed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.spool import Spool


def _add(spool: Spool, n: int, readings: int = 5) -> list[int]:
    return [spool.add(lambda seq: (f"msg-{seq}".encode(), readings)) for _ in range(n)]


def test_sequence_survives_reopen_and_never_repeats(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool.sqlite")
    first = _add(s, 5)
    s.confirm(first)
    s.close()
    s = Spool(tmp_path / "spool.sqlite")
    again = _add(s, 3)
    assert first == [1, 2, 3, 4, 5]
    assert again == [6, 7, 8]
    assert s.new_boot() == 1 and s.new_boot() == 2


def test_failed_build_does_not_consume_or_store(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool.sqlite")

    def boom(seq: int) -> tuple[bytes, int]:
        raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        s.add(boom)
    assert s.depth == 0
    assert _add(s, 1) == [1]


def test_published_then_confirmed_then_deleted(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool.sqlite")
    seqs = _add(s, 4)
    assert [m.seq for m in s.pending(0, 10)] == seqs
    assert s.mark_published(seqs[:3]) == 3
    assert [m.seq for m in s.pending(0, 10)] == [4]  # published ones wait for a receipt
    assert s.unconfirmed == 3
    assert s.confirm([1, 2]) == 2
    st = s.stats()
    assert (st.depth, st.unconfirmed, st.confirmed_messages, st.confirmed_readings) == (2, 1, 2, 10)
    assert st.published_readings == 15
    # no receipt for seq 3: requeue makes it pending again, and re-publishing it does not
    # count its readings as published twice
    assert s.requeue(s.overdue(0.0, 0.0)) == 1  # every unconfirmed one is overdue at 0 s
    assert [m.seq for m in s.pending(0, 10)] == [3, 4]
    s.mark_published([3])
    assert s.stats().published_readings == 15
    # a receipt may overtake the PUBACK: the readings still count as published, once
    s.confirm([3, 4])
    st = s.stats()
    assert (st.depth, st.unconfirmed, st.published_readings, st.confirmed_readings) == (
        0,
        0,
        20,
        20,
    )


def test_full_spool_drops_oldest_and_counts(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool.sqlite", max_messages=100)
    _add(s, 130)
    st = s.stats()
    assert st.depth == 100
    assert st.dropped_messages == 30
    assert s.pending(0, 1)[0].seq == 31  # the newest are kept


def test_power_cut_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    """A child process spools messages and dies with os._exit (no cleanup, like a power cut)
    while a transaction is open; every committed message is there, the open one is not, and
    the next sequence number follows the last committed one."""
    path = tmp_path / "spool.sqlite"
    code = textwrap.dedent(f"""
        import os
        from gateway.spool import Spool
        s = Spool({str(path)!r})
        for i in range(50):
            s.add(lambda seq: (b"m%d" % seq, 1))
        def die(seq):
            os._exit(9)
        s.add(die)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ},
        timeout=60,
    )
    assert proc.returncode == 9
    s = Spool(path)
    pending = s.pending(0, 1000)
    assert [m.seq for m in pending] == list(range(1, 51))
    assert all(m.message == b"m%d" % m.seq for m in pending)
    assert _add(s, 1) == [51]


def _wal_frames(s: Spool) -> int:
    """Frames in the write-ahead log: each is one database page written for a commit."""
    return int(s._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


def test_a_delivered_message_costs_one_commit(tmp_path: Path) -> None:
    """Stored, PUBACKed, receipted: the PUBACK writes nothing and the receipt's delete rides
    on the next message's commit, so a message is about two pages (its row and the meta row)
    — it was eight (three commits, and an index) before published state moved to memory."""
    s = Spool(tmp_path / "spool.sqlite")
    s._db.execute("PRAGMA wal_autocheckpoint=0")  # keep every frame in the WAL to count it
    s.new_boot()
    before = _wal_frames(s)
    n = 200
    for _ in range(n):
        seq = s.add(lambda seq: (b"x" * 400, 5))
        assert s.mark_published([seq]) == 1
        assert s.confirm_later([seq]) == 1
    frames = _wal_frames(s) - before
    assert frames / n <= 2.5, f"{frames / n:.1f} pages written per message"
    st = s.stats()
    assert (st.depth, st.unconfirmed, st.confirmed_messages, st.published_readings) == (
        0,
        0,
        n,
        5 * n,
    )


def test_published_state_is_memory_only(tmp_path: Path) -> None:
    """After a restart every message still spooled is pending again (it is resent and the
    collector drops the duplicate); a receipted message is never resent while the agent runs,
    and its row is gone once the next write (or close) commits."""
    path = tmp_path / "spool.sqlite"
    s = Spool(path)
    seqs = _add(s, 4)
    s.mark_published(seqs)
    assert s.pending(0, 10) == []
    assert s.confirm_later([1, 2]) == 2
    assert s.depth == 2 and s.unconfirmed == 2
    # what another process (or the next start, after a crash) sees now: the rows are still
    # there, nothing is marked published
    other = Spool(path)
    assert [m.seq for m in other.pending(0, 10)] == [1, 2, 3, 4]
    assert other.stats().confirmed_messages == 0
    other.close()
    s.requeue(s.overdue(0.0, 0.0))
    assert [m.seq for m in s.pending(0, 10)] == [3, 4]  # 1 and 2 are never resent
    assert _add(s, 1) == [5]  # this commit deletes 1 and 2
    s.close()
    s = Spool(path)
    assert [m.seq for m in s.pending(0, 10)] == [3, 4, 5]
    st = s.stats()
    assert (st.confirmed_messages, st.confirmed_readings, st.published_readings) == (2, 10, 20)
    # 3 and 4 were counted as published before the restart: a resend does not count them again
    s.mark_published([3, 4, 5])
    assert s.stats().published_readings == 25


def test_receipts_for_unknown_or_deleted_messages_are_ignored(tmp_path: Path) -> None:
    s = Spool(tmp_path / "spool.sqlite")
    _add(s, 2)
    assert s.confirm([1]) == 1
    assert s.confirm([1, 99]) == 0  # a duplicate receipt, a seq never spooled
    assert s.mark_published([1, 99]) == 0  # a late PUBACK after the receipt
    st = s.stats()
    assert (st.depth, st.unconfirmed, st.confirmed_messages) == (1, 0, 1)


def test_old_spool_is_migrated(tmp_path: Path) -> None:
    """A spool written by the version that kept published state on disk: its index is dropped,
    and messages it already counted as published are not counted twice."""
    import sqlite3

    path = tmp_path / "spool.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE outbox (seq INTEGER PRIMARY KEY, created REAL NOT NULL,
            readings INTEGER NOT NULL, message BLOB NOT NULL, published_at REAL,
            publishes INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX outbox_unsent ON outbox (seq) WHERE published_at IS NULL;
        INSERT INTO meta VALUES ('next_seq', 3), ('boot', 4), ('published_readings', 5),
            ('confirmed_messages', 0), ('confirmed_readings', 0), ('dropped_messages', 0);
        INSERT INTO outbox VALUES (1, 0, 5, x'00', 1.0, 1), (2, 0, 5, x'00', NULL, 0);
        """
    )
    db.commit()
    db.close()
    s = Spool(path)
    assert s.new_boot() == 5
    assert [m.seq for m in s.pending(0, 10)] == [1, 2]  # both resent after the upgrade
    s.mark_published([1, 2])
    assert s.stats().published_readings == 10  # seq 1 was counted already
    assert _add(s, 1) == [3]
    index = s._db.execute("SELECT name FROM sqlite_master WHERE type='index'").fetchall()
    assert index == [("sqlite_autoindex_meta_1",)]


class _FakeTime:
    """The spool's ``time`` module with a monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return 1_700_000_000.0 + self.now


def test_a_lost_message_is_overdue_on_its_own_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker lost seq 1 while seqs 2.. kept flowing and being receipted: seq 1 is still
    due for a resend after the timeout (a shared "waiting since" that every receipt reset kept
    postponing it for as long as traffic flowed), and each resend of it doubles its wait."""
    import gateway.spool

    clock = _FakeTime()
    monkeypatch.setattr(gateway.spool, "time", clock)
    s = Spool(tmp_path / "spool.sqlite")
    s.mark_published(_add(s, 1))  # seq 1: PUBACKed, then lost by the broker
    for _ in range(12):  # new messages every second, each receipted at once
        clock.now += 1.0
        seq = _add(s, 1)
        s.mark_published(seq)
        s.confirm_later(seq)
        assert s.overdue(10.0, 900.0) == ([1] if clock.now - 1000.0 >= 10.0 else [])
    assert s.requeue(s.overdue(10.0, 900.0)) == 1
    assert [m.seq for m in s.pending(0, 10)] == [1]
    s.mark_published([1])  # resent and PUBACKed again, and lost again
    clock.now += 19.0
    assert s.overdue(10.0, 900.0) == []  # the second wait is 20 s
    clock.now += 1.0
    assert s.overdue(10.0, 900.0) == [1]
    s.requeue([1])
    s.mark_published([1])
    clock.now += 35.0
    assert s.overdue(10.0, 900.0) == []  # the third wait is 40 s ...
    assert s.overdue(10.0, 35.0) == [1]  # ... unless capped below that
    s.confirm_later([1])  # a receipt at last: nothing is overdue, the resend count is gone
    assert s.overdue(10.0, 900.0) == [] and s.unconfirmed == 0
    s.close()
