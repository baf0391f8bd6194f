"""Every configured sensor read once, its value checked for plausibility."""

from __future__ import annotations

import contextlib

from gateway.config import GatewayConfig
from gateway.doctor.report import Check
from gateway.sensors.base import build_sensor, plausible


def check_sensors(cfg: GatewayConfig, now: float) -> list[Check]:
    if not cfg.sensors:
        return [Check("sensors", "fail", "no [[sensors]] configured", "add them to the config")]
    out = []
    for sc in cfg.sensors:
        name = f"sensor {sc.name}"
        try:
            driver = build_sensor(sc)
        except Exception as exc:  # a driver that cannot start must be reported, not crash us
            out.append(Check(name, "fail", f"cannot start: {exc}", "check wiring and the port"))
            continue
        try:
            readings = driver.read(now)
        except Exception as exc:
            out.append(Check(name, "fail", f"read failed: {exc}", "check wiring"))
            continue
        finally:
            with contextlib.suppress(Exception):  # closing must not hide the result
                driver.close()
        missing = [r for r in readings if r.value is None]
        odd = [r for r in readings if plausible(r.quantity, r.value) is False]
        values = ", ".join(
            f"{r.quantity} {r.value:g}{'' if r.unit == '/' else ' ' + r.unit}"
            for r in readings
            if r.value is not None
        )
        details = {"readings": [[r.quantity, r.value, r.unit] for r in readings]}
        if not readings or missing:
            why = ", ".join(f"{r.quantity}: {r.missing_reason}" for r in missing) or "nothing"
            out.append(
                Check(name, "fail", f"no value ({why})", "check wiring, power, address", details)
            )
        elif odd:
            out.append(
                Check(
                    name,
                    "warn",
                    f"implausible: {values}",
                    "is the probe in the soil / calibrated?",
                    details,
                )
            )
        else:
            out.append(Check(name, "ok", values, "", details))
    return out
