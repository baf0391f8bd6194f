"""Fixtures shared by the integration tests of this folder."""

from tests.support.hostile import influx  # noqa: F401 (a module-scoped InfluxDB fixture)
