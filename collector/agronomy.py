"""Agronomy series derived at ingest, so Grafana, alerts and any other InfluxDB client see the
same numbers without re-implementing the formulas in each query language.

What is derived (measurements, units and sources are in docs/influx-schema-derived.md):

* from an air temperature + relative humidity pair (same sensor, same message): saturation and
  actual vapour pressure and the vapour pressure deficit (FAO-56 eqs. 11, 12/19 and 13, Tetens),
  the dew point (eq. 11 inverted) and a frost-risk level;
* from air temperature over the farm's local day: growing degree days (McMaster & Wilhelm 1997,
  method 2, optional upper cut-off) and chilling hours (0-7.2 °C model);
* from volumetric water content: the depletion of readily available water against the field's
  calibration (field capacity, refill point) and the deficit in mm (FAO-56 chapter 8).

Daily values need a little state (min/max of the day so far, chilling seconds, last sample
time per sensor). It lives in one SQLite table the caller hands in (the collector's own
database) so it survives restarts; the daily points are re-emitted whole on each update
(same tags and timestamp = an InfluxDB upsert), so replaying a message changes nothing.
"""

from __future__ import annotations

import hashlib
import math
import sqlite3
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.points import Point
from fieldproof.wire import Reading

# --------------------------------------------------------------------------------------------
# Formulas (pure functions, SI units noted per function; checked in tests/collector/test_agronomy.py
# against the worked examples of FAO-56 and a published GDD example)
# --------------------------------------------------------------------------------------------

#: Tetens coefficients as printed in FAO-56 eq. 11 (kPa, °C)
_E0_KPA = 0.6108
_A = 17.27
_B = 237.3


def saturation_vapour_pressure_kpa(temp_c: float) -> float:
    """e°(T), FAO-56 eq. 11 (Tetens 1930): saturation vapour pressure over water, kPa."""
    return _E0_KPA * math.exp(_A * temp_c / (temp_c + _B))


def mean_saturation_vapour_pressure_kpa(tmin_c: float, tmax_c: float) -> float:
    """es for a day, FAO-56 eq. 12: the mean of e° at Tmax and Tmin (not e° of the mean)."""
    return (saturation_vapour_pressure_kpa(tmax_c) + saturation_vapour_pressure_kpa(tmin_c)) / 2


def actual_vapour_pressure_kpa(temp_c: float, rh_percent: float) -> float:
    """ea from one temperature/RH sample, FAO-56 eq. 54 (the hourly form of eq. 19), kPa."""
    return saturation_vapour_pressure_kpa(temp_c) * rh_percent / 100.0


def actual_vapour_pressure_rh_min_max_kpa(
    tmin_c: float, tmax_c: float, rh_min: float, rh_max: float
) -> float:
    """ea from daily extremes, FAO-56 eq. 17 (RHmax pairs with Tmin, RHmin with Tmax), kPa."""
    return (
        saturation_vapour_pressure_kpa(tmin_c) * rh_max / 100.0
        + saturation_vapour_pressure_kpa(tmax_c) * rh_min / 100.0
    ) / 2


def actual_vapour_pressure_rh_mean_kpa(tmin_c: float, tmax_c: float, rh_mean: float) -> float:
    """ea from mean RH, FAO-56 eq. 19, kPa."""
    return rh_mean / 100.0 * mean_saturation_vapour_pressure_kpa(tmin_c, tmax_c)


def dew_point_c(actual_kpa: float) -> float:
    """Tdew: the temperature at which e°(T) = ea, i.e. FAO-56 eq. 11 solved for T (eq. 14
    read backwards). Exact inverse, so e°(dew_point_c(ea)) == ea to rounding."""
    if actual_kpa <= 0:
        raise ValueError("actual vapour pressure must be positive")
    x = math.log(actual_kpa / _E0_KPA)
    return _B * x / (_A - x)


def vapour_pressure_deficit_kpa(temp_c: float, rh_percent: float) -> float:
    """es - ea for one sample, FAO-56 eq. 13 with e°(T) for es, kPa (never negative)."""
    es = saturation_vapour_pressure_kpa(temp_c)
    return max(0.0, es - es * rh_percent / 100.0)


def growing_degree_days(tmin: float, tmax: float, base: float, upper: float | None = None) -> float:
    """Daily GDD, McMaster & Wilhelm (1997) method 2: Tmin and Tmax are raised to the base
    (and Tmax capped at ``upper`` when given, the '86/50' corn rule), then
    ((Tmax + Tmin) / 2) - base, never negative. Unit-agnostic (°C in, °C·d out)."""
    if upper is not None:
        tmax = min(tmax, upper)
        tmin = min(tmin, upper)
    tmax = max(tmax, base)
    tmin = max(tmin, base)
    return max(0.0, (tmax + tmin) / 2.0 - base)


def readily_available_water_depletion(
    vwc: float, field_capacity: float, refill_point: float
) -> float:
    """Share of the readily available water used: 0 at field capacity, 1 at the refill point,
    > 1 below it, < 0 wetter than field capacity (drainage/waterlogging). FAO-56 ch. 8 calls
    the refill point the management-allowed depletion p·TAW (eq. 83)."""
    return (field_capacity - vwc) / (field_capacity - refill_point)


def soil_water_deficit_mm(vwc: float, field_capacity: float, layer_mm: float) -> float:
    """Depletion below field capacity in mm of water over the layer a probe represents:
    (θFC - θ)·layer, FAO-56 ch. 8 (Dr = 1000 (θFC - θ) Zr with Zr in m). Never negative."""
    return max(0.0, (field_capacity - vwc) * layer_mm)


def frost_risk_level(air_c: float, dew_point: float | None, cfg: FieldAgronomy) -> int:
    """0 none, 1 risk, 2 frost at screen height.

    2 when the air is at or below ``frost_c``. 1 when it is at or below ``frost_watch_c``, or
    when the dew point is at or below ``frost_c`` while the air is within ``dew_point_margin_c``
    above the watch threshold: on a clear night air cools towards the dew point, and dry air
    (low dew point) lets it fall further before latent heat slows it (Snyder & de Melo-Abreu,
    FAO 2005, ch. 2)."""
    if air_c <= cfg.frost_c:
        return 2
    if air_c <= cfg.frost_watch_c:
        return 1
    if (
        dew_point is not None
        and dew_point <= cfg.frost_c
        and air_c <= cfg.frost_watch_c + cfg.dew_point_margin_c
    ):
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# Configuration (one TOML shared by the collector and the dashboard generator)
# --------------------------------------------------------------------------------------------


class DepthCalibration(BaseModel):
    """Per-depth override of the field's soil calibration (soils differ down the profile)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field_capacity: float = Field(gt=0, lt=0.7)
    refill_point: float = Field(gt=0, lt=0.7)
    layer_mm: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if not self.refill_point < self.field_capacity:
            raise ValueError("refill_point must be below field_capacity")
        return self


class FieldAgronomy(BaseModel):
    """Agronomy settings of one field. ``farm``/``field`` empty = the default for any field.

    Soil water contents are volumetric (m³/m³, SenML "/"); temperatures °C."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    farm: str = ""
    field: str = ""
    #: IANA zone of the farm: the "day" of GDD and chilling hours is the local day
    timezone: str = "UTC"
    base_temp_c: float = Field(default=10.0, ge=-10, le=30)
    #: cap on Tmax (and Tmin) for GDD; None = no cap
    upper_temp_c: float | None = Field(default=30.0, ge=0, le=50)
    chill_min_c: float = 0.0
    chill_max_c: float = 7.2
    #: an interval between two samples longer than this is a gap, not chilling time
    max_sample_gap_s: float = Field(default=1800.0, gt=0)
    field_capacity: float = Field(default=0.34, gt=0, lt=0.7)
    refill_point: float = Field(default=0.18, gt=0, lt=0.7)
    #: soil layer one probe stands for, for the deficit in mm
    layer_mm: float = Field(default=300.0, gt=0)
    #: keyed by depth_cm as text (the registry's sensor metadata)
    depths: dict[str, DepthCalibration] = Field(default_factory=dict)
    #: VWC above which the soil counts as waterlogged (alert)
    waterlogging_vwc: float = Field(default=0.45, gt=0, lt=0.8)
    frost_c: float = 0.0
    frost_watch_c: float = 3.0
    dew_point_margin_c: float = Field(default=4.0, ge=0)
    #: air temperature above which heat stress is alerted
    heat_c: float = 35.0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _order(self) -> Self:
        if not self.refill_point < self.field_capacity < self.waterlogging_vwc:
            raise ValueError("need refill_point < field_capacity < waterlogging_vwc")
        if not self.chill_min_c < self.chill_max_c:
            raise ValueError("need chill_min_c < chill_max_c")
        if self.upper_temp_c is not None and not self.base_temp_c < self.upper_temp_c:
            raise ValueError("need base_temp_c < upper_temp_c")
        if not self.frost_c <= self.frost_watch_c < self.heat_c:
            raise ValueError("need frost_c <= frost_watch_c < heat_c")
        if bool(self.farm) != bool(self.field):
            raise ValueError("a field entry names both farm and field (or neither: the default)")
        return self

    def calibration(self, depth_cm: str | None) -> tuple[float, float, float]:
        """(field capacity, refill point, layer mm) for a probe at ``depth_cm``."""
        cal = self.depths.get(depth_cm or "")
        if cal is None:
            return self.field_capacity, self.refill_point, self.layer_mm
        return cal.field_capacity, cal.refill_point, cal.layer_mm or self.layer_mm


class AgronomyConfig(BaseModel):
    """``[agronomy.default]`` plus ``[[agronomy.fields]]``; a field entry inherits every key
    it does not set from the default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: FieldAgronomy = Field(default_factory=FieldAgronomy)
    fields: tuple[FieldAgronomy, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _inherit(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        default = dict(data.get("default") or {})
        default.pop("farm", None)
        default.pop("field", None)
        merged = []
        for entry in data.get("fields") or ():
            merged.append({**default, **entry} if isinstance(entry, Mapping) else entry)
        return {**data, "default": default, "fields": merged}

    @model_validator(mode="after")
    def _unique(self) -> Self:
        keys = [(f.farm, f.field) for f in self.fields]
        if any(not farm for farm, _ in keys):
            raise ValueError("every [[agronomy.fields]] entry needs farm and field")
        if len(set(keys)) != len(keys):
            raise ValueError("a farm/field appears twice in [[agronomy.fields]]")
        return self

    def for_field(self, farm: str, field: str) -> FieldAgronomy:
        for entry in self.fields:
            if entry.farm == farm and entry.field == field:
                return entry
        return self.default

    @classmethod
    def from_toml(cls, path: Path) -> AgronomyConfig:
        """Read the ``[agronomy]`` table of a TOML file (other tables are ignored)."""
        with Path(path).open("rb") as fh:
            data = tomllib.load(fh)
        return cls.model_validate(data.get("agronomy", {}))


# --------------------------------------------------------------------------------------------
# The deriver
# --------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agronomy_day (
    farm TEXT NOT NULL, field TEXT NOT NULL, gateway TEXT NOT NULL, sensor TEXT NOT NULL,
    day TEXT NOT NULL,            -- local calendar day, ISO 8601
    tmin REAL NOT NULL, tmax REAL NOT NULL,
    chill_s REAL NOT NULL,        -- seconds with air temperature in the chilling band
    PRIMARY KEY (farm, field, gateway, sensor, day)
);
CREATE TABLE IF NOT EXISTS agronomy_last (
    farm TEXT NOT NULL, field TEXT NOT NULL, gateway TEXT NOT NULL, sensor TEXT NOT NULL,
    t REAL NOT NULL,              -- latest air temperature sample time seen (s since epoch)
    PRIMARY KEY (farm, field, gateway, sensor)
);
"""

#: Measurements this module writes; the collector must not accept them as gateway quantities.
DERIVED_MEASUREMENTS = frozenset(
    {
        "dew_point",
        "vapour_pressure_deficit",
        "frost_risk",
        "growing_degree_days",
        "chilling_hours",
        "soil_water_deficit",
    }
)

AIR_T = "air_temperature"
AIR_RH = "air_humidity"
SOIL_VWC = "soil_moisture"


@dataclass
class _Day:
    tmin: float
    tmax: float
    chill_s: float


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


class AgronomyDeriver:
    """Turns the verified readings of one message into derived points.

    ``state`` is a SQLite connection (the collector's) for the daily state; without one an
    in-memory database is used and daily values restart with the process. With
    ``commit=False`` the caller commits, so the state moves with its own ingest transaction.
    Call :meth:`derive` once per accepted (not duplicate) message."""

    def __init__(
        self,
        config: AgronomyConfig | FieldAgronomy | None = None,
        state: sqlite3.Connection | None = None,
        *,
        commit: bool = True,
        pair_window_s: float = 60.0,
        retain_days: int = 400,
    ) -> None:
        if isinstance(config, FieldAgronomy):
            config = AgronomyConfig(default=config)
        self.config = config or AgronomyConfig()
        self.db = state if state is not None else sqlite3.connect(":memory:")
        self.commit = commit
        self.pair_window_s = pair_window_s
        self.retain_days = retain_days
        self.db.executescript(_SCHEMA)
        self._pruned_for: date | None = None

    # -- public -----------------------------------------------------------------------------

    def derive(
        self,
        tags: Mapping[str, str],
        readings: Sequence[Reading],
        sensor_meta: Mapping[str, Mapping[str, str]] | None = None,
    ) -> list[Point]:
        """Derived points for one message. ``tags`` holds farm, field, gateway;
        ``sensor_meta`` (optional) maps a sensor name to registry metadata such as depth_cm."""
        base = {k: tags[k] for k in ("farm", "field", "gateway") if k in tags}
        cfg = self.config.for_field(base.get("farm", ""), base.get("field", ""))
        meta = sensor_meta or {}
        good = sorted((r for r in readings if r.value is not None), key=lambda r: r.time)
        out: list[Point] = []
        out += self._air(base, cfg, good)
        out += self._soil(base, cfg, good, meta)
        out += self._daily(base, cfg, [r for r in good if r.quantity == AIR_T])
        if self.commit:
            self.db.commit()
        return out

    # -- per-sample air series --------------------------------------------------------------

    def _air(self, base: dict[str, str], cfg: FieldAgronomy, good: list[Reading]) -> list[Point]:
        temps = [r for r in good if r.quantity == AIR_T and r.unit == "Cel"]
        hums = [r for r in good if r.quantity == AIR_RH and r.unit == "%RH"]
        out: list[Point] = []
        for t in temps:
            rh = self._pair(t, hums)
            tags = {**base, "sensor": t.sensor}
            assert t.value is not None
            dew: float | None = None
            if rh is not None and rh.value is not None and 0 < rh.value <= 100:
                es = saturation_vapour_pressure_kpa(t.value)
                ea = es * rh.value / 100.0
                dew = dew_point_c(ea)
                dew_fields: dict[str, float | int | str | bool] = {"value": round(dew, 3)}
                out.append(Point("dew_point", {**tags, "unit": "Cel"}, dew_fields, _ns(t.time)))
                out.append(
                    Point(
                        "vapour_pressure_deficit",
                        {**tags, "unit": "Pa"},
                        {
                            "value": round(max(0.0, es - ea) * 1000.0, 2),
                            "saturation": round(es * 1000.0, 2),
                            "actual": round(ea * 1000.0, 2),
                        },
                        _ns(t.time),
                    )
                )
            level = frost_risk_level(t.value, dew, cfg)
            out.append(
                Point(
                    "frost_risk",
                    tags,
                    {"value": level, "margin_c": round(t.value - cfg.frost_c, 3)},
                    _ns(t.time),
                )
            )
        return out

    def _pair(self, t: Reading, hums: list[Reading]) -> Reading | None:
        """The RH sample for temperature ``t``: the same sensor if it has one, otherwise the
        closest RH sample of the message within ``pair_window_s``."""
        same = [h for h in hums if h.sensor == t.sensor]
        pool = same or hums
        best = min(pool, key=lambda h: abs(h.time - t.time), default=None)
        if best is None or abs(best.time - t.time) > self.pair_window_s:
            return None
        return best

    # -- soil water ---------------------------------------------------------------------------

    def _soil(
        self,
        base: dict[str, str],
        cfg: FieldAgronomy,
        good: list[Reading],
        meta: Mapping[str, Mapping[str, str]],
    ) -> list[Point]:
        out: list[Point] = []
        for r in good:
            if r.quantity != SOIL_VWC or r.unit != "/" or r.value is None:
                continue
            depth = meta.get(r.sensor, {}).get("depth_cm")
            fc, refill, layer = cfg.calibration(depth)
            tags = {**base, "sensor": r.sensor, "unit": "/"}
            if depth:
                tags["depth_cm"] = depth
            out.append(
                Point(
                    "soil_water_deficit",
                    tags,
                    {
                        "value": round(readily_available_water_depletion(r.value, fc, refill), 4),
                        "deficit_mm": round(soil_water_deficit_mm(r.value, fc, layer), 2),
                        "field_capacity": fc,
                        "refill_point": refill,
                        "waterlogging": cfg.waterlogging_vwc,
                    },
                    _ns(r.time),
                )
            )
        return out

    # -- daily series (state in SQLite) -----------------------------------------------------

    def _daily(self, base: dict[str, str], cfg: FieldAgronomy, temps: list[Reading]) -> list[Point]:
        if not temps:
            return []
        zone = ZoneInfo(cfg.timezone)
        key = (base.get("farm", ""), base.get("field", ""), base.get("gateway", ""))
        touched: dict[tuple[str, date], _Day] = {}
        for r in temps:
            assert r.value is not None
            day = datetime.fromtimestamp(r.time, zone).date()
            state = touched.get((r.sensor, day)) or self._load_day(key, r.sensor, day)
            last = self._last_time(key, r.sensor)
            if state is None:
                state = _Day(r.value, r.value, 0.0)
            else:
                state.tmin = min(state.tmin, r.value)
                state.tmax = max(state.tmax, r.value)
            if (
                last is not None
                and 0 < r.time - last <= cfg.max_sample_gap_s
                and cfg.chill_min_c <= r.value <= cfg.chill_max_c
            ):
                state.chill_s += r.time - last
            if last is None or r.time > last:
                self.db.execute(
                    "INSERT INTO agronomy_last VALUES (?,?,?,?,?) "
                    "ON CONFLICT DO UPDATE SET t=excluded.t",
                    (*key, r.sensor, r.time),
                )
            touched[(r.sensor, day)] = state
            self.db.execute(
                "INSERT INTO agronomy_day VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET "
                "tmin=excluded.tmin, tmax=excluded.tmax, chill_s=excluded.chill_s",
                (*key, r.sensor, day.isoformat(), state.tmin, state.tmax, state.chill_s),
            )
        self._prune(max(day for _, day in touched))
        out: list[Point] = []
        for (sensor, day), state in sorted(touched.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            start = datetime(day.year, day.month, day.day, tzinfo=zone)
            t_ns = _ns(start.timestamp())
            tags = {**base, "sensor": sensor}
            gdd = growing_degree_days(state.tmin, state.tmax, cfg.base_temp_c, cfg.upper_temp_c)
            fields: dict[str, float | int | str | bool] = {
                "value": round(gdd, 3),
                "tmin": state.tmin,
                "tmax": state.tmax,
                "base_c": cfg.base_temp_c,
            }
            if cfg.upper_temp_c is not None:
                fields["upper_c"] = cfg.upper_temp_c
            out.append(Point("growing_degree_days", {**tags, "unit": "Cel.d"}, fields, t_ns))
            out.append(
                Point(
                    "chilling_hours",
                    {**tags, "unit": "h"},
                    {
                        "value": round(state.chill_s / 3600.0, 4),
                        "band_min_c": cfg.chill_min_c,
                        "band_max_c": cfg.chill_max_c,
                    },
                    t_ns,
                )
            )
        return out

    def _load_day(self, key: tuple[str, str, str], sensor: str, day: date) -> _Day | None:
        row = self.db.execute(
            "SELECT tmin, tmax, chill_s FROM agronomy_day WHERE farm=? AND field=? AND gateway=? "
            "AND sensor=? AND day=?",
            (*key, sensor, day.isoformat()),
        ).fetchone()
        return None if row is None else _Day(float(row[0]), float(row[1]), float(row[2]))

    def _last_time(self, key: tuple[str, str, str], sensor: str) -> float | None:
        row = self.db.execute(
            "SELECT t FROM agronomy_last WHERE farm=? AND field=? AND gateway=? AND sensor=?",
            (*key, sensor),
        ).fetchone()
        return None if row is None else float(row[0])

    def _prune(self, newest: date) -> None:
        """Drop day rows older than ``retain_days`` (once per new day): the table stays small."""
        if self._pruned_for == newest:
            return
        self._pruned_for = newest
        cutoff = (newest - timedelta(days=self.retain_days)).isoformat()
        self.db.execute("DELETE FROM agronomy_day WHERE day < ?", (cutoff,))


def config_digest(config: AgronomyConfig) -> str:
    """Short stable digest of a configuration, so a deployment can tell the collector and the
    alert rules were built from the same thresholds."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]
