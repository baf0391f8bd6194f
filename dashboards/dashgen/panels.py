"""Panels, their layout, template variables and the dashboard frame around them."""

# The generator's job is to write InfluxQL text; tag values from the TOML go through _lit().

from __future__ import annotations

from typing import Any

from .common import (
    DATASOURCE,
    SCHEMA_VERSION,
    Json,
)
from .queries import VAR_FILTERS


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
