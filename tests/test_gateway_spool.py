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
    assert s.requeue_unconfirmed() == 1
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
        cwd=Path(__file__).parent.parent,
        env={**os.environ},
        timeout=60,
    )
    assert proc.returncode == 9
    s = Spool(path)
    pending = s.pending(0, 1000)
    assert [m.seq for m in pending] == list(range(1, 51))
    assert all(m.message == b"m%d" % m.seq for m in pending)
    assert _add(s, 1) == [51]
