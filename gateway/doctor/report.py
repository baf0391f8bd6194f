"""What the doctor reports: one check per line, its status, what to do, fitting a phone."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import click

from gateway.status import kernel_clock_synced

Status = Literal["ok", "warn", "fail", "skip"]


WIDTH = 60


SOURCE_STATUS = "service status"


SOURCE_SPOOL = "spool file"


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    gateway: str
    farm: str
    field: str
    checks: list[Check]
    #: where spool, delivery and spool-write facts came from: SOURCE_STATUS or SOURCE_SPOOL
    delivery_source: str = SOURCE_SPOOL

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "farm": self.farm,
            "field": self.field,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "delivery_source": self.delivery_source,
        }


@dataclass
class Probe:
    """What the doctor looks at that a test may replace: the clock and its sync state."""

    clock: Callable[[], float] = time.time
    clock_synced: Callable[[], bool | None] = kernel_clock_synced
    timeout_s: float = 10.0
    sensors: bool = True
    broker: bool = True


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


_MARK = {"ok": ("OK", "green"), "warn": ("WARN", "yellow"), "fail": ("FAIL", "red"),
         "skip": ("--", "bright_black")}  # fmt: skip


def _wrap(text: str) -> list[str]:
    """Wrap at spaces only: a path or command stays whole (copyable) even if it is long."""
    return textwrap.wrap(text, WIDTH - 5, break_on_hyphens=False, break_long_words=False)


def render(report: Report, color: bool = False) -> str:
    """≤ 60 columns: fits a phone's SSH terminal."""
    lines = [
        f"gateway {report.gateway}",
        f"farm {report.farm or '-'} / field {report.field or '-'}",
    ]
    indent = " " * 5
    for c in report.checks:
        mark, colour = _MARK[c.status]
        label = click.style(f"{mark:<4}", fg=colour, bold=True) if color else f"{mark:<4}"
        text = f"{c.name}: {c.summary}"
        wrapped = _wrap(text) or [""]
        lines.append(f"{label} {wrapped[0]}")
        lines.extend(indent + w for w in wrapped[1:])
        if c.fix and c.status in ("warn", "fail"):
            fix = _wrap("→ " + c.fix)
            lines.extend(indent + w for w in fix)
    fails = sum(c.status == "fail" for c in report.checks)
    warns = sum(c.status == "warn" for c in report.checks)
    if fails:
        verdict = f"NOT READY: {fails} problem(s) to fix" + (
            f", {warns} warning(s)" if warns else ""
        )
    elif warns:
        verdict = f"WORKING, {warns} warning(s) to look at"
    else:
        verdict = "ALL GOOD: this gateway works and is secure"
    lines.append(click.style(verdict, bold=True) if color else verdict)
    return "\n".join(lines)
