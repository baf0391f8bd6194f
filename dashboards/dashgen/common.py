"""Constants every part of the generated files shares: where the files live, Grafana's
schema version and the InfluxDB data source they all query."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = HERE / "fields.example.toml"

#: Grafana's dashboard schema version this generator writes (Grafana 11.6 / 12.0).
SCHEMA_VERSION = 41
DATASOURCE_UID = "fieldproof-influxdb"
DATASOURCE = {"type": "influxdb", "uid": DATASOURCE_UID}
FOLDER_PATH = "/var/lib/grafana/dashboards/fieldproof"

Json = dict[str, Any]
