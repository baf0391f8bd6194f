"""The config examples in docs/sensors.md are the ones technicians copy: each must validate,
and the node frame examples must carry correct CRCs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from gateway.sensors.base import validate_sensor_table
from gateway.sensors.sensor_node import decode_frame

DOC = (Path(__file__).resolve().parents[2] / "docs" / "sensors.md").read_text()
TOML_BLOCKS = [b for b in re.findall(r"```toml\n(.*?)```", DOC, re.S) if "[[sensors]]" in b]


def test_the_doc_has_examples() -> None:
    """Guard: the regex below really finds the examples (five kinds plus a custom map)."""
    assert len(TOML_BLOCKS) == 6


@pytest.mark.parametrize("block", TOML_BLOCKS)
def test_config_examples_validate(block: str) -> None:
    """Every [[sensors]] example in the doc passes the drivers' own validation."""
    for i, table in enumerate(tomllib.loads(block)["sensors"]):
        validate_sensor_table(i, table)


def test_frame_examples_have_valid_crcs() -> None:
    """The frame examples decode (a wrong CRC or field would raise)."""
    frames = re.findall(r"^(\$FP1,.*\*[0-9A-F]{4})$", DOC, re.M)
    assert len(frames) >= 10
    for line in frames:
        decode_frame(line.encode())
