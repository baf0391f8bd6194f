"""InfluxDB points and their line-protocol encoding (the one format every InfluxDB writes)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


def _no_newlines(text: str) -> str:
    """Line protocol has no escape for a line break in a measurement, tag key or tag value:
    one would end the line there and the rest would be read as a line of its own (a point the
    sender chose). A break is written as the two characters ``\\n`` (``\\r``) instead."""
    if "\n" in text or "\r" in text:
        return text.replace("\n", "\\n").replace("\r", "\\r")
    return text


@lru_cache(maxsize=16384)
def _escape_key(text: str) -> str:
    text = text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")
    return _no_newlines(text)


@lru_cache(maxsize=1024)
def _escape_measurement(text: str) -> str:
    return _no_newlines(text.replace("\\", "\\\\").replace(",", "\\,").replace(" ", "\\ "))


def field_value(value: float | int | str | bool) -> str:
    """A field value in line protocol (floats as Python's shortest round-trip repr)."""
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
        fields = ",".join(f"{_escape_key(k)}={field_value(v)}" for k, v in self.fields.items())
        return f"{_series_key_cached(self.measurement, *self.tags.items())} {fields} {self.time_ns}"


@lru_cache(maxsize=16384)
def _series_key_cached(measurement: str, *tags: tuple[str, str]) -> str:
    """:func:`series_key` remembered: derived series (dew point, GDD, ...) repeat their tags
    on every message, and sorting and escaping them was ~6 % of a 10-reading message."""
    return series_key(measurement, dict(tags))


def series_key(measurement: str, tags: dict[str, str]) -> str:
    """The escaped ``measurement,tag=value,...`` head of a line (tags sorted, empty ones left
    out). The same for every point of a series, so hot paths build it once and reuse it."""
    return _escape_measurement(measurement) + "".join(
        f",{_escape_key(k)}={_escape_key(v)}" for k, v in sorted(tags.items()) if v != ""
    )

