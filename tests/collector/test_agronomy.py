"""Derived agronomy series: formulas against published worked examples, and the deriver's
state handling (daily accumulation across restarts, replays, local days, gaps).

Sources of the expected numbers:
* FAO Irrigation and Drainage Paper 56 (Allen et al. 1998), chapter 3, Example 3 (saturation
  vapour pressure), Example 4 (e° at the wet-bulb temperature) and Example 5 (actual vapour
  pressure from RH, eqs. 17 and 19); Annex 3 eq. 3-11 for the dew point of an ea (the values
  for Example 5's ea as tabulated in NCAR NCL's FAO-56 function documentation).
* Growing degree days: University of Wisconsin Extension (Waushara County) three-day corn
  example with the 86/50 °F rule: (90, 65) → 25.5, (72, 46) → 11, (63, 42) → 6.5, total 43;
  Iowa State Agron 541: high 70 °F, low 50 °F → 10 GDD.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from collector.agronomy import (
    DERIVED_MEASUREMENTS,
    AgronomyConfig,
    AgronomyDeriver,
    FieldAgronomy,
    actual_vapour_pressure_kpa,
    actual_vapour_pressure_rh_mean_kpa,
    actual_vapour_pressure_rh_min_max_kpa,
    dew_point_c,
    frost_risk_level,
    growing_degree_days,
    mean_saturation_vapour_pressure_kpa,
    readily_available_water_depletion,
    saturation_vapour_pressure_kpa,
    soil_water_deficit_mm,
    vapour_pressure_deficit_kpa,
)
from collector.points import Point
from fieldproof.wire import Reading

PROJECT = Path(__file__).resolve().parents[2]
TAGS = {"farm": "valley", "field": "orchard-a", "gateway": "gw-01"}


# --------------------------------------------------------------------------------------------
# FAO-56 worked examples
# --------------------------------------------------------------------------------------------


def test_fao56_example3_saturation_vapour_pressure() -> None:
    assert saturation_vapour_pressure_kpa(24.5) == pytest.approx(3.075, abs=5e-4)
    assert saturation_vapour_pressure_kpa(15.0) == pytest.approx(1.705, abs=5e-4)
    assert mean_saturation_vapour_pressure_kpa(15.0, 24.5) == pytest.approx(2.39, abs=5e-3)
    # the example's point: e° of the mean temperature underestimates es
    assert saturation_vapour_pressure_kpa((15.0 + 24.5) / 2) == pytest.approx(2.30, abs=5e-3)


def test_fao56_example4_wet_bulb_saturation_pressure() -> None:
    assert saturation_vapour_pressure_kpa(19.5) == pytest.approx(2.267, abs=5e-4)


def test_fao56_example5_actual_vapour_pressure_from_rh() -> None:
    assert saturation_vapour_pressure_kpa(18.0) == pytest.approx(2.064, abs=5e-4)
    assert saturation_vapour_pressure_kpa(25.0) == pytest.approx(3.168, abs=5e-4)
    assert actual_vapour_pressure_rh_min_max_kpa(18, 25, 54, 82) == pytest.approx(1.70, abs=5e-3)
    assert actual_vapour_pressure_rh_mean_kpa(18, 25, 68) == pytest.approx(1.78, abs=5e-3)


def test_vapour_pressure_deficit_from_example5_data() -> None:
    """eq. 13 on Example 5's numbers, rounded as FAO-56 prints them: es = 2.62, ea = 1.70,
    es - ea = 0.92 kPa (0.914 unrounded)."""
    es = mean_saturation_vapour_pressure_kpa(18, 25)
    ea = actual_vapour_pressure_rh_min_max_kpa(18, 25, 54, 82)
    assert round(es, 2) - round(ea, 2) == pytest.approx(0.92)
    assert es - ea == pytest.approx(0.914, abs=1e-3)
    # per sample (what the collector stores): deficit = e°(T)(1 - RH/100)
    assert vapour_pressure_deficit_kpa(25.0, 54) == pytest.approx(3.168 * 0.46, abs=1e-3)
    assert vapour_pressure_deficit_kpa(20.0, 100) == 0.0


def test_dew_point_matches_fao56_annex3_and_inverts_eq11() -> None:
    assert dew_point_c(1.70) == pytest.approx(14.96, abs=0.05)
    assert dew_point_c(1.78) == pytest.approx(15.65, abs=0.05)
    for t in (-12.0, 0.0, 7.5, 21.3, 38.0):
        assert dew_point_c(saturation_vapour_pressure_kpa(t)) == pytest.approx(t, abs=1e-9)
    # saturated air: dew point = air temperature; drier air: lower
    assert dew_point_c(actual_vapour_pressure_kpa(20.0, 100)) == pytest.approx(20.0)
    assert dew_point_c(actual_vapour_pressure_kpa(20.0, 50)) == pytest.approx(9.26, abs=0.05)
    with pytest.raises(ValueError):
        dew_point_c(0.0)


# --------------------------------------------------------------------------------------------
# Growing degree days, published examples
# --------------------------------------------------------------------------------------------


def test_gdd_uw_extension_three_day_example_fahrenheit() -> None:
    days = [(65, 90), (46, 72), (42, 63)]
    values = [growing_degree_days(lo, hi, base=50, upper=86) for lo, hi in days]
    assert values == [25.5, 11.0, 6.5]
    assert sum(values) == 43.0


def test_gdd_iowa_state_example_and_floor() -> None:
    assert growing_degree_days(50, 70, base=50, upper=86) == 10.0
    assert growing_degree_days(20, 45, base=50, upper=86) == 0.0  # a cold day is 0, never < 0
    assert growing_degree_days(2.0, 14.0, base=10.0) == 2.0  # method 2: Tmin raised to base
    assert growing_degree_days(28.0, 40.0, base=10.0, upper=30.0) == 19.0


def f_to_c(f: float) -> float:
    return (f - 32.0) * 5.0 / 9.0


def day_of_readings(start: datetime, low: float, high: float, sensor: str = "dht") -> list[Reading]:
    """Hourly air temperatures for one day reaching exactly ``low`` and ``high``."""
    out = []
    for h in range(24):
        frac = abs(h - 14) / 14 if h <= 14 else (h - 14) / 10
        value = high - (high - low) * min(1.0, frac)
        if h == 4:
            value = low
        if h == 14:
            value = high
        out.append(Reading(sensor, "air_temperature", "Cel", value, start.timestamp() + h * 3600))
    return out


def points_named(points: list[Point], name: str) -> list[Point]:
    return [p for p in points if p.measurement == name]


def test_deriver_daily_gdd_reproduces_the_published_example_in_celsius() -> None:
    cfg = FieldAgronomy(base_temp_c=f_to_c(50), upper_temp_c=f_to_c(86), timezone="UTC")
    deriver = AgronomyDeriver(cfg)
    start = datetime(2025, 6, 1, tzinfo=UTC)
    finals: dict[int, Point] = {}
    for i, (lo, hi) in enumerate([(65, 90), (46, 72), (42, 63)]):
        day = start.replace(day=1 + i)
        for r in day_of_readings(day, f_to_c(lo), f_to_c(hi)):  # one message per sample
            for p in points_named(deriver.derive(TAGS, [r]), "growing_degree_days"):
                finals[p.time_ns] = p
    assert len(finals) == 3
    values: list[float] = []
    for k in sorted(finals):
        value = finals[k].fields["value"]
        assert isinstance(value, float)
        values.append(value)
    assert values == pytest.approx([25.5 * 5 / 9, 11 * 5 / 9, 6.5 * 5 / 9], abs=1e-3)
    assert sum(values) == pytest.approx(43 * 5 / 9, abs=2e-3)
    first = finals[min(finals)]
    assert first.time_ns == int(start.timestamp()) * 10**9  # stamped at the local day start
    assert first.tags == {**TAGS, "sensor": "dht", "unit": "Cel.d"}


# --------------------------------------------------------------------------------------------
# Deriver state: restarts, replays, local days, gaps
# --------------------------------------------------------------------------------------------


def run_messages(deriver: AgronomyDeriver, readings: list[Reading]) -> dict[tuple[str, int], Point]:
    latest: dict[tuple[str, int], Point] = {}
    for r in readings:
        for p in deriver.derive(TAGS, [r]):
            if p.measurement in ("growing_degree_days", "chilling_hours"):
                latest[(p.measurement, p.time_ns)] = p
    return latest


def test_daily_state_survives_a_restart(tmp_path: Path) -> None:
    cfg = FieldAgronomy(timezone="UTC", base_temp_c=5.0)
    start = datetime(2025, 1, 10, tzinfo=UTC)
    readings = day_of_readings(start, -1.0, 9.0) + day_of_readings(start.replace(day=11), 2.0, 6.0)
    reference = run_messages(AgronomyDeriver(cfg), readings)

    db_path = tmp_path / "collector.sqlite"
    half = len(readings) // 2 + 5
    first = AgronomyDeriver(cfg, sqlite3.connect(db_path))
    run_messages(first, readings[:half])
    first.db.close()  # process stops
    second = AgronomyDeriver(cfg, sqlite3.connect(db_path))
    after = run_messages(second, readings[half:])
    for key, point in after.items():
        assert point == reference[key]
    assert ("chilling_hours", int(start.replace(day=11).timestamp()) * 10**9) in after


def test_replaying_a_message_changes_nothing() -> None:
    deriver = AgronomyDeriver(FieldAgronomy(timezone="UTC"))
    start = datetime(2025, 1, 10, tzinfo=UTC)
    readings = day_of_readings(start, 1.0, 6.0)
    once = run_messages(deriver, readings)
    again = {(p.measurement, p.time_ns): p for p in deriver.derive(TAGS, [readings[-1]])
             if p.measurement in ("growing_degree_days", "chilling_hours")}
    for key, point in again.items():
        assert point == once[key]


def test_chilling_hours_count_time_in_band_and_skip_gaps() -> None:
    cfg = FieldAgronomy(timezone="UTC", chill_min_c=0.0, chill_max_c=7.2, max_sample_gap_s=1800)
    deriver = AgronomyDeriver(cfg)
    t0 = datetime(2025, 1, 5, tzinfo=UTC).timestamp()
    temps = [10.0] * 6 + [5.0] * 18 + [-2.0] * 6 + [5.0] * 6  # 10-minute samples
    readings = [
        Reading("dht", "air_temperature", "Cel", v, t0 + i * 600) for i, v in enumerate(temps)
    ]
    # a 2-hour hole, then one more sample in band: the hole is not chilling time
    readings.append(Reading("dht", "air_temperature", "Cel", 4.0, t0 + 35 * 600 + 7200))
    result = run_messages(deriver, readings)
    chill = result[("chilling_hours", int(t0) * 10**9)].fields["value"]
    assert chill == pytest.approx((18 + 6) * 600 / 3600)


def test_local_day_boundary_follows_the_farm_time_zone() -> None:
    zone = ZoneInfo("Europe/Rome")
    deriver = AgronomyDeriver(FieldAgronomy(timezone="Europe/Rome"))
    late = datetime(2025, 7, 1, 23, 30, tzinfo=zone).timestamp()
    points = deriver.derive(TAGS, [Reading("dht", "air_temperature", "Cel", 20.0, late)])
    points += deriver.derive(TAGS, [Reading("dht", "air_temperature", "Cel", 18.0, late + 3600)])
    days = {p.time_ns for p in points_named(points, "growing_degree_days")}
    assert days == {
        int(datetime(2025, 7, 1, tzinfo=zone).timestamp()) * 10**9,
        int(datetime(2025, 7, 2, tzinfo=zone).timestamp()) * 10**9,
    }


# --------------------------------------------------------------------------------------------
# Per-sample series
# --------------------------------------------------------------------------------------------


def test_air_pair_yields_dew_point_vpd_and_frost_risk_in_stored_units() -> None:
    deriver = AgronomyDeriver(FieldAgronomy(timezone="UTC"))
    t = 1_750_000_000.0
    points = deriver.derive(TAGS, [
        Reading("dht", "air_temperature", "Cel", 25.0, t),
        Reading("dht", "air_humidity", "%RH", 54.0, t),
    ])
    (vpd,) = points_named(points, "vapour_pressure_deficit")
    assert vpd.tags == {**TAGS, "sensor": "dht", "unit": "Pa"}
    assert vpd.fields["saturation"] == pytest.approx(3168, abs=1)
    assert vpd.fields["actual"] == pytest.approx(3168 * 0.54, abs=1)
    assert vpd.fields["value"] == pytest.approx(3168 * 0.46, abs=1)
    (dew,) = points_named(points, "dew_point")
    ea = saturation_vapour_pressure_kpa(25.0) * 0.54
    assert dew.fields["value"] == pytest.approx(dew_point_c(ea), abs=1e-3)
    (frost,) = points_named(points, "frost_risk")
    assert frost.fields["value"] == 0
    assert vpd.time_ns == dew.time_ns == int(t) * 10**9


def test_humidity_from_another_sensor_pairs_within_the_window_only() -> None:
    deriver = AgronomyDeriver(FieldAgronomy(timezone="UTC"), pair_window_s=60)
    t = 1_750_000_000.0
    near = deriver.derive(TAGS, [Reading("ds18", "air_temperature", "Cel", 10.0, t),
                                 Reading("sht", "air_humidity", "%RH", 80.0, t + 30)])
    far = deriver.derive(TAGS, [Reading("ds18", "air_temperature", "Cel", 10.0, t),
                                Reading("sht", "air_humidity", "%RH", 80.0, t + 300)])
    assert len(points_named(near, "dew_point")) == 1
    assert points_named(near, "dew_point")[0].tags["sensor"] == "ds18"
    assert points_named(far, "dew_point") == []
    assert len(points_named(far, "frost_risk")) == 1  # frost risk needs the temperature only


def test_missing_readings_derive_nothing() -> None:
    deriver = AgronomyDeriver(FieldAgronomy(timezone="UTC"))
    t = 1_750_000_000.0
    points = deriver.derive(TAGS, [
        Reading("dht", "air_temperature", "Cel", None, t, "checksum"),
        Reading("dht", "air_humidity", "%RH", None, t, "checksum"),
        Reading("probe", "soil_moisture", "/", None, t, "timeout"),
    ])
    assert points == []


def test_frost_risk_levels() -> None:
    cfg = FieldAgronomy(frost_c=0.0, frost_watch_c=3.0, dew_point_margin_c=4.0)
    assert frost_risk_level(-0.5, None, cfg) == 2
    assert frost_risk_level(2.5, 1.0, cfg) == 1
    assert frost_risk_level(6.0, -3.0, cfg) == 1  # dry air on a cool evening
    assert frost_risk_level(6.0, 4.0, cfg) == 0
    assert frost_risk_level(12.0, -3.0, cfg) == 0


def test_soil_water_deficit_uses_field_and_depth_calibration() -> None:
    config = AgronomyConfig.from_toml(PROJECT / "dashboards" / "fields.example.toml")
    deriver = AgronomyDeriver(config)
    t = 1_750_000_000.0
    tags = {"farm": "hillside", "field": "vineyard-1", "gateway": "gw-9"}
    points = deriver.derive(tags, [
        Reading("p30", "soil_moisture", "/", 0.235, t),
        Reading("p60", "soil_moisture", "/", 0.235, t),
    ], sensor_meta={"p30": {"depth_cm": "30"}, "p60": {"depth_cm": "60"}})
    by_sensor = {p.tags["sensor"]: p for p in points_named(points, "soil_water_deficit")}
    # vineyard-1: fc 0.30, refill 0.17; its 60 cm override: fc 0.33, refill 0.20
    p30, p60 = by_sensor["p30"].fields["value"], by_sensor["p60"].fields["value"]
    assert p30 == pytest.approx((0.30 - 0.235) / (0.30 - 0.17), abs=1e-4)
    assert p60 == pytest.approx((0.33 - 0.235) / (0.33 - 0.20), abs=1e-4)
    assert by_sensor["p30"].fields["deficit_mm"] == pytest.approx(0.065 * 300, abs=0.01)
    assert by_sensor["p60"].tags == {**tags, "sensor": "p60", "unit": "/", "depth_cm": "60"}
    assert by_sensor["p60"].fields["refill_point"] == 0.20
    assert readily_available_water_depletion(0.18, 0.34, 0.18) == pytest.approx(1.0)
    assert soil_water_deficit_mm(0.40, 0.34, 300) == 0.0


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def test_example_config_inherits_defaults_per_field() -> None:
    config = AgronomyConfig.from_toml(PROJECT / "dashboards" / "fields.example.toml")
    orchard = config.for_field("valley", "orchard-a")
    assert (orchard.field_capacity, orchard.refill_point, orchard.heat_c) == (0.36, 0.22, 34.0)
    assert orchard.timezone == config.default.timezone == "Europe/Rome"  # inherited
    assert config.for_field("valley", "unknown") is config.default


@pytest.mark.parametrize("bad", [
    {"field_capacity": 0.2, "refill_point": 0.25},
    {"waterlogging_vwc": 0.30, "field_capacity": 0.34},
    {"timezone": "Mars/Olympus"},
    {"base_temp_c": 10, "upper_temp_c": 8},
    {"frost_c": 2.0, "frost_watch_c": 1.0},
    {"farm": "valley"},
])
def test_config_rejects_inconsistent_thresholds(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FieldAgronomy.model_validate(bad)


def test_config_rejects_duplicate_fields() -> None:
    entry = {"farm": "a", "field": "b"}
    with pytest.raises(ValidationError):
        AgronomyConfig.model_validate({"fields": [entry, entry]})


def test_derived_measurement_names_are_declared() -> None:
    """The collector reserves DERIVED_MEASUREMENTS so no gateway can write into them."""
    deriver = AgronomyDeriver(FieldAgronomy(timezone="UTC"))
    t = 1_750_000_000.0
    points = deriver.derive(TAGS, [
        Reading("dht", "air_temperature", "Cel", 4.0, t),
        Reading("dht", "air_humidity", "%RH", 70.0, t),
        Reading("probe", "soil_moisture", "/", 0.25, t),
    ])
    assert {p.measurement for p in points} == DERIVED_MEASUREMENTS
