"""An unknown config key is named with its file (or environment variable), its section and
the closest valid key, so a typo is fixed from the message alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from fieldproof.config import closest_key, load_collector_config
from fieldproof.errors import ConfigError
from gateway.config import load_gateway_config


def _error_line(exc: pytest.ExceptionInfo[ConfigError], key: str) -> str:
    lines = [line for line in str(exc.value).splitlines() if line.strip().startswith(key)]
    assert len(lines) == 1, str(exc.value)
    return lines[0]


def test_collector_section_key_typo_names_file_section_and_closest(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text('[influx]\ndatabse = "farm"\n')
    with pytest.raises(ConfigError) as exc:
        load_collector_config(path)
    line = _error_line(exc, "influx.databse")
    assert f"[influx] of {path} has no key 'databse'" in line
    assert "did you mean 'database'?" in line


def test_collector_top_level_and_list_item_sections(tmp_path: Path) -> None:
    path = tmp_path / "collector.toml"
    path.write_text(
        '[anchr]\nchain = "thor"\n'
        '[[log.witnesses]]\nname = "w"\nurl = "http://w"\nvkey = "v"\nretry = 5\n'
    )
    with pytest.raises(ConfigError) as exc:
        load_collector_config(path)
    assert "the top level of" in _error_line(exc, "anchr")
    assert "did you mean 'anchor'?" in _error_line(exc, "anchr")
    witness = _error_line(exc, "log.witnesses.0.retry")
    assert "[[log.witnesses]] #1" in witness and "did you mean 'retry_s'?" in witness


def test_gateway_key_typo(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('feild = "b"\n[mqtt]\nhots = "broker"\n')
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(path)
    assert "did you mean 'field'?" in _error_line(exc, "feild")
    host = _error_line(exc, "mqtt.hots")
    assert f"[mqtt] of {path}" in host and "did you mean 'host'?" in host


def test_no_close_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("[mqtt]\nzzzzzz = 1\n")
    with pytest.raises(ConfigError) as exc:
        load_gateway_config(path)
    line = _error_line(exc, "mqtt.zzzzzz")
    assert "did you mean" not in line
    assert "valid keys there: " in line and "host" in line and "topic_prefix" in line


def test_key_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "collector.toml"
    path.write_text("")
    monkeypatch.setenv("FIELDPROOF_COLLECTOR__MQTT__PORTT", "1884")
    with pytest.raises(ConfigError) as exc:
        load_collector_config(path)
    line = _error_line(exc, "mqtt.portt")
    assert "environment variable FIELDPROOF_COLLECTOR__MQTT__PORTT" in line
    assert "did you mean 'port'?" in line


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("intervall_s", "interval_s"), ("Farm", "farm"), ("key_flie", "key_file"), ("qqq", None)],
)
def test_closest_key(typed: str, meant: str | None) -> None:
    assert closest_key(typed, ["interval_s", "farm", "field", "key_file"]) == meant
