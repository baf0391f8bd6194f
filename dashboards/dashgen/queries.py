"""InfluxQL building blocks: template-variable filters, GROUP BY, panel targets."""

# The generator's job is to write InfluxQL text; tag values from the TOML go through _lit().
# ruff: noqa: S608

from __future__ import annotations

from .common import (
    DATASOURCE,
    Json,
)
from .units import QUANTITIES

VAR_FILTERS = {
    "farm": '"farm" =~ /^$farm$/',
    "field": '"field" =~ /^$field$/',
    "gateway": '"gateway" =~ /^$gateway$/',
    "sensor": '"sensor" =~ /^$sensor$/',
}


def where(*keys: str) -> str:
    """``$timeFilter`` plus the template-variable filters for ``keys``."""
    return " AND ".join(["$timeFilter", *(VAR_FILTERS[k] for k in keys)])


def group_by(*tags: str, interval: str | None = "$__interval", fill: str = "none") -> str:
    parts = ([f"time({interval})"] if interval else []) + [f'"{t}"' for t in tags]
    text = " GROUP BY " + ", ".join(parts) if parts else ""
    return text + (f" fill({fill})" if interval else "")


def target(ref: str, query: str, alias: str = "", fmt: str = "time_series") -> Json:
    t: Json = {
        "refId": ref,
        "datasource": DATASOURCE,
        "query": query,
        "rawQuery": True,
        "resultFormat": fmt,
    }
    if alias:
        t["alias"] = alias
    return t


def series_query(measurement: str, keys: tuple[str, ...], tags: tuple[str, ...],
                 agg: str = "mean", field: str = "value", extra: str = "") -> str:
    q = QUANTITIES[measurement]
    return (
        f'SELECT {agg}("{field}"){q.math} FROM "{measurement}" WHERE {where(*keys)}{extra}'
        f"{group_by(*tags)}"
    )
