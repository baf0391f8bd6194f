"""Writing points to InfluxDB: the v1 ``/write`` API (InfluxDB 1.x) or the v2 API through
``influxdb-client`` (InfluxDB 2.x, 3.x, Cloud, and 1.8+ compatibility endpoints).

Errors are split into two kinds the collector treats differently:
- :class:`InfluxUnavailable` — the server is down, slow or overloaded: keep the batch, hold the
  MQTT acks, retry with backoff. Nothing is lost.
- :class:`InfluxRejected` — the server refused some points as invalid (e.g. a field type
  conflict): retrying will not help; the readings remain in the evidence log and are counted."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Protocol

import httpx

from fieldproof.config import InfluxConfig

log = logging.getLogger("fieldproof.collector.influx")


class InfluxUnavailable(RuntimeError):
    """InfluxDB cannot take the write now; retry later."""


class InfluxRejected(ValueError):
    """InfluxDB refused the data itself; retrying the same lines will fail again."""


class PointWriter(Protocol):
    def write(self, lines: Sequence[str]) -> None: ...
    def close(self) -> None: ...


class V1Writer:
    """POST line protocol to ``/write`` (InfluxDB 1.x), creating the database on first use."""

    def __init__(self, cfg: InfluxConfig) -> None:
        self.cfg = cfg
        auth = None
        if cfg.username:
            password = os.environ.get(cfg.password_env, "") if cfg.password_env else ""
            auth = httpx.BasicAuth(cfg.username, password)
        self.http = httpx.Client(base_url=cfg.url, timeout=cfg.timeout_s, auth=auth)
        self._database_ready = not cfg.create_database

    def _ensure_database(self) -> None:
        if self._database_ready:
            return
        try:
            r = self.http.post("/query", params={"q": f'CREATE DATABASE "{self.cfg.database}"'})
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.cfg.url} is unreachable: {exc}") from None
        if r.status_code >= 500:
            raise InfluxUnavailable(f"InfluxDB at {self.cfg.url} answered {r.status_code}")
        if r.status_code != 200:
            raise InfluxRejected(
                f"cannot create database {self.cfg.database!r} at {self.cfg.url}: "
                f"{r.status_code} {r.text.strip()} — create it by hand or give a user with rights"
            )
        self._database_ready = True

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        self._ensure_database()
        params = {"db": self.cfg.database, "precision": "ns"}
        if self.cfg.retention_policy:
            params["rp"] = self.cfg.retention_policy
        try:
            r = self.http.post("/write", params=params, content="\n".join(lines).encode())
        except httpx.HTTPError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.cfg.url} is unreachable: {exc}") from None
        if r.status_code == 204:
            return
        if r.status_code >= 500 or r.status_code == 429:
            raise InfluxUnavailable(
                f"InfluxDB at {self.cfg.url} answered {r.status_code}: {r.text.strip()}"
            )
        if r.status_code == 404 and "database not found" in r.text:
            self._database_ready = not self.cfg.create_database
            raise InfluxUnavailable(f"database {self.cfg.database!r} not found at {self.cfg.url}")
        raise InfluxRejected(
            f"InfluxDB refused the write ({r.status_code}): {r.text.strip()[:300]}"
        )

    def close(self) -> None:
        self.http.close()


class V2Writer:
    """Write through the official ``influxdb-client`` (v2 API) synchronously."""

    def __init__(self, cfg: InfluxConfig) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        token = os.environ.get(cfg.token_env, "") if cfg.token_env else ""
        self.cfg = cfg
        self.client = InfluxDBClient(
            url=cfg.url, token=token, org=cfg.org, timeout=int(cfg.timeout_s * 1000)
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)

    def write(self, lines: Sequence[str]) -> None:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        if not lines:
            return
        try:
            self.api.write(
                bucket=self.cfg.bucket,
                org=self.cfg.org,
                record="\n".join(lines),
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            if status >= 500 or status in (0, 429):
                raise InfluxUnavailable(
                    f"InfluxDB v2 at {self.cfg.url} answered {status}"
                ) from None
            raise InfluxRejected(
                f"InfluxDB v2 refused the write ({status}): {exc.body!s:.300}"
            ) from None
        except (HTTPError, OSError) as exc:
            raise InfluxUnavailable(
                f"InfluxDB v2 at {self.cfg.url} is unreachable: {exc}"
            ) from None

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]


def make_writer(cfg: InfluxConfig) -> PointWriter:
    return V1Writer(cfg) if cfg.api == "v1" else V2Writer(cfg)


def write_salvaging(writer: PointWriter, lines: Sequence[str]) -> int:
    """Write a batch; if InfluxDB rejects it as invalid, write line by line so one bad point
    cannot block the rest. Returns the number of lines InfluxDB refused.
    :class:`InfluxUnavailable` propagates (the caller retries the whole batch)."""
    try:
        writer.write(lines)
        return 0
    except InfluxRejected as exc:
        log.warning("batch of %d points rejected (%s); retrying one by one", len(lines), exc)
    refused = 0
    for line in lines:
        try:
            writer.write([line])
        except InfluxRejected as exc:
            refused += 1
            log.error("InfluxDB refused point %s: %s", line[:120], exc)
    return refused
