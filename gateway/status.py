"""Is this gateway's clock right? Readings carry the gateway's time, so a wrong clock is a
silent data fault. A Raspberry Pi has no battery-backed clock: it boots at 1970 or at the time
fake-hwclock saved at the last shutdown, and is right only once NTP has synchronised it.

Two checks, both cheap enough for every status message:
- the kernel's own NTP state (``adjtimex``, what ``timedatectl`` shows as "System clock
  synchronized"): unsynchronised when ``STA_UNSYNC`` is set or the maximum error is 16 s or more;
- a floor: the clock cannot be earlier than when this software was built, nor earlier than
  evidence on the device (a certificate's notBefore, the newest spooled message)."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from typing import Any

#: no fieldproof release runs before this instant (2026-01-01T00:00:00Z); raise it per release
CLOCK_FLOOR = 1767225600.0

STA_UNSYNC = 0x0040
#: systemd's rule (src/basic/time-util.c ntp_synced): maxerror >= 16 s means not synchronised
MAX_ERROR_US = 16_000_000


class _Timex(ctypes.Structure):
    """The leading fields of ``struct timex`` (<sys/timex.h>); the kernel writes the rest into
    the padding. ``long`` matches the C ABI of this Python on 32- and 64-bit ARM alike."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def kernel_clock_synced() -> bool | None:
    """True when the kernel says NTP has synchronised the clock, False when it says not,
    None when this cannot be asked (no libc adjtimex, e.g. not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        adjtimex = libc.adjtimex
    except (OSError, AttributeError):
        return None
    tx = _Timex()
    tx.modes = 0  # read only: needs no privilege
    state = adjtimex(ctypes.byref(tx))
    if state < 0:
        return None
    return not (tx.status & STA_UNSYNC) and tx.maxerror < MAX_ERROR_US


def clock_state(now: float | None = None, floor: float = CLOCK_FLOOR) -> dict[str, Any]:
    """For the status message: is the clock past the floor, and does NTP say it is right."""
    t = time.time() if now is None else now
    return {"plausible": t >= floor, "synced": kernel_clock_synced()}
