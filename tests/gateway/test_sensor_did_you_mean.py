"""An unknown sensor kind or option names the closest valid one and lists the valid kinds."""

from __future__ import annotations

import pytest

from gateway.sensors.base import BUILTIN_DRIVERS, SensorConfigError, validate_sensor_table


def test_unknown_kind_names_the_closest_and_lists_all() -> None:
    with pytest.raises(SensorConfigError) as exc:
        validate_sensor_table(2, {"kind": "dht23", "name": "air"})
    text = str(exc.value)
    assert "sensors[2] (air).kind = 'dht23' is not a sensor kind" in text
    assert "did you mean 'dht22'?" in text
    for kind in BUILTIN_DRIVERS:
        assert kind in text


def test_kind_far_from_any_has_no_guess() -> None:
    with pytest.raises(SensorConfigError) as exc:
        validate_sensor_table(0, {"kind": "thermometer", "name": "t"})
    assert "did you mean" not in str(exc.value)
    assert "valid kinds: " in str(exc.value)


def test_unknown_option_names_the_closest_option() -> None:
    with pytest.raises(SensorConfigError) as exc:
        validate_sensor_table(0, {"kind": "simulated", "name": "s", "sed": 3})
    assert "a 'simulated' sensor has no option 'sed'; did you mean 'seed'?" in str(exc.value)
