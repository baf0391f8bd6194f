"""Connects the agronomy deriver to ingest: per-field settings from the collector config, its
daily state in a file of its own (it commits per message, the ingest transaction must not)."""

from __future__ import annotations

import sqlite3
import tomllib
from collections.abc import Callable

from collector.agronomy import AgronomyConfig, AgronomyDeriver
from collector.points import Point
from collector.registry import Device
from fieldproof.config import CollectorConfig, ConfigError
from fieldproof.wire import Payload


def load_agronomy_config(config: CollectorConfig) -> AgronomyConfig:
    if config.fields_file is None:
        return AgronomyConfig()
    try:
        data = tomllib.loads(config.fields_file.read_text())
        return AgronomyConfig.model_validate(data.get("agronomy", {}))
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{config.fields_file}: {exc}") from None


def make_deriver(config: CollectorConfig) -> Callable[[Device, Payload], list[Point]]:
    state = sqlite3.connect(config.data_dir / "agronomy.sqlite", check_same_thread=False)
    deriver = AgronomyDeriver(load_agronomy_config(config), state)

    def derive(device: Device, payload: Payload) -> list[Point]:
        tags = {"farm": device.farm, "field": device.field, "gateway": device.gateway}
        return deriver.derive(tags, payload.readings, device.sensor_meta)

    return derive
