"""The SQLite evidence log: proofs equal the RFC reference, appends share the caller's
transaction, and a killed writer leaves exactly its committed batches."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchor.logstore import (
    LogCorruptError,
    LogError,
    LogStore,
    MerkleLog,
    SqliteLogStore,
    open_log,
)
from fieldproof.formats import merkle

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def entry(i: int) -> bytes:
    """Deterministic entry i, so a second process can reproduce what a first one wrote."""
    return b"fieldproof test entry %d " % i + bytes([i % 251]) * (i % 7)


def mem_conn() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA synchronous=FULL")  # the store insists; not every build defaults to it
    return conn


def mem_log() -> MerkleLog:
    return MerkleLog(SqliteLogStore(mem_conn(), commit_appends=True))


def test_store_satisfies_protocol() -> None:
    assert isinstance(SqliteLogStore(mem_conn()), LogStore)


def test_every_root_and_proof_equals_reference() -> None:
    n_max = 70
    entries = [entry(i) for i in range(n_max)]
    log = mem_log()
    for lo, hi in [(0, 1), (1, 2), (2, 5), (5, 6), (6, 13), (13, 40), (40, 41), (41, 70)]:
        assert log.append(entries[lo:hi]) == lo
    assert log.size() == n_max
    assert log.root(0) == merkle.EMPTY_ROOT
    for n in range(1, n_max + 1):
        root_n = merkle.root_from_leaves(entries[:n])
        assert log.root(n) == root_n
        for i in range(n):
            proof = log.inclusion_proof(i, n)
            assert proof == merkle.reference_inclusion_proof(entries[:n], i)
            merkle.verify_inclusion(log.leaf_hash(i), i, n, proof, root_n)
        for m in range(n + 1):
            proof = log.consistency_proof(m, n)
            assert proof == merkle.reference_consistency_proof(entries[:n], m)
            merkle.verify_consistency(m, n, proof, log.root(m), root_n)
    assert log.root() == log.root(n_max)
    assert [log.entry(i) for i in range(n_max)] == entries
    assert log.entries(3, 9) == entries[3:9]


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=12), data=st.data())
def test_random_batches_match_reference(batches: list[int], data: st.DataObject) -> None:
    log = mem_log()
    entries: list[bytes] = []
    for b in batches:
        new = [entry(len(entries) + k) for k in range(b)]
        assert log.append(new) == len(entries)
        entries += new
    n = data.draw(st.integers(1, len(entries)))
    i = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(0, n))
    assert log.root(n) == merkle.root_from_leaves(entries[:n])
    assert log.inclusion_proof(i, n) == merkle.reference_inclusion_proof(entries[:n], i)
    assert log.consistency_proof(m, n) == merkle.reference_consistency_proof(entries[:n], m)


def test_large_log_sampled_proofs(tmp_path: Path) -> None:
    n = 5000 + 37
    entries = [entry(i) for i in range(n)]
    with open_log(tmp_path / "log.db") as log:
        for lo in range(0, n, 500):
            log.append(entries[lo : lo + 500])
        for size in (1, 1024, 2049, 4999, n):
            root = merkle.root_from_leaves(entries[:size])
            assert log.root(size) == root
            for i in {0, size // 2, size - 1, (size * 7) // 11}:
                assert log.inclusion_proof(i, size) == merkle.reference_inclusion_proof(
                    entries[:size], i
                )
            for m in {1, size // 3, size - 1}:
                proof = log.consistency_proof(m, size)
                assert proof == merkle.reference_consistency_proof(entries[:size], m)


def test_out_of_range_requests_are_log_errors() -> None:
    log = mem_log()
    log.append([entry(i) for i in range(5)])
    for bad in (
        lambda: log.entry(5),
        lambda: log.entry(-1),
        lambda: log.leaf_hash(5),
        lambda: log.root(6),
        lambda: log.root(-1),
        lambda: log.inclusion_proof(5, 5),
        lambda: log.inclusion_proof(0, 6),
        lambda: log.inclusion_proof(3, 3),
        lambda: log.consistency_proof(4, 3),
        lambda: log.consistency_proof(1, 6),
        lambda: log.entries(2, 6),
    ):
        with pytest.raises(LogError):
            bad()
    with pytest.raises(LogError, match="must be bytes"):
        log.append(["text is not an entry"])  # type: ignore[list-item]
    assert log.size() == 5


def _collector_conn(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS dedupe (gateway TEXT, seq INTEGER, PRIMARY KEY (gateway, seq))"
    )
    conn.commit()
    return conn


def test_append_rides_in_callers_transaction(tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    conn = _collector_conn(path)
    store = SqliteLogStore(conn)
    log = MerkleLog(store)
    log.append([entry(0), entry(1)])
    conn.commit()
    root2 = log.root()

    # The collector's own row and the log entries: rolled back together.
    conn.execute("INSERT INTO dedupe VALUES ('gw-1', 7)")
    assert store.append([entry(2), entry(3), entry(4)]) == 2
    assert log.size() == 5
    other = sqlite3.connect(path)
    assert MerkleLog(SqliteLogStore(other)).size() == 2, "uncommitted appends must be invisible"
    conn.rollback()
    assert log.size() == 2
    assert log.root() == root2
    assert conn.execute("SELECT count(*) FROM dedupe").fetchone()[0] == 0

    # ...and committed together; indices are reused after the rollback, no gaps.
    conn.execute("INSERT INTO dedupe VALUES ('gw-1', 7)")
    assert store.append([entry(2), entry(3), entry(4)]) == 2
    conn.commit()
    assert MerkleLog(SqliteLogStore(other)).root() == merkle.root_from_leaves(
        [entry(i) for i in range(5)]
    )
    assert other.execute("SELECT count(*) FROM dedupe").fetchone()[0] == 1


def test_append_without_open_transaction_still_waits_for_commit(tmp_path: Path) -> None:
    path = tmp_path / "collector.db"
    conn = _collector_conn(path)
    conn.isolation_level = None  # autocommit mode: append must still not commit by itself
    store = SqliteLogStore(conn)
    store.append([entry(0)])
    assert conn.in_transaction
    conn.execute("INSERT INTO dedupe VALUES ('gw-2', 1)")
    conn.rollback()
    assert store.size() == 0
    assert conn.execute("SELECT count(*) FROM dedupe").fetchone()[0] == 0


def test_failed_append_leaves_callers_rows_and_log_intact(tmp_path: Path) -> None:
    """A write failing half-way (here: a trigger) undoes only that append."""
    conn = _collector_conn(tmp_path / "c.db")
    log = MerkleLog(SqliteLogStore(conn))
    log.append([entry(i) for i in range(3)])
    conn.commit()
    conn.execute(
        "CREATE TRIGGER boom BEFORE INSERT ON fp_log_nodes WHEN NEW.level = 2 "
        "BEGIN SELECT RAISE(ABORT, 'disk said no'); END"
    )
    conn.commit()
    conn.execute("INSERT INTO dedupe VALUES ('gw-3', 1)")
    with pytest.raises(sqlite3.IntegrityError, match="disk said no"):
        log.append([entry(3), entry(4)])  # entry 3 completes a level-2 node
    assert conn.in_transaction
    assert log.size() == 3
    assert conn.execute("SELECT count(*) FROM fp_log_nodes").fetchone()[0] == 2 * 3 - 2
    assert conn.execute("SELECT count(*) FROM dedupe").fetchone()[0] == 1
    conn.execute("DROP TRIGGER boom")
    log.append([entry(3), entry(4)])
    conn.commit()
    assert log.root() == merkle.root_from_leaves([entry(i) for i in range(5)])


def test_reopen_gives_same_root_and_proofs(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    with open_log(path) as log:
        log.append([entry(i) for i in range(100)])
        log.append([entry(i) for i in range(100, 333)])
        root, incl, cons = log.root(), log.inclusion_proof(77, 300), log.consistency_proof(100, 333)
    with open_log(path) as log:
        assert log.size() == 333
        assert log.root() == root == merkle.root_from_leaves([entry(i) for i in range(333)])
        assert log.inclusion_proof(77, 300) == incl
        assert log.consistency_proof(100, 333) == cons
        assert log.append([entry(333)]) == 333


def test_open_log_is_wal_and_full_sync(tmp_path: Path) -> None:
    with open_log(tmp_path / "log.db") as log:
        assert isinstance(log.store, SqliteLogStore)
        conn = log.store.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2


def test_refuses_connection_without_full_sync() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("PRAGMA synchronous=NORMAL")
    with pytest.raises(LogError, match="synchronous=FULL"):
        SqliteLogStore(conn)


def test_missing_node_is_reported_as_corruption(tmp_path: Path) -> None:
    with open_log(tmp_path / "log.db") as log:
        log.append([entry(i) for i in range(8)])
        assert isinstance(log.store, SqliteLogStore)
        log.store.conn.execute("DELETE FROM fp_log_nodes WHERE level = 3")
        with pytest.raises(LogCorruptError, match="damaged"):
            log.root()
        log.store.conn.execute("DELETE FROM fp_log_entries WHERE idx = 4")
        with pytest.raises(LogCorruptError, match="damaged"):
            log.entries(0, 8)


_CHILD = textwrap.dedent(
    """
    import os, sqlite3, sys
    sys.path.insert(0, sys.argv[1])
    from anchor.logstore import SqliteLogStore
    from tests.anchor.test_logstore import entry
    path, mode, batch = sys.argv[2], sys.argv[3], int(sys.argv[4])
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    store = SqliteLogStore(conn)
    n = store.size()
    rounds = 0
    while True:
        store.append([entry(n + k) for k in range(batch)])
        if mode == "exit" and rounds == 3:
            os._exit(0)  # die with a whole batch appended but not committed
        conn.commit()
        n += batch
        rounds += 1
        print(n, flush=True)
    """
)


def _run_child(path: Path, mode: str, batch: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(PROJECT_ROOT), str(path), mode, str(batch)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )


def _assert_log_is_whole(path: Path, batch: int) -> int:
    with open_log(path) as log:
        size = log.size()
        assert size % batch == 0, "a partial batch survived"
        entries = log.entries(0, size)
        assert entries == [entry(i) for i in range(size)]
        assert log.root() == merkle.root_from_leaves(entries)
        if size > 1:
            merkle.verify_consistency(1, size, log.consistency_proof(1), log.root(1), log.root())
        return size


def test_exit_mid_batch_keeps_committed_drops_uncommitted(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    child = _run_child(path, "exit", 250)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    assert out.split() == ["250", "500", "750"]
    assert _assert_log_is_whole(path, 250) == 750


def test_sigkill_keeps_every_reported_commit(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    child = _run_child(path, "kill", 100)
    assert child.stdout is not None
    reported = 0
    for line in child.stdout:
        reported = int(line)
        if reported >= 2000:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    size = _assert_log_is_whole(path, 100)
    assert size >= reported
    # The recovered log keeps growing from where it was, with the same tree.
    with open_log(path) as log:
        assert log.append([entry(size)]) == size
        assert log.root() == merkle.root_from_leaves([entry(i) for i in range(size + 1)])
