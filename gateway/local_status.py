"""The running agent's status, also as a file in its data directory, for the doctor.

Why a file: the broker ties each MQTT client id to its certificate (``use_username_as_clientid``
in deploy/mosquitto/mosquitto.conf, so one gateway cannot take over another client's session).
The doctor holds the same certificate as the agent, so logging in to read the agent's retained
status would take over the agent's own connection and publish its Last Will. While the agent
is running and connected the doctor reads this file instead and checks the broker with a TLS
handshake only; the file says when it was written, by which process and whether that process
was connected then."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fieldproof.formats.status import StatusRejected, parse_status

FILE_NAME = "agent-status.json"
#: the file is one status and a few fields; anything bigger is not ours
MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class LocalStatus:
    status: dict[str, Any]
    pid: int
    connected: bool
    written_at: float

    def running(self, stale_after_s: float, now: float | None = None) -> bool:
        """The process that wrote it is alive and wrote it recently."""
        age = (time.time() if now is None else now) - self.written_at
        return 0 <= age <= stale_after_s and _alive(self.pid)


def write_local_status(data_dir: Path, status: bytes, connected: bool) -> None:
    """Replace the file atomically (readers never see half of it). Not fsync'd: it describes
    a moment, and the next status replaces it."""
    path = data_dir / FILE_NAME
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    doc = {
        "status": json.loads(status),
        "pid": os.getpid(),
        "connected": connected,
        "written_at": time.time(),
    }
    try:
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
        raise


def read_local_status(data_dir: Path) -> LocalStatus | None:
    """The file's content, or None when it is missing or not what the agent writes."""
    try:
        with open(data_dir / FILE_NAME, "rb") as f:
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            return None
        doc = json.loads(raw)
        status = doc["status"]
        parse_status(json.dumps(status).encode())  # the same rules as on the broker
        pid, connected, written_at = doc["pid"], doc["connected"], doc["written_at"]
    except (OSError, ValueError, TypeError, KeyError, StatusRejected):
        return None
    if not (isinstance(pid, int) and isinstance(connected, bool)):
        return None
    if not isinstance(written_at, int | float) or not isinstance(status, dict):
        return None
    return LocalStatus(status, pid, connected, float(written_at))


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's (the service runs as its own user)
        return True
    return True
