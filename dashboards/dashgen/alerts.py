"""Alert rules (Grafana unified alerting file provisioning): agronomic rules per field from
``[agronomy]``, fleet rules from ``[alerts]``."""

# The generator's job is to write InfluxQL text; tag values from the TOML go through _lit().
# ruff: noqa: S608

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from collector.agronomy import AgronomyConfig, FieldAgronomy

from .common import (
    DATASOURCE,
    DATASOURCE_UID,
    Json,
)
from .queries import group_by
from .settings import AlertsConfig, Config, seconds


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
