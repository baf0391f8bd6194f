"""Units: how each measurement is stored (SenML) and shown (Grafana unit id + InfluxQL
math), for panels and alert rules alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """How one stored measurement is displayed: SenML unit in the data, InfluxQL math to the
    unit people read, Grafana unit id."""

    title: str
    senml: str
    math: str  # appended to the aggregate, e.g. " * 100"
    unit: str
    decimals: int


QUANTITIES: dict[str, Quantity] = {
    "soil_moisture": Quantity("Soil moisture", "/", " * 100", "suffix:%VWC", 1),
    "soil_temperature": Quantity("Soil temperature", "Cel", "", "celsius", 1),
    "air_temperature": Quantity("Air temperature", "Cel", "", "celsius", 1),
    "air_humidity": Quantity("Air humidity", "%RH", "", "suffix:%RH", 0),
    "soil_ec": Quantity("Soil EC", "S/m", " * 10", "suffix:dS/m", 2),
    "dew_point": Quantity("Dew point", "Cel", "", "celsius", 1),
    "vapour_pressure_deficit": Quantity("VPD", "Pa", " / 1000", "pressurekpa", 2),
    "growing_degree_days": Quantity("Growing degree days", "Cel.d", "", "suffix:°C·d", 1),
    "chilling_hours": Quantity("Chilling hours", "h", "", "h", 1),
    "soil_water_deficit": Quantity("Readily available water used", "/", " * 100", "percent", 0),
}
