"""The running service as the doctor sees it: its status (from the broker or its local
file) and what the spool file alone can tell."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from gateway.config import GatewayConfig
from gateway.doctor.report import SOURCE_SPOOL, SOURCE_STATUS, Check, utc


def spool_facts(cfg: GatewayConfig) -> dict[str, Any] | None:
    """What the spool file alone can tell: depth, oldest and newest message, the meta counters.
    Which messages were published is not in it (memory only in the agent): those keys stay
    for ``--json`` readers and are None until the service's status fills them in."""
    if not cfg.spool_path.exists():
        return None
    db = sqlite3.connect(f"file:{cfg.spool_path}?mode=ro", uri=True, timeout=5)
    try:
        meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        row = db.execute("SELECT count(*), min(created), max(created) FROM outbox").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    depth, oldest, newest = row
    return {
        "depth": int(depth),
        "unsent": None,
        "unconfirmed": None,
        "oldest_unsent": None,
        "oldest_unconfirmed_publish": None,
        "last_published": None,
        "oldest_message": oldest,
        "newest_message": newest,
        **meta,
    }


@dataclass
class ServiceStatus:
    """The running agent's own account of itself (its retained status on the broker), or why
    the doctor has none."""

    status: dict[str, Any] | None = None
    #: why there is no usable status, in words for the technician
    why_not: str = ""
    #: the broker answered, so "no status" means the service has not published one
    asked: bool = False


def live_status(svc: ServiceStatus, cfg: GatewayConfig, now: float) -> dict[str, Any] | None:
    """The status to judge delivery by: only one the service published while running and
    recently enough (a stale one describes a spool that has changed since)."""
    st = svc.status
    if st is None or st.get("online") is not True:
        return None
    return st if status_age(st, now) <= stale_after(cfg) else None


def status_age(status: dict[str, Any], now: float) -> float:
    clock = status.get("clock")
    return max(0.0, now - float(clock)) if isinstance(clock, int | float) else float("inf")


def stale_after(cfg: GatewayConfig) -> float:
    """A running agent republishes its status every ``status_interval_s``; the broker publishes
    its Last Will 1.5 keepalives after the uplink dies. Older than this and still "online",
    the agent is hung (or its clock jumped)."""
    return 3 * cfg.status_interval_s + 1.5 * cfg.mqtt.keepalive_s


def check_service(cfg: GatewayConfig, svc: ServiceStatus, now: float) -> Check:
    """Is the agent running, by its own retained status? Says which source the delivery
    checks below use."""
    st = svc.status
    if st is None:
        if svc.asked:
            return Check(
                "service",
                "warn",
                "the broker has no status from the gateway service: it has not run "
                "since the broker started, or cannot reach it; delivery below is judged "
                "from the spool file",
                "sudo systemctl start fieldproof-gateway; if it is running, see "
                "journalctl -u fieldproof-gateway -n 50, or ask the operator whether "
                "the broker's ACL lets a gateway read its own status topic",
                {"source": SOURCE_SPOOL, "why": svc.why_not},
            )
        return Check(
            "service",
            "skip",
            f"status not read ({svc.why_not}); delivery below is judged from the spool file",
            "",
            {"source": SOURCE_SPOOL, "why": svc.why_not},
        )
    details: dict[str, Any] = {"source": SOURCE_STATUS, "status": st}
    if st.get("online") is not True:
        return Check(
            "service",
            "warn",
            "the gateway service is OFFLINE per the broker (stopped, crashed or lost the "
            "uplink); delivery below is judged from the spool file",
            "sudo systemctl status fieldproof-gateway; journalctl -u fieldproof-gateway -n 50",
            {**details, "source": SOURCE_SPOOL},
        )
    age = status_age(st, now)
    if age > stale_after(cfg):
        when = utc(float(st["clock"])) if age != float("inf") else "an unknown time"
        return Check(
            "service",
            "warn",
            f"the service's last status is from {when}, though it should come every "
            f"{cfg.status_interval_s:g} s: it may hang; delivery below is judged from the "
            "spool file",
            "sudo systemctl restart fieldproof-gateway; if it recurs, keep "
            "journalctl -u fieldproof-gateway for the operator",
            {**details, "source": SOURCE_SPOOL, "age_s": round(age, 1)},
        )
    up = float(st.get("uptime_s") or 0.0)
    uptime = f"{up / 3600:.1f} h" if up >= 3600 else f"{up / 60:.0f} min"
    return Check(
        "service",
        "ok",
        f"running (boot {st.get('boot', '?')}, up {uptime}); delivery below is per its status",
        "",
        {**details, "age_s": round(age, 1)},
    )
