"""The generator's settings, read from the TOML the collector reads too (``[agronomy]``,
``[alerts]``, ``[dashboards]``): alert thresholds live there, never in code."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from collector.agronomy import AgronomyConfig

from .common import (
    DEFAULT_CONFIG,
)


class AlertsConfig(BaseModel):
    """``[alerts]``: evaluation windows and fleet thresholds (agronomic ones are per field)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: str = "fieldproof"
    interval: str = "1m"
    dry_for: str = "30m"
    waterlogging_window: str = "6h"
    frost_window: str = "15m"
    heat_window: str = "30m"
    gateway_silent_after_s: int = Field(default=900, gt=0)
    sensor_missing_window: str = "1h"
    sensor_missing_max: int = Field(default=6, ge=1)
    sensor_quantities: tuple[str, ...] = (
        "soil_moisture", "soil_temperature", "air_temperature", "air_humidity", "soil_ec",
    )
    anchoring_stalled_after_s: int = Field(default=7200, gt=0)


class DashboardsConfig(BaseModel):
    """``[dashboards]``: links out of Grafana."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collector_url: str = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Config:
    agronomy: AgronomyConfig
    alerts: AlertsConfig
    dashboards: DashboardsConfig


def load_config(path: Path = DEFAULT_CONFIG) -> Config:
    with Path(path).open("rb") as fh:
        data = tomllib.load(fh)
    return Config(
        AgronomyConfig.model_validate(data.get("agronomy", {})),
        AlertsConfig.model_validate(data.get("alerts", {})),
        DashboardsConfig.model_validate(data.get("dashboards", {})),
    )


_DURATION = re.compile(r"^(\d+)([smhd])$")


def seconds(duration: str) -> int:
    """'15m' → 900: Grafana durations as the alert rules' relative time ranges need them."""
    m = _DURATION.match(duration)
    if not m:
        raise ValueError(f"duration {duration!r} must look like 30s, 15m, 6h or 1d")
    return int(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
