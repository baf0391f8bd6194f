"""Generate fieldproof's Grafana dashboards and provisioning files from code.

Plain Grafana dashboard JSON (schemaVersion 41: written by Grafana 11.6 and 12.0, migrated
forward on load by later 12.x) with raw InfluxQL targets, so every query the dashboards run
is visible here and testable against a real InfluxDB (tests/integration/test_dashboards.py). The
``grafana-foundation-sdk`` was considered: it installs, but has no InfluxDB query builder
and its PyPI versions are epoch-numbered so a bare ``pip install`` picks the Grafana 10.1
build; plain dicts are simpler and pin nothing.

Alert thresholds come from the same TOML the collector reads (``[agronomy]``, ``[alerts]``),
never from this file. Usage::

    python dashboards/generate.py [--config dashboards/fields.example.toml] [--check]

writes dashboards/json/*.json and dashboards/provisioning/**.yaml; ``--check`` only compares.
"""

# The generator's job is to write InfluxQL text; tag values from the TOML go through _lit().
# ruff: noqa: S608

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from collector.agronomy import AgronomyConfig, FieldAgronomy

HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "fields.example.toml"

#: Grafana's dashboard schema version this generator writes (Grafana 11.6 / 12.0).
SCHEMA_VERSION = 41
DATASOURCE_UID = "fieldproof-influxdb"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
FOLDER_PATH = "/var/lib/grafana/dashboards/fieldproof"

Json = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Units: how each measurement is stored (SenML) and shown (Grafana unit id + InfluxQL math)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Configuration read from the TOML
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Query building blocks
# --------------------------------------------------------------------------------------------

VAR_FILTERS = {
    "farm": '"farm" =~ /^$farm$/',
    "field": '"field" =~ /^$field$/',
    "gateway": '"gateway" =~ /^$gateway$/',
    "sensor": '"sensor" =~ /^$sensor$/',
}


def where(*keys: str) -> str:
    """``$timeFilter`` plus the template-variable filters for ``keys``."""
    return " AND ".join(["$timeFilter", *(VAR_FILTERS[k] for k in keys)])


def group_by(*tags: str, interval: str | None = "$__interval", fill: str = "none") -> str:
    parts = ([f"time({interval})"] if interval else []) + [f'"{t}"' for t in tags]
    text = " GROUP BY " + ", ".join(parts) if parts else ""
    return text + (f" fill({fill})" if interval else "")


def target(ref: str, query: str, alias: str = "", fmt: str = "time_series") -> Json:
    t: Json = {
        "refId": ref,
        "datasource": DATASOURCE,
        "query": query,
        "rawQuery": True,
        "resultFormat": fmt,
    }
    if alias:
        t["alias"] = alias
    return t


def series_query(measurement: str, keys: tuple[str, ...], tags: tuple[str, ...],
                 agg: str = "mean", field: str = "value", extra: str = "") -> str:
    q = QUANTITIES[measurement]
    return (
        f'SELECT {agg}("{field}"){q.math} FROM "{measurement}" WHERE {where(*keys)}{extra}'
        f"{group_by(*tags)}"
    )


# --------------------------------------------------------------------------------------------
# Panels and layout
# --------------------------------------------------------------------------------------------


def field_config(unit: str, decimals: int | None = None, **custom: Any) -> Json:
    defaults: Json = {
        "unit": unit,
        "color": {"mode": "palette-classic"},
        "thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": None}]},
        "mappings": [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    if custom:
        defaults["custom"] = custom
    return {"defaults": defaults, "overrides": []}


def timeseries(title: str, description: str, targets: list[Json], unit: str,
               decimals: int | None = None, bars: bool = False) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
    }
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": field_config(unit, decimals, **custom),
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "multi", "sort": "none"},
        },
    }


def table(title: str, description: str, targets: list[Json], unit: str = "none",
          transformations: list[Json] | None = None, overrides: list[Json] | None = None) -> Json:
    fc = field_config(unit)
    fc["overrides"] = overrides or []
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": fc,
        "options": {"showHeader": True, "cellHeight": "sm"},
        "transformations": transformations or [],
    }


def stat(title: str, description: str, targets: list[Json], unit: str,
         steps: list[Json], decimals: int | None = None,
         minimum: float | None = None, maximum: float | None = None) -> Json:
    fc = field_config(unit, decimals)
    fc["defaults"]["color"] = {"mode": "thresholds"}
    fc["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
    if minimum is not None:
        fc["defaults"]["min"] = minimum
    if maximum is not None:
        fc["defaults"]["max"] = maximum
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": fc,
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "orientation": "auto",
            "justifyMode": "auto",
        },
    }


def state_timeline(title: str, description: str, targets: list[Json],
                   mappings: list[Json], steps: list[Json]) -> Json:
    fc = field_config("none")
    fc["defaults"]["color"] = {"mode": "thresholds"}
    fc["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
    fc["defaults"]["mappings"] = mappings
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": fc,
        "options": {
            "showValue": "auto",
            "mergeValues": True,
            "rowHeight": 0.9,
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def age_override(field_name: str = "Time", display: str = "Age") -> Json:
    """Show a table's time column as 'x minutes ago', the question people ask of a reading."""
    return {
        "matcher": {"id": "byName", "options": field_name},
        "properties": [
            {"id": "unit", "value": "dateTimeFromNow"},
            {"id": "displayName", "value": display},
        ],
    }


def unit_override(field_name: str, unit: str, decimals: int | None = None) -> Json:
    props: list[Json] = [{"id": "unit", "value": unit}]
    if decimals is not None:
        props.append({"id": "decimals", "value": decimals})
    return {"matcher": {"id": "byName", "options": field_name}, "properties": props}


class Layout:
    """Places panels on Grafana's 24-column grid, left to right, wrapping; rows span 24."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = 0
        self.y = 0
        self.row_h = 0

    def _next_id(self) -> int:
        return len(self.panels) + 1

    def row(self, title: str) -> None:
        self._wrap()
        self.panels.append({
            "type": "row", "title": title, "id": self._next_id(), "collapsed": False,
            "panels": [], "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
        })
        self.y += 1

    def add(self, panel: Json, w: int, h: int) -> None:
        if self.x + w > 24:
            self._wrap()
        panel = {"id": self._next_id(), "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
                 **panel}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def _wrap(self) -> None:
        if self.x:
            self.y += self.row_h
        self.x = 0
        self.row_h = 0


# --------------------------------------------------------------------------------------------
# Dashboards
# --------------------------------------------------------------------------------------------


def variable(name: str, label: str, query: str) -> Json:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": query,
        "definition": query,
        "refresh": 1,
        "includeAll": True,
        "multi": True,
        "sort": 1,
        "current": {},
        "options": [],
        "hide": 0,
        "skipUrlSync": False,
    }


def variables(*names: str) -> list[Json]:
    """The chained farm → field → gateway → sensor pickers (InfluxQL SHOW TAG VALUES)."""
    out = []
    conds: list[str] = []
    for name in names:
        q = f'SHOW TAG VALUES WITH KEY = "{name}"'
        if conds:
            q += " WHERE " + " AND ".join(conds)
        out.append(variable(name, name.capitalize(), q))
        conds.append(VAR_FILTERS[name])
    return out


def dashboard(uid: str, title: str, description: str, layout: Layout, var_names: tuple[str, ...],
              links: list[Json] | None = None, time_from: str = "now-2d") -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["fieldproof"],
        "timezone": "browser",
        "editable": False,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "refresh": "1m",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "panels": layout.panels,
        "templating": {"list": variables(*var_names)},
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }]},
        "links": [
            {"title": "fieldproof", "type": "dashboards", "tags": ["fieldproof"],
             "asDropdown": True, "icon": "external link", "includeVars": True, "keepTime": True,
             "targetBlank": False, "tooltip": "", "url": ""},
            *(links or []),
        ],
    }


SOIL_AIR = ("farm", "field", "gateway", "sensor")
PER_SENSOR = ("gateway", "sensor")


def field_overview() -> Json:
    lay = Layout()
    lay.row("Latest readings")
    latest_targets = []
    for ref, m in zip("ABCDE", ("soil_moisture", "soil_temperature", "air_temperature",
                                "air_humidity", "soil_ec"), strict=True):
        q = QUANTITIES[m]
        latest_targets.append(target(
            ref,
            f'SELECT last("value"){q.math} AS "{q.title}" FROM "{m}" WHERE {where(*SOIL_AIR)}'
            f'{group_by("farm", "field", "gateway", "sensor", interval=None)}',
            fmt="table",
        ))
    lay.add(table(
        "Latest value per sensor",
        "Last good reading of each quantity per sensor in the selected range, and how old it "
        "is. A reading much older than its neighbours means the probe is failing or silent.",
        latest_targets,
        transformations=[{"id": "merge", "options": {}}],
        overrides=[
            age_override(),
            *(unit_override(QUANTITIES[m].title, QUANTITIES[m].unit, QUANTITIES[m].decimals)
              for m in ("soil_moisture", "soil_temperature", "air_temperature", "air_humidity",
                        "soil_ec")),
        ],
    ), 24, 8)

    lay.row("Soil water")
    vwc = QUANTITIES["soil_moisture"]
    vwc_panel = timeseries(
        "Soil moisture by depth (%VWC)",
        "Volumetric water content per probe and depth. Dashed lines: the field's calibration "
        "(full point = field capacity, refill point) as the collector applied it.",
        [
            target("A", series_query("soil_moisture", SOIL_AIR, ("gateway", "sensor", "depth_cm")),
                   "$tag_gateway $tag_sensor $tag_depth_cm cm"),
            target("B",
                   'SELECT mean("field_capacity") * 100 AS "full point", mean("refill_point") * 100'
                   f' AS "refill point" FROM "soil_water_deficit" WHERE {where("farm", "field")}'
                   f'{group_by("field")}',
                   "$tag_field $col"),
        ],
        vwc.unit, vwc.decimals,
    )
    vwc_panel["fieldConfig"]["overrides"] = [{
        "matcher": {"id": "byRegexp", "options": ".*(full point|refill point)$"},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.lineWidth", "value": 2},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }]
    lay.add(vwc_panel, 16, 9)
    ec = QUANTITIES["soil_ec"]
    lay.add(timeseries(
        "Soil EC (dS/m)", "Bulk/pore-water electrical conductivity; rises as the soil dries.",
        [target("A", series_query("soil_ec", SOIL_AIR, PER_SENSOR), "$tag_gateway $tag_sensor")],
        ec.unit, ec.decimals,
    ), 8, 9)

    lay.row("Temperature and humidity")
    st = QUANTITIES["soil_temperature"]
    lay.add(timeseries(
        "Soil and air temperature (°C)",
        "Air temperature leads, soil temperature lags and damps it.",
        [
            target("A", series_query("soil_temperature", SOIL_AIR, PER_SENSOR),
                   "soil $tag_gateway $tag_sensor"),
            target("B", series_query("air_temperature", SOIL_AIR, PER_SENSOR),
                   "air $tag_gateway $tag_sensor"),
        ],
        st.unit, st.decimals,
    ), 12, 9)
    rh = QUANTITIES["air_humidity"]
    lay.add(timeseries(
        "Air humidity (%RH)", "Relative humidity at the gateway's air sensor.",
        [target("A", series_query("air_humidity", SOIL_AIR, PER_SENSOR),
                "$tag_gateway $tag_sensor")],
        rh.unit, rh.decimals,
    ), 12, 9)
    return dashboard("fieldproof-field-overview", "fieldproof · Field overview",
                     "Soil water, temperature, humidity and EC per field, with the field's "
                     "irrigation thresholds.", lay, SOIL_AIR)


def agronomy() -> Json:
    lay = Layout()
    lay.row("Air")
    vpd = QUANTITIES["vapour_pressure_deficit"]
    vpd_panel = timeseries(
        "Vapour pressure deficit (kPa)",
        "es - ea from air temperature and RH (FAO-56 eq. 11-13), derived at ingest. Around "
        "0.4-1.6 kPa most crops transpire freely; above about 2-3 kPa stomata close.",
        [target("A", series_query("vapour_pressure_deficit", SOIL_AIR, PER_SENSOR),
                "$tag_gateway $tag_sensor")],
        vpd.unit, vpd.decimals,
    )
    lay.add(vpd_panel, 12, 9)
    dp = QUANTITIES["dew_point"]
    lay.add(timeseries(
        "Dew point and air temperature (°C)",
        "Dew point from FAO-56 eq. 11 inverted. Air close to its dew point at night: dew, "
        "disease pressure; dew point below 0 °C on a clear night: frost can follow.",
        [
            target("A", series_query("dew_point", SOIL_AIR, PER_SENSOR),
                   "dew point $tag_gateway $tag_sensor"),
            target("B", series_query("air_temperature", SOIL_AIR, PER_SENSOR),
                   "air $tag_gateway $tag_sensor"),
        ],
        dp.unit, dp.decimals,
    ), 12, 9)
    lay.add(state_timeline(
        "Frost risk",
        "Per air sensor: none, risk (at/below the field's watch threshold, or dry air near "
        "it), frost (at/below the frost threshold). Thresholds per field in the TOML.",
        [target("A", f'SELECT max("value") FROM "frost_risk" WHERE {where(*SOIL_AIR)}'
                     f"{group_by(*PER_SENSOR)}", "$tag_gateway $tag_sensor")],
        mappings=[{"type": "value", "options": {
            "0": {"text": "none", "color": "green", "index": 0},
            "1": {"text": "risk", "color": "orange", "index": 1},
            "2": {"text": "frost", "color": "red", "index": 2},
        }}],
        steps=[{"color": "green", "value": None}, {"color": "orange", "value": 1},
               {"color": "red", "value": 2}],
    ), 24, 6)

    lay.row("Heat and chill accumulation")
    gdd = QUANTITIES["growing_degree_days"]
    daily_where = where(*SOIL_AIR)
    lay.add(timeseries(
        "Growing degree days per day (°C·d)",
        "Daily GDD from the local day's min/max air temperature (McMaster & Wilhelm 1997, "
        "base and cap per field). Today's bar grows during the day.",
        [target("A", f'SELECT "value" FROM "growing_degree_days" WHERE {daily_where}'
                     f'{group_by(*PER_SENSOR, interval=None)}', "$tag_gateway $tag_sensor")],
        gdd.unit, gdd.decimals, bars=True,
    ), 12, 8)
    lay.add(timeseries(
        "Growing degree days accumulated over the range (°C·d)",
        "Running sum of daily GDD from the start of the selected range: set the range to the "
        "sowing/bud-break date to read the season's total.",
        [target("A", f'SELECT cumulative_sum("value") FROM "growing_degree_days" WHERE '
                     f'{daily_where}{group_by(*PER_SENSOR, interval=None)}',
                "$tag_gateway $tag_sensor")],
        gdd.unit, gdd.decimals,
    ), 12, 8)
    ch = QUANTITIES["chilling_hours"]
    lay.add(timeseries(
        "Chilling hours per day (h)",
        "Hours with air temperature in the field's chilling band (0-7.2 °C model).",
        [target("A", f'SELECT "value" FROM "chilling_hours" WHERE {daily_where}'
                     f'{group_by(*PER_SENSOR, interval=None)}', "$tag_gateway $tag_sensor")],
        ch.unit, ch.decimals, bars=True,
    ), 12, 8)
    lay.add(timeseries(
        "Chilling hours accumulated over the range (h)",
        "Running sum from the start of the selected range (set it to the start of dormancy).",
        [target("A", f'SELECT cumulative_sum("value") FROM "chilling_hours" WHERE '
                     f'{daily_where}{group_by(*PER_SENSOR, interval=None)}',
                "$tag_gateway $tag_sensor")],
        ch.unit, ch.decimals,
    ), 12, 8)

    lay.row("Soil water balance")
    swd = QUANTITIES["soil_water_deficit"]
    raw_panel = timeseries(
        "Readily available water used (%)",
        "0 % = field capacity, 100 % = refill point (irrigate), above 100 % = below refill. "
        "Uses each field's (and depth's) calibration from the TOML.",
        [target("A", series_query("soil_water_deficit", SOIL_AIR,
                                  ("gateway", "sensor", "depth_cm")),
                "$tag_gateway $tag_sensor $tag_depth_cm cm")],
        swd.unit, swd.decimals,
    )
    raw_panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = {"mode": "line+area"}
    raw_panel["fieldConfig"]["defaults"]["thresholds"]["steps"] = [
        {"color": "transparent", "value": None}, {"color": "red", "value": 100}]
    lay.add(raw_panel, 12, 9)
    lay.add(timeseries(
        "Soil water deficit below field capacity (mm)",
        "(field capacity - VWC) x the layer the probe stands for: the irrigation depth that "
        "would refill that layer.",
        [target("A", f'SELECT mean("deficit_mm") FROM "soil_water_deficit" WHERE '
                     f'{where(*SOIL_AIR)}{group_by("gateway", "sensor", "depth_cm")}',
                "$tag_gateway $tag_sensor $tag_depth_cm cm")],
        "lengthmm", 1,
    ), 12, 9)
    return dashboard("fieldproof-agronomy", "fieldproof · Agronomy",
                     "Series derived at ingest: VPD, dew point, frost risk, growing degree days, "
                     "chilling hours, soil water depletion.", lay, SOIL_AIR, time_from="now-7d")


def fleet_health(alerts: AlertsConfig) -> Json:
    lay = Layout()
    gw = ("farm", "field", "gateway")
    lay.row("Gateways")
    status_fields = (
        '"online"', '"uptime_s"', '"spool_depth"', '"sensor_errors"', '"last_publish_age_s"',
        '"clock_ok"', '"version"',
    )
    lay.add(table(
        "Gateway status",
        "Last retained status of each gateway. Offline = the broker published its Last Will.",
        [target("A", "SELECT " + ", ".join(f"last({f}) AS {f}" for f in status_fields)
                + f' FROM "gateway_status" WHERE {where(*gw)}'
                + group_by("farm", "field", "gateway", interval=None), fmt="table")],
        overrides=[
            {"matcher": {"id": "byName", "options": "online"}, "properties": [
                {"id": "mappings", "value": [{"type": "value", "options": {
                    "0": {"text": "offline", "color": "red", "index": 0},
                    "1": {"text": "online", "color": "green", "index": 1}}}]},
                {"id": "custom.cellOptions", "value": {"type": "color-background"}},
            ]},
            {"matcher": {"id": "byName", "options": "clock_ok"}, "properties": [
                {"id": "mappings", "value": [{"type": "value", "options": {
                    "0": {"text": "clock wrong", "color": "red", "index": 0},
                    "1": {"text": "ok", "color": "green", "index": 1}}}]},
            ]},
            unit_override("uptime_s", "dtdurations"),
            unit_override("last_publish_age_s", "s"),
            {"matcher": {"id": "byName", "options": "Time"},
             "properties": [{"id": "custom.hidden", "value": True}]},
        ],
    ), 16, 8)
    lay.add(table(
        "Last seen",
        f"Time of each gateway's latest status message. Silent for more than "
        f"{alerts.gateway_silent_after_s} s raises the 'gateway silent' alert.",
        [target("A", f'SELECT last("online") AS "online" FROM "gateway_status" WHERE {where(*gw)}'
                     + group_by("farm", "field", "gateway", interval=None), fmt="table")],
        overrides=[age_override(display="Last seen"),
                   {"matcher": {"id": "byName", "options": "online"},
                    "properties": [{"id": "custom.hidden", "value": True}]}],
    ), 8, 8)
    lay.add(timeseries(
        "Spool depth (messages waiting on the gateway)",
        "Readings signed and stored on the gateway but not yet acknowledged by the broker: "
        "grows while the uplink is down, drains when it is back.",
        [target("A", f'SELECT max("spool_depth") FROM "gateway_status" WHERE {where(*gw)}'
                     + group_by("gateway"), "$tag_gateway")],
        "short", 0,
    ), 12, 8)
    lay.add(timeseries(
        "Sensor errors per hour (gateway counters)",
        "Rate of the gateway's total sensor-fault counter (DHT22 checksum errors, Modbus "
        "timeouts, ...).",
        [target("A", 'SELECT non_negative_derivative(max("sensor_errors"), 1h) FROM '
                     f'"gateway_status" WHERE {where(*gw)}' + group_by("gateway"),
                "$tag_gateway")],
        "short", 1,
    ), 12, 8)
    quantities = "|".join(alerts.sensor_quantities)
    lay.add(timeseries(
        "Missing readings per sensor and hour",
        "Signed gaps: readings a sensor failed to produce, as carried on the wire. Empty = no "
        "failures in the range.",
        [target("A", f'SELECT count("missing") FROM /^({quantities})$/ WHERE {where(*SOIL_AIR)}'
                     + group_by("gateway", "sensor", interval="1h"),
                "$m $tag_gateway $tag_sensor")],
        "short", 0, bars=True,
    ), 24, 8)

    lay.row("Collectors")
    lay.add(timeseries(
        "Ingest per minute",
        "Messages accepted, duplicates dropped (redeliveries), quarantined and sequence gaps "
        "detected, per collector.",
        [target("A", 'SELECT non_negative_derivative(last("accepted"), 1m) AS "accepted", '
                     'non_negative_derivative(last("duplicates"), 1m) AS "duplicates", '
                     'non_negative_derivative(last("quarantined"), 1m) AS "quarantined", '
                     'non_negative_derivative(last("gaps"), 1m) AS "gaps" '
                     'FROM "collector_stats" WHERE $timeFilter' + group_by("collector"),
                "$tag_collector $col")],
        "short", 1,
    ), 12, 8)
    lay.add(timeseries(
        "Quarantined messages by reason",
        "Messages refused and kept aside: unknown gateway, bad signature, malformed, replay...",
        [target("A", 'SELECT sum("count") FROM "quarantine" WHERE $timeFilter'
                     + group_by("reason"), "$tag_reason")],
        "short", 0, bars=True,
    ), 12, 8)
    lay.add(timeseries(
        "Ingest lag (s)", "Sample time to durable write, per collector.",
        [target("A", 'SELECT max("lag_s") FROM "collector_stats" WHERE $timeFilter'
                     + group_by("collector"), "$tag_collector")],
        "s", 1,
    ), 8, 8)
    lay.add(timeseries(
        "Backlog (messages)", "Messages received but not yet durable.",
        [target("A", 'SELECT max("backlog") FROM "collector_stats" WHERE $timeFilter'
                     + group_by("collector"), "$tag_collector")],
        "short", 0,
    ), 8, 8)
    lay.add(timeseries(
        "Sequence gaps (cumulative)",
        "Messages a gateway numbered but this collector never got. With several collectors on "
        "one shared subscription each counts the others' share as gaps too: there the gateways' "
        "spool depth (Fleet health) is the figure that counts what no collector has confirmed.",
        [target("A", 'SELECT last("gaps") FROM "collector_stats" WHERE $timeFilter'
                     + group_by("collector"), "$tag_collector")],
        "short", 0,
    ), 8, 8)

    lay.row("Anchoring")
    lay.add(table(
        "Anchoring state",
        "Evidence log size, the part in an anchor transaction, the part in a finalized block.",
        [target("A", 'SELECT last("log_size") AS "log_size", last("anchored_size") AS '
                     '"anchored_size", last("finalized_size") AS "finalized_size", '
                     'last("pending") AS "pending", last("last_finalized_age_s") AS '
                     '"last_finalized_age_s" FROM "anchor_state" WHERE $timeFilter'
                     + group_by("collector", "chain", interval=None), fmt="table")],
        overrides=[unit_override("last_finalized_age_s", "dtdurations"),
                   {"matcher": {"id": "byName", "options": "Time"},
                    "properties": [{"id": "custom.hidden", "value": True}]}],
    ), 12, 8)
    age = timeseries(
        "Age of the last finalized anchor",
        f"Alert 'anchoring stalled' above {alerts.anchoring_stalled_after_s} s.",
        [target("A", 'SELECT max("last_finalized_age_s") FROM "anchor_state" WHERE $timeFilter'
                     + group_by("collector", "chain"), "$tag_collector $tag_chain")],
        "s", 0,
    )
    age["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"] = {"mode": "dashed"}
    age["fieldConfig"]["defaults"]["thresholds"]["steps"] = [
        {"color": "green", "value": None},
        {"color": "red", "value": alerts.anchoring_stalled_after_s}]
    lay.add(age, 12, 8)
    return dashboard("fieldproof-fleet-health", "fieldproof · Fleet health",
                     "Gateways, sensors, collectors and anchoring: is the data arriving, "
                     "complete and anchored?", lay, SOIL_AIR, time_from="now-24h")


def export_url(collector_url: str, farm: str, field: str) -> str:
    return (f"{collector_url.rstrip('/')}/api/export?farm={farm}&field={field}"
            "&from=${__from:date:iso}&to=${__to:date:iso}")


def integrity(dash: DashboardsConfig) -> Json:
    lay = Layout()
    lay.row("Anchoring coverage")
    cov = stat(
        "Share of this period's evidence covered by finalized anchors",
        "Per collector log and chain: of the log entries appended during the selected "
        "period, the share already inside a checkpoint anchored in a finalized block, as of "
        "the end of the period. Collectors share the MQTT subscription, so every field's "
        "readings are spread over all collector logs: a field's coverage is that of the "
        "least-covered log. 0 % for a period with no entries.",
        [target("A",
                'SELECT ((last("finalized_size") - first("log_size")) + '
                'abs((last("finalized_size") - first("log_size")) * 1.0)) / 2.0 / '
                '(last("log_size") - first("log_size")) AS "covered" FROM "anchor_state" '
                "WHERE $timeFilter" + group_by("collector", "chain", interval=None),
                "$tag_collector $tag_chain")],
        "percentunit",
        [{"color": "red", "value": None}, {"color": "orange", "value": 0.5},
         {"color": "green", "value": 0.99}],
        decimals=1, minimum=0, maximum=1,
    )
    lay.add(cov, 12, 7)
    age = stat(
        "Age of the last finalized anchor",
        "Readings newer than this are not yet fixed on chain.",
        [target("A", 'SELECT last("last_finalized_age_s") FROM "anchor_state" WHERE $timeFilter'
                     + group_by("collector", "chain", interval=None), "$tag_collector $tag_chain")],
        "dtdurations",
        [{"color": "green", "value": None}, {"color": "orange", "value": 3600},
         {"color": "red", "value": 7200}],
    )
    lay.add(age, 12, 7)
    lay.add(timeseries(
        "Evidence log: appended, anchored, finalized (entries)",
        "The gap between the lines is evidence waiting for an anchor or for finality.",
        [target("A", 'SELECT max("log_size") AS "log", max("anchored_size") AS "anchored", '
                     'max("finalized_size") AS "finalized" FROM "anchor_state" WHERE $timeFilter'
                     + group_by("collector", "chain"), "$tag_collector $tag_chain $col")],
        "short", 0,
    ), 24, 8)

    lay.row("Evidence per field")
    quantities = "|".join(QUANTITIES_RAW)
    export = export_url(dash.collector_url, "${__data.fields.farm}", "${__data.fields.field}")
    tbl = table(
        "Readings per field in this period, with the evidence export",
        "Signed readings (good and missing) stored for each field in the selected period. "
        "The link downloads the evidence bundle for that field and period from the collector; "
        "check it offline with `fieldproof verify`.",
        [target("A", f'SELECT sum("n") AS "readings" FROM (SELECT count("seq") AS "n" FROM '
                     f'/^({quantities})$/ WHERE {where("farm", "field")} GROUP BY "farm", "field")'
                     ' GROUP BY "farm", "field"', fmt="table")],
        overrides=[
            {"matcher": {"id": "byName", "options": "field"}, "properties": [
                {"id": "links", "value": [{"title": "Evidence export for ${__data.fields.farm}/"
                                           "${__data.fields.field}", "url": export,
                                           "targetBlank": True}]}]},
            {"matcher": {"id": "byName", "options": "Time"},
             "properties": [{"id": "custom.hidden", "value": True}]},
        ],
    )
    lay.add(tbl, 24, 8)
    links = [{"title": "Evidence export ($farm / $field, this period)", "type": "link",
              "url": export_url(dash.collector_url, "${farm}", "${field}"),
              "icon": "doc", "tooltip": "Download the evidence bundle from the collector",
              "targetBlank": True, "includeVars": False, "keepTime": False, "asDropdown": False,
              "tags": []}]
    return dashboard("fieldproof-integrity", "fieldproof · Integrity",
                     "How much of each period is fixed on chain, and the evidence export per "
                     "field.", lay, ("farm", "field"), links=links, time_from="now-7d")


#: the measurements gateways write (not derived, not operational)
QUANTITIES_RAW = ("soil_moisture", "soil_temperature", "air_temperature", "air_humidity",
                  "soil_ec", "soil_ph", "soil_nitrogen", "soil_phosphorus", "soil_potassium",
                  "air_pressure", "illuminance")


# --------------------------------------------------------------------------------------------
# Alert rules (Grafana unified alerting file provisioning)
# --------------------------------------------------------------------------------------------


def _lit(value: str) -> str:
    """An InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _uid(*parts: str) -> str:
    """Rule uids: short (Grafana allows 40 chars), stable, unique per rule and field."""
    return "fp-" + parts[0] + "-" + hashlib.sha256("/".join(parts).encode()).hexdigest()[:10]


def _query(ref: str, query: str, window_s: int) -> Json:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": window_s, "to": 0},
        "datasourceUid": DATASOURCE_UID,
        "model": {"refId": ref, "datasource": DATASOURCE, "query": query, "rawQuery": True,
                  "resultFormat": "time_series", "intervalMs": 60000, "maxDataPoints": 43200},
    }


def _reduce(ref: str, source: str, reducer: str, replace_null: float | None = None) -> Json:
    settings: Json = ({"mode": "replaceNN", "replaceWithValue": replace_null}
                      if replace_null is not None else {"mode": "dropNN"})
    return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
            "model": {"refId": ref, "type": "reduce", "expression": source, "reducer": reducer,
                      "settings": settings, "datasource": {"type": "__expr__", "uid": "__expr__"}}}


def _threshold(ref: str, source: str, op: str, value: float) -> Json:
    return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
            "model": {"refId": ref, "type": "threshold", "expression": source,
                      "conditions": [{"evaluator": {"type": op, "params": [value]}}],
                      "datasource": {"type": "__expr__", "uid": "__expr__"}}}


def _math(ref: str, expression: str) -> Json:
    return {"refId": ref, "relativeTimeRange": {"from": 0, "to": 0}, "datasourceUid": "__expr__",
            "model": {"refId": ref, "type": "math", "expression": expression,
                      "datasource": {"type": "__expr__", "uid": "__expr__"}}}


def _rule(uid: str, title: str, data: list[Json], condition: str, for_: str, summary: str,
          severity: str, no_data: str = "NoData", dashboard_uid: str = "") -> Json:
    annotations = {"summary": summary}
    if dashboard_uid:
        annotations["__dashboardUid__"] = dashboard_uid
    return {
        "uid": uid,
        "title": title,
        "condition": condition,
        "data": data,
        "noDataState": no_data,
        "execErrState": "Error",
        "for": for_,
        "annotations": annotations,
        "labels": {"severity": severity, "team": "fieldproof"},
        "isPaused": False,
    }


@dataclass(frozen=True)
class _Scope:
    """Which fields one rule covers: a configured field, or every field not configured."""

    name: str
    where: str
    cfg: FieldAgronomy


def _scopes(agro: AgronomyConfig) -> list[_Scope]:
    scopes = [
        _Scope(f"{f.farm}/{f.field}", f'"farm" = {_lit(f.farm)} AND "field" = {_lit(f.field)}', f)
        for f in agro.fields
    ]
    others = " AND ".join(f'("farm" != {_lit(f.farm)} OR "field" != {_lit(f.field)})'
                          for f in agro.fields)
    scopes.append(_Scope("other fields", others or "true", agro.default))
    return scopes


FIELD_LABELS = ("farm", "field", "gateway", "sensor")


def agronomy_rules(agro: AgronomyConfig, alerts: AlertsConfig) -> list[Json]:
    rules: list[Json] = []
    by = group_by(*FIELD_LABELS, interval=None)
    for sc in _scopes(agro):
        c = sc.cfg
        w = f"$timeFilter AND {sc.where}" if sc.where != "true" else "$timeFilter"
        window = seconds(alerts.dry_for)
        rules.append(_rule(
            _uid("dry", sc.name), f"Dry soil ({sc.name})",
            [_query("A", f'SELECT max("value") FROM "soil_moisture" WHERE {w}'
                         f'{group_by(*FIELD_LABELS, "depth_cm", interval=None)}', window),
             _reduce("B", "A", "last"), _threshold("C", "B", "lt", c.refill_point)],
            "C", alerts.dry_for,
            f"Soil at {{{{ $labels.farm }}}}/{{{{ $labels.field }}}} probe "
            f"{{{{ $labels.sensor }}}} ({{{{ $labels.depth_cm }}}} cm) stayed below the refill "
            f"point {c.refill_point * 100:g} %VWC for {alerts.dry_for}: irrigate.",
            "warning", dashboard_uid="fieldproof-field-overview"))
        window = seconds(alerts.waterlogging_window)
        rules.append(_rule(
            _uid("waterlogging", sc.name), f"Waterlogging ({sc.name})",
            [_query("A", f'SELECT mean("value") FROM "soil_moisture" WHERE {w}'
                         f'{group_by(*FIELD_LABELS, "depth_cm", interval=None)}', window),
             _reduce("B", "A", "last"), _threshold("C", "B", "gt", c.waterlogging_vwc)],
            "C", "0s",
            f"Mean soil moisture at {{{{ $labels.farm }}}}/{{{{ $labels.field }}}} probe "
            f"{{{{ $labels.sensor }}}} above {c.waterlogging_vwc * 100:g} %VWC over the last "
            f"{alerts.waterlogging_window}: waterlogged, check drainage and irrigation.",
            "warning", dashboard_uid="fieldproof-field-overview"))
        window = seconds(alerts.frost_window)
        rules.append(_rule(
            _uid("frost", sc.name), f"Frost risk ({sc.name})",
            [_query("A", f'SELECT min("value") FROM "air_temperature" WHERE {w}{by}', window),
             _reduce("B", "A", "last"), _threshold("C", "B", "lt", c.frost_watch_c)],
            "C", "0s",
            f"Air at {{{{ $labels.farm }}}}/{{{{ $labels.field }}}} ({{{{ $labels.sensor }}}}) "
            f"fell to {{{{ $values.B.Value | printf \"%.1f\" }}}} °C, below the frost "
            f"watch threshold {c.frost_watch_c:g} °C (frost at {c.frost_c:g} °C).",
            "critical", dashboard_uid="fieldproof-agronomy"))
        window = seconds(alerts.heat_window)
        rules.append(_rule(
            _uid("heat", sc.name), f"Heat stress ({sc.name})",
            [_query("A", f'SELECT min("value") FROM "air_temperature" WHERE {w}{by}', window),
             _reduce("B", "A", "last"), _threshold("C", "B", "gt", c.heat_c)],
            "C", "0s",
            f"Air at {{{{ $labels.farm }}}}/{{{{ $labels.field }}}} stayed above "
            f"{c.heat_c:g} °C for {alerts.heat_window}: heat stress.",
            "warning", dashboard_uid="fieldproof-agronomy"))
    return rules


def fleet_rules(alerts: AlertsConfig) -> list[Json]:
    rules: list[Json] = []
    gw_by = group_by("farm", "field", "gateway", interval=None)
    window = max(3600, 2 * alerts.gateway_silent_after_s)
    rules.append(_rule(
        "fp-gateway-silent", "Gateway silent",
        [_query("A", f'SELECT last("online") FROM "gateway_status" WHERE $timeFilter{gw_by}',
                window),
         _query("B", f'SELECT last("last_publish_age_s") FROM "gateway_status" WHERE $timeFilter'
                     f"{gw_by}", window),
         _reduce("C", "A", "last"), _reduce("D", "B", "last"),
         _math("E", f"$C < 1 || $D > {alerts.gateway_silent_after_s}")],
        "E", "5m",
        "Gateway {{ $labels.gateway }} at {{ $labels.farm }}/{{ $labels.field }} is offline or "
        f"has not published for more than {alerts.gateway_silent_after_s} s.",
        "critical", no_data="Alerting", dashboard_uid="fieldproof-fleet-health"))
    window = seconds(alerts.sensor_missing_window)
    for m in alerts.sensor_quantities:
        rules.append(_rule(
            _uid("sensor", m), f"Sensor failing: {m}",
            [_query("A", f'SELECT count("missing") FROM "{m}" WHERE $timeFilter'
                         f'{group_by(*FIELD_LABELS, interval=None)}', window),
             _reduce("B", "A", "last", replace_null=0),
             _threshold("C", "B", "gt", alerts.sensor_missing_max)],
            "C", "0s",
            f"Sensor {{{{ $labels.sensor }}}} on {{{{ $labels.gateway }}}} "
            f"({{{{ $labels.farm }}}}/{{{{ $labels.field }}}}) missed "
            f"{{{{ $values.B.Value }}}} {m} readings in {alerts.sensor_missing_window}.",
            "warning", dashboard_uid="fieldproof-fleet-health"))
    rules.append(_rule(
        "fp-anchoring-stalled", "Anchoring stalled",
        [_query("A", 'SELECT last("last_finalized_age_s") FROM "anchor_state" WHERE $timeFilter'
                     + group_by("collector", "chain", interval=None), 3600),
         _reduce("B", "A", "last"),
         _threshold("C", "B", "gt", alerts.anchoring_stalled_after_s)],
        "C", "10m",
        "No checkpoint of collector {{ $labels.collector }} finalized on {{ $labels.chain }} "
        f"for more than {alerts.anchoring_stalled_after_s} s: evidence is not being fixed on "
        "chain.",
        "critical", no_data="Alerting", dashboard_uid="fieldproof-integrity"))
    return rules


def alert_provisioning(cfg: Config) -> Json:
    a = cfg.alerts
    return {
        "apiVersion": 1,
        "groups": [
            {"orgId": 1, "name": "fieldproof-agronomy", "folder": a.folder, "interval": a.interval,
             "rules": agronomy_rules(cfg.agronomy, a)},
            {"orgId": 1, "name": "fieldproof-fleet", "folder": a.folder, "interval": a.interval,
             "rules": fleet_rules(a)},
        ],
    }


def datasource_provisioning() -> Json:
    return {
        "apiVersion": 1,
        "datasources": [{
            "name": "fieldproof InfluxDB",
            "uid": DATASOURCE_UID,
            "type": "influxdb",
            "access": "proxy",
            "url": "${FIELDPROOF_INFLUX_URL}",
            "user": "${FIELDPROOF_INFLUX_USER}",
            "jsonData": {
                "version": "InfluxQL",
                "dbName": "${FIELDPROOF_INFLUX_DB}",
                "httpMode": "POST",
                "timeInterval": "1m",
            },
            "secureJsonData": {"password": "${FIELDPROOF_INFLUX_PASSWORD}"},
            "editable": False,
        }],
    }


def dashboard_provisioning(folder: str) -> Json:
    return {
        "apiVersion": 1,
        "providers": [{
            "name": "fieldproof",
            "orgId": 1,
            "folder": folder,
            "type": "file",
            "disableDeletion": True,
            "allowUiUpdates": False,
            "updateIntervalSeconds": 60,
            "options": {"path": FOLDER_PATH, "foldersFromFilesStructure": False},
        }],
    }


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

class _NoAliasDumper(yaml.SafeDumper):
    """Write shared dicts out in full: YAML anchors would only puzzle a reader."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


HEADER = "# Generated by dashboards/generate.py from {config}; do not edit by hand.\n"


def dashboards(cfg: Config) -> list[Json]:
    return [field_overview(), agronomy(), fleet_health(cfg.alerts), integrity(cfg.dashboards)]


def render_all(config_path: Path = DEFAULT_CONFIG) -> dict[str, str]:
    """Every generated file, relative to dashboards/, as text."""
    cfg = load_config(config_path)
    name = Path(config_path).name
    out: dict[str, str] = {}
    for d in dashboards(cfg):
        out[f"json/{d['uid']}.json"] = json.dumps(d, indent=2, ensure_ascii=False) + "\n"

    def dump(obj: Json) -> str:
        return HEADER.format(config=name) + yaml.dump(
            obj, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=100)

    out["provisioning/datasources/fieldproof-influxdb.yaml"] = dump(datasource_provisioning())
    out["provisioning/dashboards/fieldproof.yaml"] = dump(dashboard_provisioning(cfg.alerts.folder))
    out["provisioning/alerting/fieldproof-rules.yaml"] = dump(alert_provisioning(cfg))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    parser.add_argument("--check", action="store_true", help="fail if the files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for rel, text in render_all(args.config).items():
        path = HERE / rel
        if path.exists() and path.read_text() == text:
            continue
        stale.append(rel)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print("out of date (run dashboards/generate.py):", *stale, sep="\n  ", file=sys.stderr)
        return 1
    for rel in stale:
        print("wrote", rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
