"""Grafana dashboards, provisioning and alert rules: generated files, structure, and every query
run against a real InfluxDB filled by a demo run.

No Grafana server can run here (Grafana is not in the package registries this machine reaches),
so Grafana's side is checked offline: the JSON has the shape Grafana 11.6/12 reads for
schemaVersion 41 (required keys, known panel types, unit ids from Grafana's unit catalogue,
datasource references that resolve to the provisioned datasource, unique panel ids, a sane
grid), and the provisioning YAML has the structure Grafana's file provisioning expects. Then
every panel query and every alert query is taken out of the generated files, its Grafana
macros and template variables are substituted the way Grafana's InfluxQL datasource does it,
and it is executed against a real InfluxDB, twice: Debian's 1.6 (``fieldproof.services.InfluxDB``)
filled through the v1 ``/write``, and 1.8 (``InfluxDB18``, built by scripts/peers) filled through
its v2 ``/api/v2/write`` — the same InfluxQL must answer the same on both. On both, the
exported evidence is also compared with the database as ``verify --against-influx`` does.

That InfluxDB is filled by the real pipeline (``tests/support/stack.py``). 2 farms x 2 fields x 2
gateways, each with its own key, config and spool as the demo writes them and two simulated
probes (registered with their depths, 10 and 30 cm, as ``depth_cm``), record three simulated
days of 5-minute rounds through the gateway agent's own sampler with its clock injected (the
days take a second). Then ``fieldproof gateway run`` processes drain those signed messages
through Mosquitto to a ``fieldproof collector run`` process, which verifies them and writes the
readings and the agronomy series it derives with the ``[agronomy]`` settings of the same TOML
the alert rules are generated from. Only what such a short run cannot produce is written
directly, in the collector's schema (see :func:`synthetic_points`): the gateway-status history
with a gateway gone silent, collector statistics, quarantine counts, and anchoring state with
a stalled collector.

Each query must return series, with the tags it groups by and values in the unit the panel
declares. The alert rules are also evaluated (reduce/threshold/math as Grafana's expressions
do) at a chosen instant and must fire exactly for the gateways, sensors and fields the
simulated farm was built to trip: frost at night on the cold farm, heat in the afternoon on
the hot field, dry soil against each field's refill point, the failing probe, the silent
gateway and the stalled collector.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict

import httpx
import pytest
import yaml

from collector.agronomy import DERIVED_MEASUREMENTS
from collector.agronomy_hook import load_agronomy_config
from collector.cli_common import open_registry
from collector.points import Point
from demo import READING_MEASUREMENTS, DemoGateway, write_collector_config
from fieldproof import __version__
from fieldproof.config import load_collector_config
from fieldproof.keys import load_key_file
from fieldproof.services import InfluxDB, InfluxDB18, Mosquitto, PeerMissing
from fieldproof.wire import public_key_bytes
from gateway.agent import GatewayAgent
from gateway.config import GatewayConfig, load_gateway_config
from gateway.sensors.simulated import SimulatedSensor
from tests.support.stack import Stack, make_stack

PROJECT = Path(__file__).resolve().parents[2]
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
# A real InfluxDB filled by a demo run: gateways → Mosquitto → collector → InfluxDB
# --------------------------------------------------------------------------------------------

START = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp())
DAYS = 3
STEP = 300                  # the gateways' sampling interval (interval_s)
ROUNDS_PER_MESSAGE = 3      # rounds signed together: one message per gateway and quarter hour
END = START + DAYS * 86400
STEPS = DAYS * 86400 // STEP
S = 10**9


@dataclass(frozen=True)
class Site:
    farm: str
    field: str
    mean_air: float
    #: the names the tests use; a real gateway id is derived from its generated key
    gateways: tuple[str, ...]


SITES = (
    Site("valley", "orchard-a", 22.0, ("gw-va1", "gw-va2")),
    Site("valley", "orchard-b", 30.0, ("gw-vb1", "gw-vb2")),        # hot: heat stress by day
    Site("hillside", "vineyard-1", 5.0, ("gw-h11", "gw-h12")),      # cold: frost, chilling
    Site("hillside", "vineyard-2", 6.0, ("gw-h21", "gw-h22")),
)
OFFLINE_GATEWAY = "gw-vb2"          # its last status says offline
FAILING = ("gw-h21", "p10")         # this probe fails most of the time
FAULT_RATE = 0.03                   # every other probe's occasional missing reading
FAILING_FAULT_RATE = 0.8
STALLED_COLLECTOR = "c2"            # finality stops for the last 4 hours
DEPTHS = {"p10": "10", "p30": "30"}


@dataclass
class Data:
    db: InfluxDB
    #: test name (SITES) → the gateway id the pipeline tagged its points with
    ids: dict[str, str]
    collector_config: Path
    #: readings (values and signed gaps) stored with sample times in the simulated days
    raw_points: int
    #: agronomy points the collector derived from them
    derived_points: int

    def gw(self, name: str) -> str:
        return self.ids[name]


class SimulatedClock:
    """The gateway agent's clock, stepped through the simulated days by the test."""

    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


def add_gateway(stack: Stack, site: Site, name: str, seeds: Iterator[int]) -> DemoGateway:
    """A gateway of ``site``: the demo's gateway (own key, spool, MQTT and confirm settings)
    with its one simulated station replaced by two simulated probes, registered on the
    collector with the probes' depths as per-sensor tags."""
    g = stack.add_gateway(interval=STEP, farm=site.farm, field_=site.field, register=False)
    probes = "".join(
        f'\n[[sensors]]\nkind = "simulated"\nname = "{probe}"\nseed = {next(seeds)}\n'
        f"mean_air_temperature = {site.mean_air}\n"
        f"fault_rate = {FAILING_FAULT_RATE if (name, probe) == FAILING else FAULT_RATE}\n"
        for probe in DEPTHS
    )
    demo_config = g.config_path.read_text()
    # a top-level key must come before the first table, so it goes first
    g.config_path.write_text(f"rounds_per_message = {ROUNDS_PER_MESSAGE}\n"
                             + demo_config.split("[[sensors]]")[0] + probes)
    config = load_gateway_config(g.config_path)
    assert [s.name for s in config.sensors] == list(DEPTHS)
    assert (config.farm, config.field) == (site.farm, site.field)
    assert (config.interval_s, config.rounds_per_message) == (STEP, ROUNDS_PER_MESSAGE)
    registry = open_registry(load_collector_config(stack.collector_config))
    try:
        registry.add(g.gateway_id, public_key_bytes(load_key_file(config.key_file)),
                     site.farm, site.field,
                     sensor_meta={probe: {"depth_cm": depth} for probe, depth in DEPTHS.items()})
    finally:
        registry.db.close()
    return g


def sample_simulated_days(config: GatewayConfig) -> list[int]:
    """The gateway agent's own sampler over the simulated days, its clock injected: each round
    is read from the configured sensors, signed with the gateway's key and committed to its
    spool exactly as ``fieldproof gateway run`` does, only not in real time (three days of
    5-minute rounds in a second). Returns the agent's sensor-error total after every round,
    the number its status message reports."""
    clock = SimulatedClock()
    agent = GatewayAgent(config, clock=clock)
    errors: list[int] = []
    try:
        for t in range(START, END, STEP):
            clock.now = float(t)
            agent.sample_once()
            errors.append(sum(sum(s.errors.values()) for s in agent.sensors))
        assert agent.spool.depth == STEPS // ROUNDS_PER_MESSAGE
    finally:
        agent.shutdown(drain_timeout=0)
    return errors


def demo_run(stack: Stack) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Fill InfluxDB through the real pipeline. Every gateway records the simulated days into
    its spool (:func:`sample_simulated_days`); then the collector process (agronomy settings
    from ``fields_file``: the TOML the alert rules are generated from) and the gateway
    processes (``fieldproof gateway run``) start, the gateways drain their spools through
    Mosquitto, and the collector verifies every message and writes the readings plus the
    series it derives to InfluxDB. Returns the gateway ids and each gateway's sensor-error
    totals per round."""
    fields_file = stack.workdir / "fields.toml"
    fields_file.write_text(gen.DEFAULT_CONFIG.read_text())
    collector_config = stack.collector_config
    # a top-level key, so it goes before the demo config's tables
    collector_config.write_text(f'fields_file = "{fields_file}"\n' + collector_config.read_text())
    assert load_agronomy_config(load_collector_config(collector_config)) == CONFIG.agronomy
    seeds = itertools.count(1)
    ids: dict[str, str] = {}
    errors: dict[str, list[int]] = {}
    for site in SITES:
        for name in site.gateways:
            g = add_gateway(stack, site, name, seeds)
            ids[name] = g.gateway_id
            errors[name] = sample_simulated_days(load_gateway_config(g.config_path))
    stack.start_collector()
    for g in stack.gateways:
        stack.start_gateway(g)
    stack.wait_holds_spooled(180)  # logs: stack.logs
    stack.stop_gateways()
    assert stack.still_spooled() == 0  # stopped gateways delete what was receipted
    stack.wait_caught_up()
    # as tests/integration/test_pipeline.py: every acknowledged reading is in InfluxDB, accepted
    # once
    published = stack.published()
    stored = stack.stored()
    assert sum(published.values()) > 0
    for gw, n in published.items():
        assert stored.get(gw, 0) == n, f"{gw}: published {n}, InfluxDB has {stored.get(gw, 0)}"
    store = stack.store()
    try:
        assert store.accepted_count()[1] == sum(published.values())
        assert store.gaps() == []
    finally:
        store.db.close()
    stack.stop_collector()
    stack.broker.stop()
    return ids, errors


def synthetic_points(ids: dict[str, str], errors: dict[str, list[int]]) -> list[Point]:
    """What a short run cannot produce honestly, written straight to InfluxDB. The collector
    stamps ``gateway_status``, ``collector_stats`` and ``quarantine`` with its own wall-clock
    time, not the simulated days, and a gateway silent for the last two hours or three days of
    statistics would take that long; ``anchor_state`` (two collector logs, one whose finality
    stalls four hours before the end) is written by no fieldproof process yet. Field names and
    types are those of ``Collector.stats_points``; ``sensor_errors`` is the gateway agent's own
    counter after each simulated round."""
    site_of = {name: site for site in SITES for name in site.gateways}
    points: list[Point] = []
    for name, gw in ids.items():
        site = site_of[name]
        tags = {"farm": site.farm, "field": site.field, "gateway": gw}
        for i, t in enumerate(range(START, END, STEP)):
            offline = name == OFFLINE_GATEWAY and t >= END - 7200
            points.append(Point("gateway_status", tags, {
                "online": 0 if offline else 1,
                "uptime_s": float(t - START),
                "spool_depth": (t // STEP) % 7 if not offline else 0,
                "sensor_errors": errors[name][i],
                "last_publish_age_s": float((t - (END - 7200)) if offline else 12),
                "version": __version__,
            }, t * S))
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
    return points


def write(db: InfluxDB, points: list[Point]) -> None:
    for i in range(0, len(points), 5000):
        body = "\n".join(p.to_line() for p in points[i:i + 5000])
        r = httpx.post(f"{db.url}/write", params={"db": "fieldproof", "precision": "ns"},
                       content=body, timeout=60)
        assert r.status_code == 204, r.text


class Series(TypedDict):
    """One InfluxQL result series as these tests read it (InfluxDB 1.x JSON)."""

    tags: dict[str, str]
    values: list[list[Any]]  # rows: epoch ns, then the selected columns (numbers, text, null)


def series_of(db: InfluxDB, q: str) -> list[Series]:
    """``db.query`` with its JSON checked once, here, instead of at every use."""
    out: list[Series] = []
    for s in db.query(q):
        tags, values = s.get("tags", {}), s["values"]
        assert isinstance(tags, dict) and isinstance(values, list), s
        out.append(Series(tags=tags, values=values))
    return out


def count_points(db: InfluxDB, measurements: Iterable[str], field: str, start: int) -> int:
    """Points of ``measurements`` with ``field`` and a time in [start, END)."""
    names = ", ".join(f'"{m}"' for m in sorted(measurements))
    rows = series_of(db, f'SELECT count("{field}") FROM {names} '
                    f"WHERE time >= {start * 1000}ms AND time < {END * 1000}ms")
    total = 0
    for series in rows:
        values = series["values"]
        assert isinstance(values, list)
        total += int(values[0][1])
    return total


#: The InfluxDB lines the dashboards are checked against: Debian's 1.6 written through the v1
#: ``/write``, and 1.8 (built by scripts/peers) written through its v2 ``/api/v2/write``.
SERVERS = ["influxdb-1.6-v1", "influxdb-1.8-v2"]


def make_server_stack(server: str, workdir: Path) -> Stack:
    if server == "influxdb-1.6-v1":
        return make_stack(workdir)
    broker = Mosquitto(workdir / "mosquitto")
    try:
        influx = InfluxDB18(workdir / "influxdb")
    except PeerMissing as exc:
        pytest.fail(str(exc), pytrace=False)  # fail, never skip: scripts/test builds the peers
    broker.start()
    influx.start()
    stack = Stack(workdir, broker, influx)
    # the same collector config, writing through the v2 API (bucket = the database)
    write_collector_config(workdir, "127.0.0.1", broker.port, influx.url, stack.database,
                           influx_api="v2")
    return stack


@pytest.fixture(scope="module", params=SERVERS)
def data(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[Data]:
    stack = make_server_stack(request.param, tmp_path_factory.mktemp("stack"))
    try:
        ids, errors = demo_run(stack)
        write(stack.influx, synthetic_points(ids, errors))
        # the daily series are stamped at the farm's local midnight, before START on day one
        derived = count_points(stack.influx, DERIVED_MEASUREMENTS, "value", START - 86400)
        yield Data(stack.influx, ids, stack.collector_config,
                   count_points(stack.influx, READING_MEASUREMENTS, "seq", START), derived)
    finally:
        stack.shutdown()
        stack.broker.stop()
        stack.influx.stop()


@pytest.mark.integration
def test_the_collector_wrote_through_the_api_under_test(data: Data) -> None:
    cfg = load_collector_config(data.collector_config)
    assert cfg.influx.api == ("v2" if isinstance(data.db, InfluxDB18) else "v1")
    assert cfg.influx.url == data.db.url


@pytest.mark.integration
@pytest.mark.parametrize("farm", sorted({s.farm for s in SITES}))
def test_verify_against_influx_finds_every_reading(data: Data, farm: str) -> None:
    """What ``fieldproof verify --against-influx`` does, on each server: the farm's exported
    evidence and the database hold exactly the same reading points (the derived and synthetic
    series are not readings and are left out by the comparison)."""
    from anchor.evidence import EvidenceLog
    from collector.export import export_bundle
    from fieldproof.datadir import open_db
    from inspector.verify import check_against_influx, verify_bundle

    cfg = load_collector_config(data.collector_config)
    db = open_db(cfg.db_path)
    try:
        vkey = EvidenceLog.open(db, cfg.log_origin, cfg.log_key_file).verifier().vkey
    finally:
        db.close()
    bundle = export_bundle(cfg, farm=farm, field=None, gateway=None, start=START - 1,
                           end=END + 1)
    result = verify_bundle(bundle, nodes=[], chain=None, offline=True, log_key=vkey)
    cmp = check_against_influx(result, data.db.url, "fieldproof")
    assert cmp.error is None, cmp.error
    farm_gateways = sum(len(s.gateways) for s in SITES if s.farm == farm)
    assert cmp.evidence_points == farm_gateways * len(DEPTHS) * len(READING_MEASUREMENTS) * STEPS
    assert cmp.matched == cmp.evidence_points == cmp.database_points
    assert (cmp.changed, cmp.added, cmp.deleted) == (0, 0, 0)


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
        rows = series_of(db, interpolate(var["query"], selection, START, END))
        values = sorted({v[1] for s in rows for v in s["values"]})
        assert values, f"variable {var['name']} has no values"
        if pick is None:
            selection[var["name"]] = values
        else:
            assert pick[var["name"]] in values, (var["name"], values)
            selection[var["name"]] = [pick[var["name"]]]
    return selection


@pytest.mark.integration
def test_variables_list_what_was_written(data: Data) -> None:
    (overview,) = [d for d in generated_dashboards() if d["uid"] == "fieldproof-field-overview"]
    everything = variable_values(data.db, overview, None)
    assert everything["farm"] == ["hillside", "valley"]
    assert everything["field"] == sorted(s.field for s in SITES)
    assert everything["gateway"] == sorted(data.gw(g) for s in SITES for g in s.gateways)
    assert everything["sensor"] == ["p10", "p30"]
    one = variable_values(data.db, overview, {"farm": "hillside", "field": "vineyard-2",
                                              "gateway": data.gw("gw-h22"), "sensor": "p30"})
    assert one["field"] == ["vineyard-2"]
    narrowed = series_of(data.db, interpolate(overview["templating"]["list"][2]["query"],
                                         {"farm": ["hillside"], "field": ["vineyard-2"]},
                                         START, END))
    assert {v[1] for s in narrowed for v in s["values"]} == {data.gw("gw-h21"), data.gw("gw-h22")}


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


def values_of(series: list[Series]) -> list[float]:
    return [v for s in series for row in s["values"] for v in row[1:] if isinstance(v, int | float)]


@pytest.mark.integration
@pytest.mark.parametrize(("dashboard", "panel", "target"), PANEL_QUERIES,
                         ids=[f"{d['uid']}:{p['title']}:{t['refId']}" for d, p, t in PANEL_QUERIES])
@pytest.mark.parametrize("mode", ["all", "one"])
def test_panel_query_returns_the_expected_series(data: Data, dashboard: dict[str, Any],
                                                 panel: dict[str, Any], target: dict[str, Any],
                                                 mode: str) -> None:
    pick = None if mode == "all" else {
        k: data.gw(v) if k == "gateway" else v for k, v in PICK.items()
        if k in [x["name"] for x in dashboard["templating"]["list"]]}
    selection = variable_values(data.db, dashboard, pick)
    query = interpolate(target["query"], selection, START, END)
    series = series_of(data.db, query)
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
            rows = series_of(data.db, f'SHOW TAG VALUES FROM "{m}" WITH KEY = "unit"')
            assert {v[1] for r in rows for v in r["values"]} == {SENML[m]}, m
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


@pytest.mark.integration
def test_latest_table_reports_sample_times(data: Data) -> None:
    """The 'age' column must be the reading's own time, not the start of the range."""
    (overview,) = [d for d in generated_dashboards() if d["uid"] == "fieldproof-field-overview"]
    panel = next(p for p in all_panels(overview) if p["title"] == "Latest value per sensor")
    selection = variable_values(data.db, overview, None)
    for t in panel["targets"]:
        series = series_of(data.db, interpolate(t["query"], selection, START, END))
        for s in series:
            for row in s["values"]:
                assert START * S < row[0] < END * S
                assert (row[0] // S - START) % STEP == 0


@pytest.mark.integration
def test_integrity_coverage_is_a_share_and_sees_the_stall(data: Data) -> None:
    (integrity,) = [d for d in generated_dashboards() if d["uid"] == "fieldproof-integrity"]
    panel = next(p for p in all_panels(integrity) if p["title"].startswith("Share of"))
    selection = variable_values(data.db, integrity, None)
    query = interpolate(panel["targets"][0]["query"], selection, END - 86400, END)
    series = series_of(data.db, query)
    cover = {s["tags"]["collector"]: values_of([s])[0] for s in series}
    assert set(cover) == {"c1", "c2"}
    assert 0.9 < cover["c1"] <= 1.0
    assert 0.0 <= cover["c2"] < cover["c1"] - 0.1


# --------------------------------------------------------------------------------------------
# Alert rules: every query runs; the rules fire where the data says they must
# --------------------------------------------------------------------------------------------

ALERT_QUERIES = [(r, d) for r in alert_rules() for d in r["data"] if d["datasourceUid"] == DS_UID]


@pytest.mark.integration
@pytest.mark.parametrize(("rule", "item"), ALERT_QUERIES,
                         ids=[f"{r['title']}:{d['refId']}" for r, d in ALERT_QUERIES])
def test_alert_query_returns_labelled_series(data: Data, rule: dict[str, Any],
                                             item: dict[str, Any]) -> None:
    window = item["relativeTimeRange"]["from"]
    query = interpolate(item["model"]["query"], {}, END - window, END)
    series = series_of(data.db, query)
    assert series, f"{rule['title']}: no series for {query}"
    keys = group_tags(item["model"]["query"])
    assert keys, "an alert without GROUP BY tags would be one instance for every field"
    for s in series:
        assert set(keys) <= set(s["tags"])


Labels = tuple[tuple[str, str], ...]

#: Grafana's reduce expressions, by reducer name.
REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "last": lambda xs: xs[-1], "max": max, "min": min, "mean": lambda xs: sum(xs) / len(xs),
}


def evaluate(db: InfluxDB, rule: dict[str, Any], now: int) -> dict[Labels, bool]:
    """Grafana's server-side expressions, for the kinds the generator writes: a datasource
    query per label set, reduce (last/min/max/mean with dropNN or replaceNN), threshold
    (gt/lt), and math on reduced values with comparisons joined by ||."""
    results: dict[str, dict[Labels, float | list[float | None] | None]] = {}
    for d in rule["data"]:
        model = d["model"]
        if d["datasourceUid"] == DS_UID:
            window = d["relativeTimeRange"]["from"]
            rows = series_of(db, interpolate(model["query"], {}, now - window, now))
            results[d["refId"]] = {
                tuple(sorted(s["tags"].items())): [r[1] for r in s["values"]]
                for s in rows
            }
        elif model["type"] == "reduce":
            settings = model["settings"]
            out: dict[Labels, float | list[float | None] | None] = {}
            for labels, vals in results[model["expression"]].items():
                assert isinstance(vals, list)
                nums: list[float]
                if settings["mode"] == "replaceNN":
                    nums = [settings["replaceWithValue"] if v is None else v for v in vals]
                else:
                    nums = [v for v in vals if v is not None]
                out[labels] = float(REDUCERS[model["reducer"]](nums)) if nums else None
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


@pytest.mark.integration
def test_gateway_silent_fires_for_the_offline_gateway_only(data: Data) -> None:
    assert firing(data.db, "Gateway silent", END, "gateway") == {data.gw(OFFLINE_GATEWAY)}
    assert firing(data.db, "Gateway silent", END - 3 * 3600, "gateway") == set()


@pytest.mark.integration
def test_frost_risk_fires_on_the_cold_farm_at_night(data: Data) -> None:
    night = END - 3600  # 23:00 UTC: the simulated cold fields are near 1 °C
    assert firing(data.db, "Frost risk", night, "farm") == {"hillside"}
    assert firing(data.db, "Frost risk", END - 9 * 3600, "farm") == set()  # 15:00


@pytest.mark.integration
def test_heat_stress_fires_on_the_hot_field_in_the_afternoon(data: Data) -> None:
    afternoon = END - 9 * 3600 + 1800
    assert firing(data.db, "Heat stress", afternoon, "field") == {"orchard-b"}
    assert firing(data.db, "Heat stress", END, "field") == set()


@pytest.mark.integration
def test_sensor_failing_fires_for_the_failing_probe_only(data: Data) -> None:
    fired = set()
    for rule in alert_rules():
        if rule["title"].startswith("Sensor failing"):
            fired |= {(dict(lb)["gateway"], dict(lb)["sensor"])
                      for lb, f in evaluate(data.db, rule, END).items() if f}
    assert fired == {(data.gw(FAILING[0]), FAILING[1])}


@pytest.mark.integration
def test_anchoring_stalled_fires_for_the_stalled_collector(data: Data) -> None:
    assert firing(data.db, "Anchoring stalled", END, "collector") == {STALLED_COLLECTOR}
    assert firing(data.db, "Anchoring stalled", END - 5 * 3600, "collector") == set()


@pytest.mark.integration
def test_dry_soil_uses_each_fields_refill_point(data: Data) -> None:
    """orchard-a's refill point (0.22) sits above the simulated trough (about 0.20), the
    default (0.18) below it: only orchard-a can be dry, and at some hour it is."""
    fired: set[str] = set()
    for hour in range(0, DAYS * 24, 3):
        fired |= firing(data.db, "Dry soil", START + 3600 + hour * 3600, "field")
    assert fired == {"orchard-a"}


@pytest.mark.integration
def test_data_volume(data: Data) -> None:
    """Every simulated reading of every probe arrived (values and signed gaps alike: 8
    gateways x 2 probes x 5 quantities x 3 days of 5-minute rounds), plus the series the
    collector derived from them."""
    gateways = sum(len(s.gateways) for s in SITES)
    assert set(READING_MEASUREMENTS) == set(SimulatedSensor.UNITS)  # the 5 quantities
    assert data.raw_points == gateways * len(DEPTHS) * len(READING_MEASUREMENTS) * STEPS
    assert data.derived_points > gateways * len(DEPTHS) * STEPS


@pytest.mark.integration
def test_the_collector_derived_with_the_alert_thresholds(data: Data) -> None:
    """The collector read the TOML the alert rules are generated from: each field's (and each
    depth's) calibration is on its soil water points, not the built-in defaults."""
    cfg = load_agronomy_config(load_collector_config(data.collector_config))
    assert cfg == CONFIG.agronomy
    rows = series_of(data.db,
        'SELECT last("field_capacity"), last("refill_point") FROM "soil_water_deficit" '
        f'WHERE time >= {START * 1000}ms AND time < {END * 1000}ms '
        'GROUP BY "farm", "field", "gateway", "sensor", "depth_cm"')
    got = {(s["tags"]["field"], s["tags"]["gateway"], s["tags"]["depth_cm"]):
           tuple(s["values"][0][1:]) for s in rows}
    expected = {(site.field, data.gw(name), depth):
                CONFIG.agronomy.for_field(site.farm, site.field).calibration(depth)[:2]
                for site in SITES for name in site.gateways for depth in DEPTHS.values()}
    assert got == expected
    assert {v[1] for k, v in got.items() if k[0] == "orchard-a"} == {0.22}
