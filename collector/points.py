"""InfluxDB points and their line-protocol encoding (the one format every InfluxDB writes)."""

from __future__ import annotations

from dataclasses import dataclass


def _escape_key(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _escape_measurement(text: str) -> str:
    return text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ ")


def _field_value(value: float | int | str | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class Point:
    """One InfluxDB point. Tags sorted on output, as InfluxDB recommends for write speed."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str | bool]
    time_ns: int

    def to_line(self) -> str:
        tags = "".join(
            f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(self.tags.items()) if v != ""
        )
        fields = ",".join(f"{_escape_key(k)}={_field_value(v)}" for k, v in self.fields.items())
        return f"{_escape_measurement(self.measurement)}{tags} {fields} {self.time_ns}"
