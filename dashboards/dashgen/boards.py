"""The four dashboards: field overview, agronomy, fleet health, integrity."""

# The generator's job is to write InfluxQL text; tag values from the TOML go through _lit().
# ruff: noqa: S608

from __future__ import annotations

from .common import (
    Json,
)
from .panels import (
    Layout,
    age_override,
    dashboard,
    stat,
    state_timeline,
    table,
    timeseries,
    unit_override,
)
from .queries import group_by, series_query, target, where
from .settings import AlertsConfig, DashboardsConfig
from .units import QUANTITIES

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
