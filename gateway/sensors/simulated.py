"""A simulated field station: diurnal soil moisture, soil and air temperature, humidity and EC.

Values are a pure function of (seed, time), so a demo or test run is reproducible and two
gateways with different seeds differ. The shapes follow what a loam field in summer shows:
air temperature peaks mid-afternoon, soil temperature lags and damps it, humidity moves
against temperature, soil moisture dries faster by day and jumps back at irrigation, and pore
water EC rises as the soil dries. ``fault_rate`` injects missing readings like a real probe."""

from __future__ import annotations

import math
import random
from typing import ClassVar

from pydantic import Field

from fieldproof.wire import Reading
from gateway.sensors.base import SensorConfig, SensorDriver, register

DAY = 86_400.0


class SimulatedConfig(SensorConfig):
    kind: str = "simulated"
    seed: int = 1
    #: local solar time offset from UTC in hours, so "afternoon" is the farm's afternoon
    utc_offset_hours: float = Field(default=0.0, ge=-14, le=14)
    #: volumetric water content after irrigation and at the wilting side of the cycle (m³/m³)
    field_capacity: float = Field(default=0.34, gt=0, lt=0.6)
    refill_point: float = Field(default=0.18, gt=0, lt=0.6)
    #: days between irrigations
    irrigation_days: float = Field(default=3.0, gt=0)
    mean_air_temperature: float = Field(default=22.0, ge=-40, le=50)
    fault_rate: float = Field(default=0.0, ge=0, le=1)


@register
class SimulatedSensor(SensorDriver):
    kind: ClassVar[str] = "simulated"
    Config: ClassVar[type[SensorConfig]] = SimulatedConfig

    def __init__(self, config: SensorConfig) -> None:
        super().__init__(config)
        assert isinstance(config, SimulatedConfig)
        self.cfg = config
        phase = random.Random(config.seed).random()
        self._irrigation_phase = phase * config.irrigation_days * DAY

    def _noise(self, now: float, channel: int) -> float:
        return random.Random(hash((self.cfg.seed, channel, round(now, 3)))).gauss(0.0, 1.0)

    def values(self, now: float) -> dict[str, float]:
        """The true-ish state of the field at ``now`` (seconds since the epoch)."""
        c = self.cfg
        local = (now + c.utc_offset_hours * 3600.0) % DAY
        # air temperature: minimum near 06:00, maximum near 15:00
        diurnal = -math.cos(2 * math.pi * (local - 3 * 3600.0) / DAY)
        air_t = c.mean_air_temperature + 7.0 * diurnal + 0.15 * self._noise(now, 1)
        soil_t = (
            c.mean_air_temperature
            - 2.0
            + 2.5 * -math.cos(2 * math.pi * (local - 6 * 3600.0) / DAY)
            + 0.05 * self._noise(now, 2)
        )
        saturation = 0.98 - 0.55 * (diurnal + 1) / 2
        humidity = min(100.0, max(5.0, 100.0 * saturation + 1.0 * self._noise(now, 3)))
        # soil moisture: exponential drying since the last irrigation, faster by day
        cycle = c.irrigation_days * DAY
        since = (now + self._irrigation_phase) % cycle
        depletion = since / cycle
        vwc = c.refill_point + (c.field_capacity - c.refill_point) * math.exp(-2.2 * depletion)
        vwc += 0.004 * math.sin(2 * math.pi * local / DAY) + 0.001 * self._noise(now, 4)
        # pore water EC rises as water leaves (dS/m → S/m: ×0.1)
        ec = (1.2 + 1.5 * (c.field_capacity - vwc) / c.field_capacity) * 0.1
        ec += 0.002 * self._noise(now, 5)
        return {
            "soil_moisture": round(vwc, 4),
            "soil_temperature": round(soil_t, 2),
            "air_temperature": round(air_t, 2),
            "air_humidity": round(humidity, 1),
            "soil_ec": round(ec, 4),
        }

    UNITS: ClassVar[dict[str, str]] = {
        "soil_moisture": "/",
        "soil_temperature": "Cel",
        "air_temperature": "Cel",
        "air_humidity": "%RH",
        "soil_ec": "S/m",
    }

    def read(self, now: float) -> list[Reading]:
        out: list[Reading] = []
        for i, (quantity, value) in enumerate(self.values(now).items()):
            if self.cfg.fault_rate and abs(self._noise(now, 100 + i)) < _fault_z(
                self.cfg.fault_rate
            ):
                out.append(self.missing(quantity, self.UNITS[quantity], now, "simulated-fault"))
            else:
                out.append(Reading(self.name, quantity, self.UNITS[quantity], value, now))
        return out


def _fault_z(rate: float) -> float:
    """|z| below this happens with probability ``rate`` for a standard normal z."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + rate / 2) if rate < 1 else math.inf
