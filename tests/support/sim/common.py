"""Shared plumbing for the device simulators: the pty master, the control file, the log.

A simulator is started by the test harness with the master side of a pseudo-terminal (an
inherited file descriptor), a control file and a log file. The control file is JSON that the
test may rewrite at any time; the simulator re-reads it whenever its content changes, and a
change restarts the queue of one-shot faults it lists (``"faults": [...]``, one consumed per
request). Every request the simulator sees is appended to the log as one JSON line, so a test
can check what actually went over the wire. Nothing here models baud rate or parity: a pty has
neither, so any timing a device has (measurement time, reply delay) is put in on purpose."""

from __future__ import annotations

import json
import os
import select
import sys
import time
from typing import Any


class Control:
    """The test's instructions, reloaded when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._raw = b""
        self.data: dict[str, Any] = {}
        self._faults: list[Any] = []
        self.reload()

    def reload(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except OSError:
            return
        if raw != self._raw and raw.strip():
            try:
                data = json.loads(raw)
            except ValueError:
                return  # caught mid-write; the next request will see the whole file
            self._raw = raw
            self.data = data
            self._faults = list(data.get("faults", []))

    def next_fault(self) -> Any:
        """The next one-shot fault, else the sticky ``mode``, else None."""
        self.reload()
        if self._faults:
            return self._faults.pop(0)
        return self.data.get("mode")


class Log:
    def __init__(self, path: str) -> None:
        self.fh = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115

    def write(self, **entry: Any) -> None:
        entry.setdefault("t", round(time.monotonic(), 4))
        self.fh.write(json.dumps(entry) + "\n")


class Line:
    """Byte I/O on the pty master."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""
        except OSError:
            # EIO: every slave fd closed (the harness went away) — the device is unplugged
            sys.exit(0)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)
                continue
            view = view[n:]


def garbage(n: int = 7) -> bytes:
    """Line noise: deterministic so a failing test can be replayed."""
    return bytes((37 * i + 11) & 0xFF for i in range(n))
