"""The collector's data directory: its SQLite database, opened durably, and the lock that keeps
a second collector off it.

The collector that runs on a data directory holds ``<data_dir>/collector.lock`` (an exclusive
``flock``; ``open_db(…, lock=True)``). Two collectors on one directory would each append to
the evidence log from their own view of it and sign checkpoints of two different trees under
one key and origin: a forked log, which every verifier must reject. The kernel drops the lock
when the process dies, even by ``kill -9``, so there is never a stale lock to clean up.
Commands that only read (status, export, the anchorer) or make single registry changes do
not take it. Shared (not in ``collector/``) because the anchorer opens the same database to
read the log the collector writes."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sqlite3
import time
from pathlib import Path

from fieldproof.errors import StorageError

log = logging.getLogger("fieldproof.collector")

LOCK_FILE = "collector.lock"


class DataDirLocked(StorageError):
    """Another collector runs on this data directory; the message names it and what to do."""


class LockHandle:
    """An exclusive ``flock`` on ``<data_dir>/collector.lock``, held until :meth:`release` or
    until the process ends. The file says who holds it (pid, host, directory, since when)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (the file stays: the next holder overwrites it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _holder(fd: int) -> dict[str, object]:
    """What the lock file says about who holds (or last held) the lock; {} if unreadable."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).split(b"\n", 1)[0] or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    pid, host = holder.get("pid"), holder.get("host")
    since = holder.get("since")
    when = (
        time.strftime(" since %Y-%m-%d %H:%M UTC", time.gmtime(since))
        if isinstance(since, int | float)
        else ""
    )
    return f"pid {pid if pid is not None else '(unknown)'} on {host or '(unknown host)'}{when}"


def running_collector(data_dir: Path) -> str | None:
    """Who runs a collector on ``data_dir`` now ("pid 123 on host since …"), or None when no
    process holds its lock. Takes and drops the lock at once when it is free; never waits."""
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe(_holder(fd))
    finally:
        os.close(fd)  # closing drops a lock we took
    return None


def lock_data_dir(data_dir: Path) -> LockHandle:
    """Take the exclusive lock on ``data_dir`` for a running collector, or raise
    :class:`DataDirLocked` naming the process that holds it. Never waits."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        pid = holder.get("pid")
        raise DataDirLocked(
            f"another collector ({_describe(holder)}) is running on {data_dir}: two on one "
            "data directory would fork the evidence log. Stop that one first "
            f"(systemctl stop fieldproof-collector, or kill {pid if pid else 'it'}), or give "
            "this one its own data_dir, log origin and log key."
        ) from None
    except OSError:
        os.close(fd)
        raise
    previous = _holder(fd)
    here = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "data_dir": str(data_dir.resolve()),
        "since": time.time(),
    }
    if previous and (
        previous.get("data_dir") != here["data_dir"] or previous.get("host") != here["host"]
    ):
        log.warning(
            "%s was last held by a collector for %s on %s: if this directory is a copy of one "
            "another collector still uses, the two share a log key and origin and will fork "
            "the evidence log; stop one of them (copy a collector's data only while it is "
            "stopped). Nothing to do if the directory was moved.",
            path,
            previous.get("data_dir"),
            previous.get("host"),
        )
    data = json.dumps(here).encode() + b"\n"
    os.pwrite(fd, data, 0)  # written first, then cut: a reader never sees an empty file
    os.ftruncate(fd, len(data))
    return LockHandle(path, fd)


class _LockedConnection(sqlite3.Connection):
    """A connection that holds the data directory's lock and drops it when closed."""

    data_dir_lock: LockHandle | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.data_dir_lock is not None:
                self.data_dir_lock.release()


def open_db(path: Path, lock: bool = False) -> sqlite3.Connection:
    """The collector database, durable on every commit. ``lock=True`` is for the collector
    that runs on it: the data directory's lock is taken first (:func:`lock_data_dir`; raises
    :class:`DataDirLocked`) and held until the connection is closed or the process ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_data_dir(path.parent) if lock else None
    try:
        db = sqlite3.connect(path, check_same_thread=False, timeout=30, factory=_LockedConnection)
        db.data_dir_lock = handle
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except BaseException:
        if handle is not None:
            handle.release()
        raise
    return db


