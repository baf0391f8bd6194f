"""Grafana dashboards, provisioning and alert rules: generated files, structure, and every query
run against a real InfluxDB.

No Grafana server can run here (Grafana is not in the package registries this machine reaches),
so Grafana's side is checked offline: the JSON has the shape Grafana 11.6/12 reads for
schemaVersion 41 (required keys, known panel types, unit ids from Grafana's unit catalogue,
datasource references that resolve to the provisioned datasource, unique panel ids, a sane
grid), and the provisioning YAML has the structure Grafana's file provisioning expects. Then
every panel query and every alert query is taken out of the generated files, its Grafana
macros and template variables are substituted the way Grafana's InfluxQL datasource does it,
and it is executed against a real InfluxDB 1.6 (``fieldproof.services.InfluxDB``) filled with
points in the collector's schema: three simulated days of ``SimulatedSensor`` readings for
2 farms x 2 fields x 2 gateways (2 probes each), gateway status, collector statistics,
quarantine counts, anchoring state, and the derived series from ``AgronomyDeriver``. Each query
must return series, with the tags it groups by and values in the unit the panel declares.
The alert rules are also evaluated (reduce/threshold/math as Grafana's expressions do) at a
chosen instant and must fire exactly for the gateways, sensors and fields the data was built
to trip.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from collector.agronomy import AgronomyConfig, AgronomyDeriver
from collector.points import Point
from fieldproof.services import InfluxDB
from gateway.sensors.simulated import SimulatedConfig, SimulatedSensor

PROJECT = Path(__file__).resolve().parent.parent
DASHBOARDS = PROJECT / "dashboards"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fieldproof_dashboards_generate",
                                                  DASHBOARDS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = load_generator()
CONFIG = gen.load_config(gen.DEFAULT_CONFIG)


def generated_dashboards() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((DASHBOARDS / "json").glob("*.json"))]


def provisioning(kind: str) -> dict[str, Any]:
    files = sorted((DASHBOARDS / "provisioning" / kind).glob("*.yaml"))
    assert len(files) == 1, files
    data = yaml.safe_load(files[0].read_text())
    assert isinstance(data, dict)
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


# --------------------------------------------------------------------------------------------
# Generated files are current
# --------------------------------------------------------------------------------------------


def test_generated_files_are_up_to_date() -> None:
    rendered = gen.render_all(gen.DEFAULT_CONFIG)
    for rel, text in rendered.items():
        path = DASHBOARDS / rel
        assert path.exists(), f"{rel} missing: run python dashboards/generate.py"
        assert path.read_text() == text, f"{rel} is stale: run python dashboards/generate.py"
    on_disk = {str(p.relative_to(DASHBOARDS)) for p in DASHBOARDS.rglob("*")
               if p.is_file() and p.suffix in (".json", ".yaml")}
    assert on_disk == set(rendered), "files in dashboards/ the generator does not write"
    assert gen.main(["--check"]) == 0


def test_alert_thresholds_follow_the_config(tmp_path: Path) -> None:
    """Thresholds come from the TOML, per field: change the TOML, the rules change."""
    text = (DASHBOARDS / "fields.example.toml").read_text()
    changed = tmp_path / "fields.toml"
    changed.write_text(text.replace("refill_point = 0.22", "refill_point = 0.25"))
    rules_file = "provisioning/alerting/fieldproof-rules.yaml"
    before = yaml.safe_load(gen.render_all(gen.DEFAULT_CONFIG)[rules_file])
    after = yaml.safe_load(gen.render_all(changed)[rules_file])

    def dry_threshold(doc: dict[str, Any], title: str) -> float:
        rule = next(r for g in doc["groups"] for r in g["rules"] if r["title"] == title)
        cond = next(d for d in rule["data"] if d["refId"] == rule["condition"])
        return float(cond["model"]["conditions"][0]["evaluator"]["params"][0])

    assert dry_threshold(before, "Dry soil (valley/orchard-a)") == 0.22
    assert dry_threshold(after, "Dry soil (valley/orchard-a)") == 0.25
    assert dry_threshold(after, "Dry soil (other fields)") == CONFIG.agronomy.default.refill_point
    for entry in CONFIG.agronomy.fields:
        assert dry_threshold(before, f"Dry soil ({entry.farm}/{entry.field})") == entry.refill_point


# --------------------------------------------------------------------------------------------
# Dashboard JSON structure (Grafana 11.6 / 12, schemaVersion 41)
# --------------------------------------------------------------------------------------------

#: Panel plugins built into Grafana 11/12 that these dashboards may use.
CORE_PANEL_TYPES = {"row", "timeseries", "stat", "table", "state-timeline", "status-history",
                    "bargauge", "gauge", "barchart", "text"}
#: Unit ids from Grafana's catalogue (packages/grafana-data/src/valueFormats/categories.ts)
#: that a farm dashboard can need; "suffix:<text>" is Grafana's custom-unit syntax.
GRAFANA_UNITS = {"none", "short", "percent", "percentunit", "humidity", "celsius", "pressurekpa",
                 "pressurepa", "lux", "ppm", "lengthmm", "s", "m", "h", "d", "dtdurations",
                 "dateTimeFromNow", "dateTimeAsIso"}
UID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
DS_UID = gen.DATASOURCE_UID


def check_unit(unit: str) -> None:
    assert unit in GRAFANA_UNITS or (unit.startswith("suffix:") and len(unit) > 7), unit


@pytest.mark.parametrize("dashboard", generated_dashboards(), ids=lambda d: d["uid"])
def test_dashboard_structure(dashboard: dict[str, Any]) -> None:
    for key in ("uid", "title", "schemaVersion", "panels", "templating", "time", "annotations",
                "editable", "graphTooltip", "timezone", "version", "links", "tags"):
        assert key in dashboard, key
    assert dashboard["schemaVersion"] == 41
    assert UID.match(dashboard["uid"])
    assert set(dashboard["time"]) == {"from", "to"}
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: set[tuple[int, int]] = set()
    for panel in all_panels(dashboard):
        assert panel["type"] in CORE_PANEL_TYPES, panel["type"]
        assert panel["title"]
        g = panel["gridPos"]
        assert g["h"] > 0
        assert 0 < g["w"] <= 24
        assert 0 <= g["x"] < 24
        assert g["x"] + g["w"] <= 24
        assert g["y"] >= 0
        mine = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not mine & cells, f"panel {panel['title']!r} overlaps another"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "influxdb", "uid": DS_UID}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs
        assert len(refs) == len(set(refs))
        for t in panel["targets"]:
            assert t["datasource"] == {"type": "influxdb", "uid": DS_UID}
            assert t["rawQuery"] is True
            assert t["query"].startswith(("SELECT", "SHOW"))
            assert t["resultFormat"] in ("time_series", "table")
        fc = panel["fieldConfig"]
        check_unit(fc["defaults"]["unit"])
        for override in fc["overrides"]:
            for prop in override["properties"]:
                if prop["id"] == "unit":
                    check_unit(prop["value"])
        steps = fc["defaults"]["thresholds"]["steps"]
        assert steps[0]["value"] is None  # Grafana's base step is -Infinity (null in JSON)
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert len(names) >= 2
    assert names == ["farm", "field", "gateway", "sensor"][:len(names)]
    for v in dashboard["templating"]["list"]:
        assert v["type"] == "query"
        assert v["datasource"]["uid"] == DS_UID
        assert v["query"].startswith(f'SHOW TAG VALUES WITH KEY = "{v["name"]}"')
    used = set(re.findall(r"\$(farm|field|gateway|sensor)\b",
                          json.dumps([p.get("targets") for p in all_panels(dashboard)])))
    assert used <= set(names), f"queries use variables the dashboard lacks: {used - set(names)}"
    for link in dashboard["links"]:
        assert link["type"] in ("link", "dashboards")


def test_the_four_dashboards_exist() -> None:
    assert {d["uid"] for d in generated_dashboards()} == {
        "fieldproof-field-overview", "fieldproof-agronomy", "fieldproof-fleet-health",
        "fieldproof-integrity"}


def test_integrity_dashboard_links_to_the_evidence_export() -> None:
    (integrity,) = [d for d in generated_dashboards() if d["uid"] == "fieldproof-integrity"]
    urls = [link["url"] for link in integrity["links"] if link["type"] == "link"]
    urls += [lk["url"] for p in all_panels(integrity)
             for o in p.get("fieldConfig", {}).get("overrides", [])
             for prop in o["properties"] if prop["id"] == "links" for lk in prop["value"]]
    assert len(urls) == 2
    for url in urls:
        assert url.startswith(CONFIG.dashboards.collector_url + "/api/export?farm=")
        assert "&field=" in url
        assert "&from=${__from:date:iso}&to=${__to:date:iso}" in url


# --------------------------------------------------------------------------------------------
# Provisioning YAML
# --------------------------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    doc = provisioning("datasources")
    assert doc["apiVersion"] == 1
    (ds,) = doc["datasources"]
    for key in ("name", "type", "access", "url", "uid"):
        assert ds[key], key
    assert ds["uid"] == DS_UID
    assert ds["type"] == "influxdb"
    assert ds["access"] == "proxy"
    assert ds["jsonData"]["version"] == "InfluxQL"
    assert ds["jsonData"]["dbName"] == "${FIELDPROOF_INFLUX_DB}"
    assert ds["url"] == "${FIELDPROOF_INFLUX_URL}"
    assert ds["jsonData"]["httpMode"] in ("GET", "POST")


def test_dashboard_provider_provisioning() -> None:
    doc = provisioning("dashboards")
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")
    assert provider["folder"] == CONFIG.alerts.folder
    assert isinstance(provider["orgId"], int)


NO_DATA_STATES = {"NoData", "Alerting", "OK", "KeepLast"}
ERROR_STATES = {"Error", "Alerting", "OK", "KeepLast"}
DURATION = re.compile(r"^\d+[smhd]$")


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in provisioning("alerting")["groups"] for r in g["rules"]]


def test_alert_rule_provisioning_structure() -> None:
    doc = provisioning("alerting")
    assert doc["apiVersion"] == 1
    for group in doc["groups"]:
        assert isinstance(group["orgId"], int)
        assert group["name"]
        assert group["folder"]
        assert DURATION.match(group["interval"])
    rules = alert_rules()
    uids = [r["uid"] for r in rules]
    titles = [r["title"] for r in rules]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    for rule in rules:
        assert UID.match(rule["uid"]), rule["uid"]
        assert rule["noDataState"] in NO_DATA_STATES
        assert rule["execErrState"] in ERROR_STATES
        assert DURATION.match(rule["for"])
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        refs = {d["refId"] for d in rule["data"]}
        assert rule["condition"] in refs
        for d in rule["data"]:
            assert d["model"]["refId"] == d["refId"]
            if d["datasourceUid"] == "__expr__":
                model = d["model"]
                assert model["type"] in ("reduce", "threshold", "math")
                sources = ([model["expression"]] if model["type"] != "math"
                           else re.findall(r"\$([A-Z])", model["expression"]))
                assert set(sources) <= refs - {d["refId"]}
            else:
                assert d["datasourceUid"] == DS_UID
                assert d["relativeTimeRange"]["from"] > d["relativeTimeRange"]["to"] >= 0
                assert "$timeFilter" in d["model"]["query"]
                # dashboard variables do not exist when Grafana evaluates a rule
                assert not re.search(r"\$(farm|field|gateway|sensor)\b", d["model"]["query"])


def test_alert_rules_cover_the_issue() -> None:
    titles = " | ".join(r["title"] for r in alert_rules())
    for what in ("Dry soil", "Waterlogging", "Frost risk", "Heat stress", "Gateway silent",
                 "Sensor failing", "Anchoring stalled"):
        assert what in titles


# --------------------------------------------------------------------------------------------
# A real InfluxDB with three simulated days in the collector's schema
# --------------------------------------------------------------------------------------------

START = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp())
DAYS = 3
STEP = 300
END = START + DAYS * 86400
S = 10**9


@dataclass(frozen=True)
class Site:
    farm: str
    field: str
    mean_air: float
    gateways: tuple[str, ...]


SITES = (
    Site("valley", "orchard-a", 22.0, ("gw-va1", "gw-va2")),
    Site("valley", "orchard-b", 30.0, ("gw-vb1", "gw-vb2")),        # hot: heat stress by day
    Site("hillside", "vineyard-1", 5.0, ("gw-h11", "gw-h12")),      # cold: frost, chilling
    Site("hillside", "vineyard-2", 6.0, ("gw-h21", "gw-h22")),
)
OFFLINE_GATEWAY = "gw-vb2"          # its last status says offline
FAILING = ("gw-h21", "p10")         # this probe fails most of the time
STALLED_COLLECTOR = "c2"            # finality stops for the last 4 hours
DEPTHS = {"p10": "10", "p30": "30"}


@dataclass
class Data:
    db: InfluxDB
    raw_points: int
    derived_points: int


def write(db: InfluxDB, points: list[Point]) -> None:
    for i in range(0, len(points), 5000):
        body = "\n".join(p.to_line() for p in points[i:i + 5000])
        r = httpx.post(f"{db.url}/write", params={"db": "fieldproof", "precision": "ns"},
                       content=body, timeout=60)
        assert r.status_code == 204, r.text


def build_points(agro: AgronomyConfig) -> tuple[list[Point], int]:
    deriver = AgronomyDeriver(agro)
    points: list[Point] = []
    derived = 0
    seed = 0
    accepted_total = 0
    for site in SITES:
        for gw in site.gateways:
            sensors = []
            for name in DEPTHS:
                seed += 1
                fault = 0.8 if (gw, name) == FAILING else 0.03
                sensors.append(SimulatedSensor(SimulatedConfig(
                    name=name, seed=seed, mean_air_temperature=site.mean_air, fault_rate=fault)))
            tags = {"farm": site.farm, "field": site.field, "gateway": gw}
            seq = 0
            for t in range(START, END, STEP):
                seq += 1
                readings = [r for s in sensors for r in s.read(float(t))]
                for r in readings:
                    ptags = {**tags, "sensor": r.sensor, "unit": r.unit,
                             "depth_cm": DEPTHS[r.sensor]}
                    fields: dict[str, float | int | str | bool] = (
                        {"value": float(r.value), "seq": seq} if r.value is not None
                        else {"missing": r.missing_reason, "seq": seq})
                    points.append(Point(r.quantity, ptags, fields, t * S))
                out = deriver.derive(tags, readings,
                                     {name: {"depth_cm": d} for name, d in DEPTHS.items()})
                derived += len(out)
                points += out
                offline = gw == OFFLINE_GATEWAY and t >= END - 7200
                points.append(Point("gateway_status", tags, {
                    "online": 0 if offline else 1,
                    "uptime_s": t - START,
                    "spool_depth": (t // STEP) % 7 if not offline else 0,
                    "sensor_errors": sum(sum(s.errors.values()) for s in sensors),
                    "last_publish_age_s": float((t - (END - 7200)) if offline else 12),
                    "clock_ok": 1,
                    "version": "0.1.0",
                }, t * S))
            accepted_total += seq
    for ci, collector in enumerate(("c1", "c2")):
        for t in range(START, END, 60):
            k = (t - START) // 60
            log = 1000 + k * 4
            stalled = collector == STALLED_COLLECTOR and t >= END - 4 * 3600
            fin_t = END - 4 * 3600 if stalled else t
            points.append(Point("collector_stats", {"collector": collector}, {
                "accepted": k * 4, "duplicates": k // 50, "quarantined": k // 400,
                "gaps": k // 900, "lag_s": 0.4 + (k % 5) / 10, "backlog": k % 3,
            }, t * S))
            points.append(Point("anchor_state", {"collector": collector, "chain": "vechain"}, {
                "log_size": log,
                "anchored_size": max(0, log - 40),
                "finalized_size": max(0, 1000 + ((fin_t - START) // 60) * 4 - 80),
                "last_finalized_age_s": float(300 + (t - fin_t)),
                "pending": 2 if not stalled else 5,
            }, t * S))
            if k % 97 == ci:
                points.append(Point("quarantine", {"collector": collector,
                                                   "reason": ("bad_signature", "replay")[k % 2]},
                                    {"count": 1 + k % 3}, t * S))
    assert accepted_total > 0
    return points, derived


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Data]:
    db = InfluxDB(tmp_path_factory.mktemp("influx"))
    db.start()
    try:
        httpx.post(f"{db.url}/query", params={"q": "CREATE DATABASE fieldproof"}).raise_for_status()
        points, derived = build_points(CONFIG.agronomy)
        write(db, points)
        yield Data(db, len(points) - derived, derived)
    finally:
        db.stop()


# --------------------------------------------------------------------------------------------
# Grafana-style interpolation
# --------------------------------------------------------------------------------------------

_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]/])")


def regex_escape(value: str) -> str:
    """Grafana's influxSpecialRegexEscape for multi-value / include-all variables."""
    return _REGEX_SPECIAL.sub(r"\\\1", value)


def interpolate(query: str, selection: dict[str, list[str]], start: int, end: int,
                interval: str = "10m") -> str:
    """What Grafana's InfluxQL datasource sends for ``query`` (raw mode)."""
    q = query.replace("$timeFilter", f"time >= {start * 1000}ms and time <= {end * 1000}ms")
    q = q.replace("$__interval", interval)
    for name in ("sensor", "gateway", "field", "farm"):
        if f"${name}" in q:
            values = [regex_escape(v) for v in selection[name]]
            text = values[0] if len(values) == 1 else "(" + "|".join(values) + ")"
            q = q.replace(f"${name}", text)
    assert "$" not in q.replace("$/", ""), q
    return q


def variable_values(db: InfluxDB, dashboard: dict[str, Any],
                    pick: dict[str, str] | None) -> dict[str, list[str]]:
    """Run the chained variable queries; ``pick`` chooses one value per variable, else All."""
    selection: dict[str, list[str]] = {}
    for var in dashboard["templating"]["list"]:
        rows = db.query(interpolate(var["query"], selection, START, END))
        values = sorted({v[1] for s in rows for v in s["values"]})  # type: ignore[index, union-attr]
        assert values, f"variable {var['name']} has no values"
        if pick is None:
            selection[var["name"]] = values
        else:
            assert pick[var["name"]] in values, (var["name"], values)
            selection[var["name"]] = [pick[var["name"]]]
    return selection


def test_variables_list_what_was_written(data: Data) -> None:
    (overview,) = [d for d in generated_dashboards() if d["uid"] == "fieldproof-field-overview"]
    everything = variable_values(data.db, overview, None)
    assert everything["farm"] == ["hillside", "valley"]
    assert everything["field"] == sorted(s.field for s in SITES)
    assert everything["gateway"] == sorted(g for s in SITES for g in s.gateways)
    assert everything["sensor"] == ["p10", "p30"]
    one = variable_values(data.db, overview, {"farm": "hillside", "field": "vineyard-2",
                                              "gateway": "gw-h22", "sensor": "p30"})
    assert one["field"] == ["vineyard-2"]
    narrowed = data.db.query(interpolate(overview["templating"]["list"][2]["query"],
                                         {"farm": ["hillside"], "field": ["vineyard-2"]},
                                         START, END))
    assert {v[1] for s in narrowed for v in s["values"]} == {"gw-h21", "gw-h22"}  # type: ignore[index, union-attr]


# --------------------------------------------------------------------------------------------
# Every panel query against the data
# --------------------------------------------------------------------------------------------

#: What people read, per stored measurement: InfluxQL math and Grafana unit (independent of
#: the generator's own table, so a slip in either shows up).
DISPLAY = {
    "soil_moisture": (" * 100", "suffix:%VWC", (1.0, 100.0)),
    "soil_temperature": ("", "celsius", (-40.0, 60.0)),
    "air_temperature": ("", "celsius", (-40.0, 60.0)),
    "dew_point": ("", "celsius", (-60.0, 60.0)),
    "air_humidity": ("", "suffix:%RH", (0.0, 100.0)),
    "soil_ec": (" * 10", "suffix:dS/m", (0.3, 20.0)),
    "vapour_pressure_deficit": (" / 1000", "pressurekpa", (0.0, 8.0)),
    "growing_degree_days": ("", "suffix:°C·d", (0.0, 500.0)),
    "chilling_hours": ("", "h", (0.0, 500.0)),
}
#: The SenML unit the data carries for each of them (the schema contract).
SENML = {"soil_moisture": "/", "soil_temperature": "Cel", "air_temperature": "Cel",
         "dew_point": "Cel", "air_humidity": "%RH", "soil_ec": "S/m",
         "vapour_pressure_deficit": "Pa", "growing_degree_days": "Cel.d", "chilling_hours": "h",
         "soil_water_deficit": "/"}
PICK = {"farm": "hillside", "field": "vineyard-1", "gateway": "gw-h11", "sensor": "p10"}
PANEL_QUERIES = [
    (d, p, t) for d in generated_dashboards() for p in all_panels(d) if p["type"] != "row"
    for t in p["targets"]
]


def measurements_of(query: str) -> list[str]:
    inner = re.findall(r'FROM ((?:"[a-z_]+"(?:, )?)+)', query)
    return [m for group in inner for m in re.findall(r'"([a-z_]+)"', group)]


def group_tags(query: str) -> list[str]:
    clause = query.rsplit("GROUP BY", 1)[1] if "GROUP BY" in query else ""
    return re.findall(r'"([a-z_]+)"', clause)


def values_of(series: list[dict[str, Any]]) -> list[float]:
    return [v for s in series for row in s["values"] for v in row[1:] if isinstance(v, int | float)]


@pytest.mark.parametrize(("dashboard", "panel", "target"), PANEL_QUERIES,
                         ids=[f"{d['uid']}:{p['title']}:{t['refId']}" for d, p, t in PANEL_QUERIES])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_panel_query_returns_the_expected_series(data: Data, dashboard: dict[str, Any],
                                                 panel: dict[str, Any], target: dict[str, Any],
                                                 mode: str) -> None:
    pick = None if mode == "all" else {k: v for k, v in PICK.items()
                                       if k in [x["name"] for x in dashboard["templating"]["list"]]}
    selection = variable_values(data.db, dashboard, pick)
    query = interpolate(target["query"], selection, START, END)
    series = data.db.query(query)
    assert series, f"no series for {query}"
    keys = group_tags(target["query"])
    for s in series:
        tags = s.get("tags", {})
        assert set(keys) <= set(tags), (keys, tags)
        for var in ("farm", "field", "gateway", "sensor"):
            if pick and var in pick and var in tags and f"${var}" in target["query"]:
                assert tags[var] == pick[var], (var, tags)
        if "depth_cm" in keys:
            assert tags["depth_cm"] in DEPTHS.values()
    values = values_of(series)
    assert values, "series without numbers"
    # the unit the panel declares is the unit the numbers are in
    for m in measurements_of(target["query"]):
        if m in SENML:
            rows = data.db.query(f'SHOW TAG VALUES FROM "{m}" WITH KEY = "unit"')
            assert {v[1] for r in rows for v in r["values"]} == {SENML[m]}, m  # type: ignore[index, union-attr]
    ms = measurements_of(target["query"])
    selects_value = re.match(r'SELECT (mean|max|min|last)?\(?"value"\)?', target["query"])
    if len(ms) == 1 and ms[0] in DISPLAY and (selects_value or "cumulative_sum" in target["query"]):
        math, unit, (lo, hi) = DISPLAY[ms[0]]
        declared = panel["fieldConfig"]["defaults"]["unit"]
        if panel["type"] == "table":
            title = gen.QUANTITIES[ms[0]].title
            declared = next(p["value"] for o in panel["fieldConfig"]["overrides"]
                            if o["matcher"]["options"] == title for p in o["properties"]
                            if p["id"] == "unit")
        assert declared == unit, (panel["title"], declared)
        assert f'"value"){math} ' in target["query"] or not math
        if "cumulative_sum" not in target["query"]:
            assert all(lo <= v <= hi for v in values), (panel["title"], min(values), max(values))


def test_latest_table_reports_sample_times(data: Data) -> None:
    """The 'age' column must be the reading's own time, not the start of the range."""
    (overview,) = [d for d in generated_dashboards() if d["uid"] == "fieldproof-field-overview"]
    panel = next(p for p in all_panels(overview) if p["title"] == "Latest value per sensor")
    selection = variable_values(data.db, overview, None)
    for t in panel["targets"]:
        series = data.db.query(interpolate(t["query"], selection, START, END))
        for s in series:
            for row in s["values"]:
                assert START * S < row[0] < END * S
                assert (row[0] // S - START) % STEP == 0


def test_integrity_coverage_is_a_share_and_sees_the_stall(data: Data) -> None:
    (integrity,) = [d for d in generated_dashboards() if d["uid"] == "fieldproof-integrity"]
    panel = next(p for p in all_panels(integrity) if p["title"].startswith("Share of"))
    selection = variable_values(data.db, integrity, None)
    series = data.db.query(interpolate(panel["targets"][0]["query"], selection, END - 86400, END))
    cover = {s["tags"]["collector"]: values_of([s])[0] for s in series}  # type: ignore[index]
    assert set(cover) == {"c1", "c2"}
    assert 0.9 < cover["c1"] <= 1.0
    assert 0.0 <= cover["c2"] < cover["c1"] - 0.1


# --------------------------------------------------------------------------------------------
# Alert rules: every query runs; the rules fire where the data says they must
# --------------------------------------------------------------------------------------------

ALERT_QUERIES = [(r, d) for r in alert_rules() for d in r["data"] if d["datasourceUid"] == DS_UID]


@pytest.mark.parametrize(("rule", "item"), ALERT_QUERIES,
                         ids=[f"{r['title']}:{d['refId']}" for r, d in ALERT_QUERIES])
def test_alert_query_returns_labelled_series(data: Data, rule: dict[str, Any],
                                             item: dict[str, Any]) -> None:
    window = item["relativeTimeRange"]["from"]
    query = interpolate(item["model"]["query"], {}, END - window, END)
    series = data.db.query(query)
    assert series, f"{rule['title']}: no series for {query}"
    keys = group_tags(item["model"]["query"])
    assert keys, "an alert without GROUP BY tags would be one instance for every field"
    for s in series:
        assert set(keys) <= set(s["tags"])  # type: ignore[arg-type]


Labels = tuple[tuple[str, str], ...]


def evaluate(db: InfluxDB, rule: dict[str, Any], now: int) -> dict[Labels, bool]:
    """Grafana's server-side expressions, for the kinds the generator writes: a datasource
    query per label set, reduce (last/min/max/mean with dropNN or replaceNN), threshold
    (gt/lt), and math on reduced values with comparisons joined by ||."""
    results: dict[str, dict[Labels, float | list[float | None] | None]] = {}
    for d in rule["data"]:
        model = d["model"]
        if d["datasourceUid"] == DS_UID:
            window = d["relativeTimeRange"]["from"]
            rows = db.query(interpolate(model["query"], {}, now - window, now))
            results[d["refId"]] = {
                tuple(sorted(s["tags"].items())): [r[1] for r in s["values"]]  # type: ignore[union-attr, index]
                for s in rows
            }
        elif model["type"] == "reduce":
            settings = model["settings"]
            out: dict[Labels, float | list[float | None] | None] = {}
            for labels, vals in results[model["expression"]].items():
                assert isinstance(vals, list)
                if settings["mode"] == "replaceNN":
                    nums = [settings["replaceWithValue"] if v is None else v for v in vals]
                else:
                    nums = [v for v in vals if v is not None]
                fn = {"last": lambda xs: xs[-1], "max": max, "min": min,
                      "mean": lambda xs: sum(xs) / len(xs)}[model["reducer"]]
                out[labels] = float(fn(nums)) if nums else None
            results[d["refId"]] = out
        elif model["type"] == "threshold":
            ev = model["conditions"][0]["evaluator"]
            limit = ev["params"][0]
            results[d["refId"]] = {
                labels: (None if v is None
                         else float(v > limit if ev["type"] == "gt" else v < limit))
                for labels, v in results[model["expression"]].items()
                if not isinstance(v, list)
            }
        else:
            terms = re.fullmatch(r"(\$[A-Z] [<>] [\d.]+)( \|\| \$[A-Z] [<>] [\d.]+)*",
                                 model["expression"])
            assert terms, model["expression"]
            refs = re.findall(r"\$([A-Z])", model["expression"])
            labelsets = set.intersection(*(set(results[r]) for r in refs))
            out = {}
            for labels in labelsets:
                env = {r: results[r][labels] for r in refs}
                expr = model["expression"].replace("||", " or ")
                for r in refs:
                    expr = expr.replace(f"${r}", repr(env[r]))
                out[labels] = float(eval(expr, {"__builtins__": {}}))
            results[d["refId"]] = out
    final = results[rule["condition"]]
    return {labels: bool(v) for labels, v in final.items() if not isinstance(v, list)}


def firing(db: InfluxDB, title: str, now: int, key: str) -> set[str]:
    rules = [r for r in alert_rules() if r["title"].startswith(title)]
    assert rules, title
    out: set[str] = set()
    for rule in rules:
        for labels, fires in evaluate(db, rule, now).items():
            if fires:
                out.add(dict(labels)[key])
    return out


def test_gateway_silent_fires_for_the_offline_gateway_only(data: Data) -> None:
    assert firing(data.db, "Gateway silent", END, "gateway") == {OFFLINE_GATEWAY}
    assert firing(data.db, "Gateway silent", END - 3 * 3600, "gateway") == set()


def test_frost_risk_fires_on_the_cold_farm_at_night(data: Data) -> None:
    night = END - 3600  # 23:00 UTC: the simulated cold fields are near 1 °C
    assert firing(data.db, "Frost risk", night, "farm") == {"hillside"}
    assert firing(data.db, "Frost risk", END - 9 * 3600, "farm") == set()  # 15:00


def test_heat_stress_fires_on_the_hot_field_in_the_afternoon(data: Data) -> None:
    afternoon = END - 9 * 3600 + 1800
    assert firing(data.db, "Heat stress", afternoon, "field") == {"orchard-b"}
    assert firing(data.db, "Heat stress", END, "field") == set()


def test_sensor_failing_fires_for_the_failing_probe_only(data: Data) -> None:
    fired = set()
    for rule in alert_rules():
        if rule["title"].startswith("Sensor failing"):
            fired |= {(dict(lb)["gateway"], dict(lb)["sensor"])
                      for lb, f in evaluate(data.db, rule, END).items() if f}
    assert fired == {FAILING}


def test_anchoring_stalled_fires_for_the_stalled_collector(data: Data) -> None:
    assert firing(data.db, "Anchoring stalled", END, "collector") == {STALLED_COLLECTOR}
    assert firing(data.db, "Anchoring stalled", END - 5 * 3600, "collector") == set()


def test_dry_soil_uses_each_fields_refill_point(data: Data) -> None:
    """orchard-a's refill point (0.22) sits above the simulated trough (about 0.20), the
    default (0.18) below it: only orchard-a can be dry, and at some hour it is."""
    fired: set[str] = set()
    for hour in range(0, DAYS * 24, 3):
        fired |= firing(data.db, "Dry soil", START + 3600 + hour * 3600, "field")
    assert fired == {"orchard-a"}


def test_data_volume(data: Data) -> None:
    """Sanity of the fixture itself: 8 gateways x 2 probes x 5 quantities x 3 days of 5-min
    samples, plus the derived series."""
    assert data.raw_points > 8 * 2 * 5 * DAYS * 288
    assert data.derived_points > 8 * 2 * DAYS * 288
    with (DASHBOARDS / "fields.example.toml").open("rb") as fh:
        assert "agronomy" in tomllib.load(fh)
