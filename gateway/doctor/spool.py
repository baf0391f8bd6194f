"""Spool depth, drops and age, whether the service can write it, disk space, delivery."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gateway.config import GatewayConfig
from gateway.doctor.report import SOURCE_SPOOL, SOURCE_STATUS, Check, utc
from gateway.doctor.service import status_age

DISK_FAIL_BYTES = 50 * 1024 * 1024


DISK_WARN_BYTES = 500 * 1024 * 1024


def mount_of(cfg: GatewayConfig) -> Path:
    from gateway.agent import mount_point

    return mount_point(cfg.spool_path)


def check_spool_write(
    cfg: GatewayConfig, spool: dict[str, Any] | None, live: dict[str, Any] | None
) -> Check:
    """A full (or failing) SD card: the agent keeps sampling into memory. Only the running
    agent knows it is happening; readings it had to drop are also counted in the spool."""
    lost = max(
        int((live or {}).get("unspooled_dropped_readings") or 0),
        int((spool or {}).get("unspooled_dropped_readings") or 0),
    )
    details: dict[str, Any] = {
        "source": SOURCE_STATUS if live else SOURCE_SPOOL,
        "unspooled_dropped_readings": lost,
    }
    if live is not None:
        for key in ("spool_writable", "held_in_memory", "spool_errors", "spool_error"):
            if key in live:
                details[key] = live[key]
    held = int(details.get("held_in_memory") or 0)
    if details.get("spool_writable") is False:
        mount = mount_of(cfg)
        why = details.get("spool_error") or "write failed"
        return Check(
            "spool write",
            "fail",
            f"the service cannot write its spool ({why}); {held} message(s) wait in memory "
            "and are LOST if the power goes",
            f"free space on {mount} now: df -h {mount}; journalctl --vacuum-size=50M; remove "
            "old files (never the spool). The service catches up by itself. If space is "
            "free, the SD card may be failing: dmesg | grep -i mmc",
            details,
        )
    if held:
        return Check(
            "spool write",
            "warn",
            f"{held} message(s) still wait in memory: the spool is catching up after "
            f"{details.get('spool_errors', 0)} failed write(s)",
            f"watch free space: df -h {mount_of(cfg)}",
            details,
        )
    if lost:
        return Check(
            "spool write",
            "warn",
            f"{lost} reading(s) were LOST because the spool could not be written (disk full)",
            f"keep space free on {mount_of(cfg)} (df -h); lost readings cannot be recovered",
            details,
        )
    if live is None:
        return Check(
            "spool write",
            "skip",
            "known only to the running service (no status read)",
            "",
            details,
        )
    errors = int(details.get("spool_errors") or 0)
    note = f" ({errors} failed write(s) since start, recovered)" if errors else ""
    return Check("spool write", "ok", f"the service writes its spool{note}", "", details)


def delivery_facts(
    spool: dict[str, Any], live: dict[str, Any] | None, now: float
) -> dict[str, Any]:
    """The spool file's facts, overlaid with the running service's (its memory is the truth
    about what is published, and about depth while deletes wait)."""
    facts = {k: v for k, v in spool.items() if not k.startswith("_")}
    oldest = facts.get("oldest_message")
    facts["oldest_age_s"] = max(0.0, now - float(oldest)) if oldest else 0.0
    facts["source"] = SOURCE_SPOOL
    if live is None:
        return facts
    facts["source"] = SOURCE_STATUS
    depth = int(live.get("spool_depth", facts["depth"]))
    facts["depth"] = depth
    if isinstance(live.get("unconfirmed"), int):
        facts["unconfirmed"] = live["unconfirmed"]
        facts["unsent"] = max(0, depth - live["unconfirmed"])
    if isinstance(live.get("dropped_messages"), int):
        facts["dropped_messages"] = max(live["dropped_messages"], facts.get("dropped_messages", 0))
    last = live.get("last_publish")
    facts["last_published"] = float(last) if isinstance(last, int | float) and last > 0 else None
    age = live.get("spool_oldest_age_s")
    if depth == 0:
        facts["oldest_age_s"] = 0.0
    elif isinstance(age, int | float):
        facts["oldest_age_s"] = float(age) + status_age(live, now)
    return facts


def check_spool(
    cfg: GatewayConfig,
    spool: dict[str, Any] | None,
    now: float,
    live: dict[str, Any] | None = None,
) -> list[Check]:
    if spool is None:
        return [
            Check(
                "spool",
                "warn",
                "no spool yet: the gateway has never run",
                "start it: sudo systemctl start fieldproof-gateway",
                {"source": SOURCE_SPOOL},
            ),
            Check("delivery", "skip", "nothing sent yet", "", {"source": SOURCE_SPOOL}),
        ]
    details = delivery_facts(spool, live, now)
    checks = []
    depth, dropped = details["depth"], details.get("dropped_messages", 0)
    behind = details["oldest_age_s"]
    unconfirmed = details["unconfirmed"]
    if dropped:
        checks.append(
            Check(
                "spool",
                "warn",
                f"{depth} waiting; {dropped} oldest messages were DROPPED (spool full)",
                "restore the uplink; raise spool_max_messages if disk allows",
                details,
            )
        )
    elif behind > max(600.0, 10 * cfg.interval_s) and not unconfirmed:
        if unconfirmed == 0:  # the service says none of them is even published
            where, fix = "not published", "the gateway is not publishing: see 'broker'"
        else:
            where, fix = (
                "not delivered",
                "see 'broker' and 'service'; if both are fine, ask the operator whether "
                "the collector runs and knows this gateway",
            )
        checks.append(
            Check(
                "spool",
                "warn",
                f"{depth} {where}, oldest {behind / 60:.0f} min old",
                fix,
                details,
            )
        )
    else:
        checks.append(Check("spool", "ok", f"{depth} message(s) waiting", "", details))
    checks.append(check_delivery(cfg, details))
    return checks


def check_delivery(cfg: GatewayConfig, details: dict[str, Any]) -> Check:
    """Published (PUBACK, memory only: from the status) and confirmed (receipts, counted in
    the spool). From the spool file alone "published, waiting for a receipt" is not known."""
    confirmed = details.get("confirmed_messages", 0)
    last = details.get("last_published")
    unconfirmed = details["unconfirmed"]
    live = details["source"] == SOURCE_STATUS
    tag = "" if live else " (spool file only)"
    if unconfirmed and details["oldest_age_s"] > 2 * max(cfg.confirm_timeout_s, 60.0):
        return Check(
            "delivery",
            "warn",
            f"{unconfirmed} message(s) published but not confirmed by a collector; the "
            f"oldest waits {details['oldest_age_s'] / 60:.0f} min",
            "ask the operator whether the collector runs and knows this gateway",
            details,
        )
    if confirmed == 0 and not last and details.get("published_readings", 0) == 0:
        return Check(
            "delivery",
            "warn",
            f"nothing published yet{tag}",
            "start the service and run the doctor again in a minute",
            details,
        )
    if confirmed == 0:
        return Check(
            "delivery",
            "warn",
            f"published, no collector confirmation yet{tag}",
            "wait a minute; if it stays, the collector may not know this gateway",
            details,
        )
    if live:
        when = f", last publish {utc(float(last))}" if last else ", none since the start"
    else:
        when = tag
    return Check("delivery", "ok", f"{confirmed} message(s) confirmed{when}", "", details)


def check_disk(cfg: GatewayConfig) -> Check:
    path = cfg.data_dir if cfg.data_dir.exists() else Path("/")
    usage = shutil.disk_usage(path)
    free_mb = usage.free / 1024 / 1024
    details = {"free_bytes": usage.free, "total_bytes": usage.total}
    if usage.free < DISK_FAIL_BYTES:
        return Check(
            "disk",
            "fail",
            f"{free_mb:.0f} MB free on {path}",
            "free space (journalctl --vacuum-size=50M, old files)",
            details,
        )
    if usage.free < DISK_WARN_BYTES or usage.free < usage.total * 0.05:
        return Check("disk", "warn", f"only {free_mb:.0f} MB free", "free some space", details)
    return Check("disk", "ok", f"{free_mb:.0f} MB free", "", details)
