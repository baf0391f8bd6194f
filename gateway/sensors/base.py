"""The one small interface every sensor driver implements, and the registry of driver kinds.

A driver is configured by a pydantic model (its ``Config``) taken from a ``[[sensors]]`` table
of the gateway's TOML file. ``read`` never raises for a sensor fault: it returns readings with
``value=None`` and a ``missing_reason`` so the gap is signed and sent like any other reading,
and it counts the fault in ``errors`` for the status topic."""

from __future__ import annotations

import importlib
from collections import Counter
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from fieldproof.config import closest_key
from fieldproof.errors import ConfigError
from fieldproof.wire import Reading


class SensorConfig(BaseModel):
    """Fields every sensor table has; drivers subclass it with their own options."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    name: str


class SensorDriver:
    """Base class for drivers: subclasses set ``kind`` and ``Config`` and implement ``read``."""

    kind: ClassVar[str]
    Config: ClassVar[type[SensorConfig]]

    def __init__(self, config: SensorConfig) -> None:
        self.config = config
        self.name = config.name
        #: fault reason → count since start; published in the gateway status message
        self.errors: Counter[str] = Counter()
        self.last_error: str = ""

    def read(self, now: float) -> list[Reading]:
        raise NotImplementedError

    def close(self) -> None:
        """Release hardware (serial ports, GPIO); called once when the gateway stops."""

    def missing(self, quantity: str, unit: str, now: float, reason: str) -> Reading:
        """Record a failed reading: counted here, carried on the wire as a signed gap."""
        self.errors[reason] += 1
        self.last_error = reason
        return Reading(self.name, quantity, unit, None, now, reason)


SENSOR_KINDS: dict[str, type[SensorDriver]] = {}

#: built-in kind → the module that registers it. A module is imported only when a config names
#: its kind, so a gateway with one DHT22 loads neither the Modbus nor the SDI-12 driver (their
#: hardware libraries — pymodbus, pyserial, Blinka — are imported later still, on first use).
BUILTIN_DRIVERS: dict[str, str] = {
    "dht22": "gateway.sensors.dht22",
    "ds18b20": "gateway.sensors.ds18b20",
    "modbus_soil": "gateway.sensors.modbus_soil",
    "sdi12": "gateway.sensors.sdi12",
    "sensor_node": "gateway.sensors.sensor_node",
    "simulated": "gateway.sensors.simulated",
}


def register(cls: type[SensorDriver]) -> type[SensorDriver]:
    """Class decorator: make a driver available under its ``kind``."""
    SENSOR_KINDS[cls.kind] = cls
    return cls


class SensorConfigError(ConfigError):
    """A ``[[sensors]]`` table is wrong; the message names the sensor, key, value and rule."""


def validate_sensor_table(index: int, table: dict[str, Any]) -> SensorConfig:
    """Validate one ``[[sensors]]`` table against its driver's Config model."""
    kind = table.get("kind")
    if isinstance(kind, str):
        _load_driver(kind)
    where = f"sensors[{index}]" + (f" ({table['name']})" if "name" in table else "")
    if not isinstance(kind, str) or kind not in SENSOR_KINDS:
        kinds = sorted(set(SENSOR_KINDS) | set(BUILTIN_DRIVERS))
        guess = closest_key(kind, kinds) if isinstance(kind, str) else None
        raise SensorConfigError(
            f"{where}.kind = {kind!r} is not a sensor kind"
            + (f"; did you mean {guess!r}?" if guess else "")
            + f" (valid kinds: {', '.join(kinds)})"
        )
    model = SENSOR_KINDS[kind].Config
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        problems = "; ".join(_sensor_problem(where, kind, model, e) for e in exc.errors())
        raise SensorConfigError(problems) from None


def _sensor_problem(where: str, kind: str, model: type[SensorConfig], err: Any) -> str:
    """One problem of a sensor table; an unknown option gets the closest valid one."""
    loc = err["loc"]
    text = f"{where}.{'.'.join(map(str, loc))} = {err.get('input')!r}: {err['msg']}"
    if err["type"] == "extra_forbidden" and len(loc) == 1:
        options = sorted(model.model_fields)
        guess = closest_key(str(loc[0]), options)
        text += f": a {kind!r} sensor has no option {str(loc[0])!r}" + (
            f"; did you mean {guess!r}?" if guess else f" (its options: {', '.join(options)})"
        )
    return text


def build_sensor(config: SensorConfig) -> SensorDriver:
    _load_driver(config.kind)
    return SENSOR_KINDS[config.kind](config)


def _load_driver(kind: str) -> None:
    """Import the module of one built-in kind so its ``@register`` runs."""
    if kind not in SENSOR_KINDS and kind in BUILTIN_DRIVERS:
        importlib.import_module(BUILTIN_DRIVERS[kind])


def _load_builtin_drivers() -> None:
    """Import every built-in driver module (for listings of all kinds)."""
    for kind in BUILTIN_DRIVERS:
        _load_driver(kind)


# --------------------------------------------------------------------------------------------
# Quantities: the SenML unit each one travels in and the range a working probe can report.
# Drivers use this for range checks and ``sensors test`` for its plausibility column, so one
# table decides what "implausible" means everywhere.
# --------------------------------------------------------------------------------------------

#: quantity → SenML unit (RFC 8428 §12.1; ``mg/kg`` is ours: SenML registers no mass fraction)
QUANTITY_UNITS: dict[str, str] = {
    "soil_moisture": "/",
    "soil_temperature": "Cel",
    "air_temperature": "Cel",
    "air_humidity": "%RH",
    "soil_ec": "S/m",
    "soil_ph": "pH",
    "soil_nitrogen": "mg/kg",
    "soil_phosphorus": "mg/kg",
    "soil_potassium": "mg/kg",
}

#: quantity → (low, high) that a healthy sensor in a field can report; outside is a fault
PLAUSIBLE_RANGES: dict[str, tuple[float, float]] = {
    "soil_moisture": (0.0, 1.0),
    "soil_temperature": (-40.0, 70.0),
    "air_temperature": (-40.0, 80.0),
    "air_humidity": (0.0, 100.0),
    "soil_ec": (0.0, 25.0),
    "soil_ph": (0.0, 14.0),
    "soil_nitrogen": (0.0, 10_000.0),
    "soil_phosphorus": (0.0, 10_000.0),
    "soil_potassium": (0.0, 10_000.0),
}


def plausible(quantity: str, value: float | None) -> bool | None:
    """True/False when ``quantity`` has a known range, None when it has none (or no value)."""
    if value is None or quantity not in PLAUSIBLE_RANGES:
        return None
    low, high = PLAUSIBLE_RANGES[quantity]
    return low <= value <= high
