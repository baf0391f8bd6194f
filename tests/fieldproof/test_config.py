"""Configuration errors name the file, the key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldproof.config import load_collector_config
from fieldproof.errors import ConfigError
from gateway.config import load_gateway_config


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_wrong_value_names_key_value_and_rule(tmp_path: Path) -> None:
    p = _write(tmp_path, "interval_s = -5\n[mqtt]\nport = 70000\n")
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(p)
    text = str(exc.value)
    assert str(p) in text
    assert "interval_s = -5" in text and "greater than 0" in text
    assert "mqtt.port = 70000" in text and "less than or equal to 65535" in text


def test_unknown_key_and_sensor_kind(tmp_path: Path) -> None:
    p = _write(tmp_path, 'intervall_s = 5\n[[sensors]]\nkind = "dht23"\nname = "a"\n')
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(p)
    text = str(exc.value)
    assert "intervall_s" in text and "Extra inputs are not permitted" in text
    assert "'dht23' is not a sensor kind" in text and "simulated" in text


def test_sensor_option_error_names_sensor(tmp_path: Path) -> None:
    p = _write(tmp_path, '[[sensors]]\nkind = "simulated"\nname = "st1"\nfield_capacity = 2\n')
    with pytest.raises(ConfigError, match=r"sensors\[0\] \(st1\)\.field_capacity = 2"):
        load_gateway_config(p)


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_gateway_config(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_gateway_config(_write(tmp_path, "a = = 1"))


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, '[influx]\nurl = "http://a:8086"\n')
    monkeypatch.setenv("FIELDPROOF_COLLECTOR__INFLUX__URL", "http://b:8086")
    monkeypatch.setenv("FIELDPROOF_COLLECTOR__BATCH_MAX", "77")
    cfg = load_collector_config(p)
    assert cfg.influx.url == "http://b:8086"
    assert cfg.batch_max == 77
    monkeypatch.setenv("FIELDPROOF_COLLECTOR__BATCH_MAX", "lots")
    with pytest.raises(ConfigError, match="batch_max = 'lots'"):
        load_collector_config(p)


def test_shipped_example_configs_validate() -> None:
    deploy = Path(__file__).resolve().parents[2] / "deploy"
    gateway = sorted(deploy.glob("**/gateway*.toml"))
    collector = sorted(deploy.glob("**/collector*.toml"))
    assert gateway and collector, "deploy/ must ship example gateway and collector configs"
    for p in gateway:
        load_gateway_config(p)
    for p in collector:
        load_collector_config(p)
