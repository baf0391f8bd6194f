"""``fieldproof gateway run`` settings: the device's own configuration, on the shared base of
:mod:`fieldproof.config` (strict TOML, environment overrides like
``FIELDPROOF_GATEWAY__MQTT__HOST=broker.farm``, errors that name the key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from fieldproof.config import MqttConfig, StrictModel, load_model
from gateway.sensors.base import SensorConfig, SensorConfigError, validate_sensor_table


class GatewayConfig(StrictModel):
    """``fieldproof gateway run`` settings."""

    key_file: Path = Path("/var/lib/fieldproof/gateway.key")
    data_dir: Path = Path("/var/lib/fieldproof")
    farm: str = ""
    field: str = ""
    #: seconds between sampling rounds
    interval_s: float = Field(default=60.0, gt=0, le=86_400)
    #: sampling rounds signed together in one message (1 = send each round at once)
    rounds_per_message: int = Field(default=1, ge=1, le=100)
    #: unacked QoS 1 messages in flight at once (paho reuses ids past 65,535)
    inflight_window: int = Field(default=200, ge=1, le=20_000)
    #: most messages the spool keeps while offline; past it the oldest are dropped and counted
    spool_max_messages: int = Field(default=2_000_000, ge=100)
    status_interval_s: float = Field(default=30.0, gt=0)
    #: resend a published message that no collector has confirmed after this long (each
    #: message on its own clock; doubles each time that message is resent, up to 15 min)
    confirm_timeout_s: float = Field(default=60.0, gt=0)
    #: most messages published but not yet confirmed; past it, the gateway waits
    max_unconfirmed: int = Field(default=20_000, ge=1)
    mqtt: MqttConfig = MqttConfig()
    sensors: list[SensorConfig] = Field(default_factory=list)
    #: the collector's enrollment endpoint, e.g. https://collector.farm:8443 ('' = by file)
    enrollment_url: str = ""

    @field_validator("sensors", mode="before")
    @classmethod
    def _validate_sensors(cls, value: Any) -> list[SensorConfig]:
        if not isinstance(value, list):
            raise ValueError("sensors must be a list of [[sensors]] tables")
        out = []
        for i, table in enumerate(value):
            if isinstance(table, SensorConfig):
                out.append(table)
                continue
            if not isinstance(table, dict):
                raise ValueError(f"sensors[{i}] must be a table")
            try:
                out.append(validate_sensor_table(i, table))
            except SensorConfigError as exc:
                raise ValueError(str(exc)) from None
        names = [s.name for s in out]
        if len(set(names)) != len(names):
            raise ValueError(f"sensor names must be unique, got {names}")
        return out

    @property
    def spool_path(self) -> Path:
        return self.data_dir / "spool.sqlite"


def load_gateway_config(path: Path | None) -> GatewayConfig:
    return load_model(GatewayConfig, path, "FIELDPROOF_GATEWAY")
