"""Writing points to InfluxDB: the v1 ``/write`` API (InfluxDB 1.x) or the v2 API through
``influxdb-client`` (InfluxDB 2.x, 3.x, Cloud, and the 1.8+ compatibility endpoint).

Every answer falls in one of three kinds, and the collector treats them differently:

- :class:`InfluxUnavailable` — the server is down, slow, overloaded, or not ready for us (the
  database or bucket does not exist yet, a retention policy is missing): keep the batch, hold
  the MQTT acks, retry with backoff. Nothing is lost and nothing is counted as refused.
- :class:`InfluxCredentialsRefused` (an :class:`InfluxUnavailable`) — 401/403: the server
  refused *who we are*, not the data. Retried the same way; the message names the config key
  to fix. Never a reason to drop or count a single point.
- :class:`InfluxRejected` — the server refused the data itself (a field type conflict, a line
  it cannot parse): retrying the same lines will fail again. :func:`write_salvaging` then
  finds exactly the refused lines (bisecting the batch), keeps writing the rest, and counts
  them; the readings stay in the evidence log.

A missing database is created where the server allows it (InfluxDB 1.x, also through the v2
endpoint of 1.8: ``CREATE DATABASE`` on ``/query`` with the same credentials), unless
``[influx] create_database = false``. On InfluxDB 2.x/3.x/Cloud the bucket must exist: the
collector says so and retries.

Logging: the collector's ingest loop logs the first failure after a success once
("holding acks and retrying"); a writer logs, once, a failure of a *different* kind that
follows a failure (e.g. the server comes back with the wrong credentials), so each problem
is reported exactly once, however long it lasts."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from typing import Protocol

import httpx

from fieldproof.config import InfluxConfig
from fieldproof.errors import CredentialError, StorageError

log = logging.getLogger("fieldproof.collector.influx")


class InfluxUnavailable(StorageError, RuntimeError):
    """InfluxDB cannot take the write now; retry later. ``kind`` names the problem."""

    def __init__(self, message: str, kind: str = "unavailable") -> None:
        super().__init__(message)
        self.kind = kind


class InfluxCredentialsRefused(InfluxUnavailable, CredentialError):
    """InfluxDB refused the configured credentials (401/403): fix the config key the message
    names; the collector retries and holds every batch meanwhile."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "credentials")


class InfluxRejected(StorageError, ValueError):
    """InfluxDB refused the data itself; retrying the same lines will fail again."""


class PointWriter(Protocol):
    def write(self, lines: Sequence[str]) -> None: ...
    def close(self) -> None: ...


def _snippet(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


class _Writer:
    """What both writers share: the classification of an answer and reporting a problem once."""

    def __init__(self, cfg: InfluxConfig) -> None:
        self.cfg = cfg
        self._failing: str | None = None  # kind of the last failure; None after a success

    # ---- reporting

    def _succeeded(self) -> None:
        if self._failing is not None:
            log.info("InfluxDB at %s takes writes again", self.cfg.url)
        self._failing = None

    def _fail(self, exc: InfluxUnavailable) -> InfluxUnavailable:
        """Remember the failure; log it when it replaces a failure of another kind (the first
        failure after a success is logged by the ingest loop that retries)."""
        if self._failing is not None and self._failing != exc.kind:
            log.error("%s", exc)
        self._failing = exc.kind
        return exc

    # ---- classification

    def _credentials_hint(self) -> str:
        raise NotImplementedError

    def _classify(self, status: int, body: str, what: str) -> InfluxUnavailable | InfluxRejected:
        """The exception for a non-2xx answer to a write (404 'database not found' is handled
        by the caller before this)."""
        url = self.cfg.url
        if status in (401, 403):
            return self._fail(
                InfluxCredentialsRefused(
                    f"InfluxDB at {url} refused the collector's credentials ({status} "
                    f"{_snippet(body, 160)}): {self._credentials_hint()}; every batch is held "
                    "and retried, nothing is acknowledged or dropped meanwhile"
                )
            )
        if "retention policy not found" in body:
            return self._fail(
                InfluxUnavailable(
                    f"InfluxDB at {url}: {_snippet(body, 160)} — create that retention policy "
                    f"or fix {what}; writes are held and retried",
                    "retention_policy",
                )
            )
        if status == 404:
            return self._fail(
                InfluxUnavailable(
                    f"InfluxDB at {url} has no such endpoint or target (404 "
                    f"{_snippet(body, 160)}): check [influx] url and api; writes are held "
                    "and retried",
                    "not_found",
                )
            )
        if status == 0 or status >= 500 or status in (408, 429):
            return self._fail(
                InfluxUnavailable(f"InfluxDB at {url} answered {status}: {_snippet(body)}")
            )
        return InfluxRejected(f"InfluxDB refused the write ({status}): {_snippet(body)}")

    def _unreachable(self, exc: BaseException) -> InfluxUnavailable:
        return self._fail(
            InfluxUnavailable(f"InfluxDB at {self.cfg.url} is unreachable: {exc}")
        )

    # ---- creating a missing database (InfluxDB 1.x, also behind 1.8's v2 endpoint)

    def _create_database(
        self,
        http: httpx.Client,
        database: str,
        credentials_key: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        """``CREATE DATABASE`` through ``/query`` with the writer's credentials, or the
        :class:`InfluxUnavailable` that says why it cannot be done (retried by the caller)."""
        url = self.cfg.url
        if not self.cfg.create_database:
            raise self._fail(
                InfluxUnavailable(
                    f"database {database!r} does not exist at {url} and [influx] "
                    f"create_database = false: create it (CREATE DATABASE \"{database}\"); "
                    "writes are held and retried",
                    "database_missing",
                )
            )
        q = 'CREATE DATABASE "' + database.replace("\\", "\\\\").replace('"', '\\"') + '"'
        try:
            r = http.post("/query", data={"q": q}, headers=headers)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        text = r.text
        if r.status_code == 200 and '"error"' not in text:
            log.info("created database %r at %s", database, url)
            return
        if r.status_code == 401:
            raise self._classify(401, text, credentials_key)
        if r.status_code >= 500:
            raise self._fail(InfluxUnavailable(f"InfluxDB at {url} answered {r.status_code}"))
        raise self._fail(
            InfluxUnavailable(
                f"database {database!r} does not exist at {url} and the collector's "
                f"credentials ({credentials_key}) may not create it ({r.status_code} "
                f"{_snippet(text, 200)}): create it (CREATE DATABASE \"{database}\") or "
                "give a user with the right; writes are held and retried",
                "database_missing",
            )
        )


class V1Writer(_Writer):
    """POST line protocol to ``/write`` (InfluxDB 1.x); creates a missing database."""

    def __init__(self, cfg: InfluxConfig) -> None:
        super().__init__(cfg)
        auth = None
        self._password_set = False
        if cfg.username:
            password = os.environ.get(cfg.password_env, "") if cfg.password_env else ""
            self._password_set = bool(password)
            auth = httpx.BasicAuth(cfg.username, password)
        self.http = httpx.Client(base_url=cfg.url, timeout=cfg.timeout_s, auth=auth)

    def _credentials_hint(self) -> str:
        c = self.cfg
        if not c.username:
            return (
                "the server needs a user: set [influx] username and password_env (the "
                "environment variable holding the password)"
            )
        env = c.password_env
        where = (
            f"[influx] password_env = {env!r} ({'set' if self._password_set else 'NOT set'} "
            "in the collector's environment)"
            if env
            else "[influx] password_env (not configured: no password is sent)"
        )
        return f"check [influx] username = {c.username!r} and {where}"

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        self._write(lines, may_create=True)

    def _write(self, lines: Sequence[str], may_create: bool) -> None:
        params = {"db": self.cfg.database, "precision": "ns"}
        if self.cfg.retention_policy:
            params["rp"] = self.cfg.retention_policy
        try:
            r = self.http.post("/write", params=params, content="\n".join(lines).encode())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if r.status_code == 204:
            self._succeeded()
            return
        if r.status_code == 404 and "database not found" in r.text and may_create:
            self._create_database(self.http, self.cfg.database, "[influx] username")
            self._write(lines, may_create=False)
            return
        raise self._classify(r.status_code, r.text, "[influx] retention_policy")

    def close(self) -> None:
        self.http.close()


class V2Writer(_Writer):
    """Write through the official ``influxdb-client`` (v2 API) synchronously.

    Against InfluxDB 1.8 the token is ``user:password`` (1.8 splits the header on spaces: no
    space in either) and the bucket ``database/retention-policy`` (or just ``database``)."""

    def __init__(self, cfg: InfluxConfig) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        super().__init__(cfg)
        self._token = os.environ.get(cfg.token_env, "") if cfg.token_env else ""
        self.client = InfluxDBClient(
            url=cfg.url, token=self._token, org=cfg.org, timeout=int(cfg.timeout_s * 1000)
        )
        self.api = self.client.write_api(write_options=SYNCHRONOUS)
        self._http: httpx.Client | None = None  # only to create a database on 1.8

    def _credentials_hint(self) -> str:
        env = self.cfg.token_env
        if not env:
            return (
                "no token is sent: set [influx] token_env to the environment variable holding "
                "the API token (for InfluxDB 1.8: user:password)"
            )
        state = "set" if self._token else "NOT set"
        hint = f"check the token in the environment variable named by [influx] token_env = {env!r}"
        hint += f" ({state} in the collector's environment; for InfluxDB 1.8 it is user:password"
        if " " in self._token.strip():
            hint += ", and 1.8 cannot parse a token with a space in it"
        return hint + ")"

    def write(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        self._write(lines, may_create=True)

    def _write(self, lines: Sequence[str], may_create: bool) -> None:
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError

        try:
            self.api.write(
                bucket=self.cfg.bucket,
                org=self.cfg.org,
                record="\n".join(lines),
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            status = int(exc.status or 0)
            body = exc.body.decode(errors="replace") if isinstance(exc.body, bytes) else str(
                exc.body or exc.reason or ""
            )
            if status == 404 and "database not found" in body and may_create:
                # InfluxDB 1.8's v2 endpoint: the bucket is "database[/retention-policy]"
                self._create_database(
                    self._query_client(),
                    self.cfg.bucket.split("/", 1)[0],
                    "[influx] token_env",
                    headers=self._auth_headers(),
                )
                self._write(lines, may_create=False)
                return
            if status == 404 and "bucket" in body and "not found" in body:
                raise self._fail(
                    InfluxUnavailable(
                        f"bucket {self.cfg.bucket!r} does not exist in org {self.cfg.org!r} at "
                        f"{self.cfg.url} ({_snippet(body, 160)}): on InfluxDB 2.x, 3.x and "
                        "Cloud the collector does not create buckets; create it (influx bucket "
                        f"create --name {self.cfg.bucket} --org {self.cfg.org or '<org>'}) or "
                        "fix [influx] bucket / org; writes are held and retried",
                        "bucket_missing",
                    )
                ) from None
            raise self._classify(status, body, "[influx] bucket") from None
        except (HTTPError, OSError) as exc:
            raise self._unreachable(exc) from None
        self._succeeded()

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self._token}"} if self._token else {}

    def _query_client(self) -> httpx.Client:
        if self._http is None:
            self._http = httpx.Client(base_url=self.cfg.url, timeout=self.cfg.timeout_s)
        return self._http

    def close(self) -> None:
        self.client.close()  # type: ignore[no-untyped-call]
        if self._http is not None:
            self._http.close()


def make_writer(cfg: InfluxConfig) -> PointWriter:
    return V1Writer(cfg) if cfg.api == "v1" else V2Writer(cfg)


def write_salvaging(
    writer: PointWriter, lines: Sequence[str], refused_lines: list[str] | None = None
) -> int:
    """Write a batch; if InfluxDB refuses some of it as invalid, find exactly the refused lines,
    so one bad point neither blocks nor costs the rest. Returns how many lines InfluxDB
    refused; each is appended to ``refused_lines`` when given, and they are logged.

    How: a refused part is split by measurement (a field type conflict is per measurement),
    then in halves; a part that is taken is done (InfluxDB keeps the good points of a partial
    write, and writing a point again overwrites it with itself). A part whose answer says
    ``dropped=N`` for all of its N lines (InfluxDB's partial-write report, which counts the
    points it refused — not unparsable lines) is refused whole without more requests.
    :class:`InfluxUnavailable` (and so :class:`InfluxCredentialsRefused`) propagates: the
    caller retries the whole batch, which is harmless for the parts already written."""
    try:
        writer.write(lines)
        return 0
    except InfluxRejected as exc:
        if len(lines) > 1:
            log.warning(
                "InfluxDB refused part of a batch of %d points (%s); finding the refused ones",
                len(lines),
                exc,
            )
        return _refused_part(writer, lines, exc, refused_lines)


def _salvage(writer: PointWriter, lines: Sequence[str], refused_lines: list[str] | None) -> int:
    if not lines:
        return 0
    try:
        writer.write(lines)
        return 0
    except InfluxRejected as exc:
        return _refused_part(writer, lines, exc, refused_lines)


_DROPPED = re.compile(r"\bdropped=(\d+)")


def _refused_part(
    writer: PointWriter, lines: Sequence[str], exc: InfluxRejected, refused: list[str] | None
) -> int:
    dropped = _DROPPED.findall(str(exc))
    if len(lines) == 1 or (dropped and int(dropped[-1]) == len(lines)):
        if len(lines) == 1:
            log.error(
                "InfluxDB refused point %s: %s (the reading stays in the evidence log)",
                lines[0][:200],
                exc,
            )
        else:
            log.error(
                "InfluxDB refused all %d points of this part, e.g. %s: %s (the readings stay in "
                "the evidence log)",
                len(lines),
                lines[0][:200],
                exc,
            )
        if refused is not None:
            refused.extend(lines)
        return len(lines)
    groups: dict[str, list[str]] = {}
    for line in lines:
        groups.setdefault(_measurement(line), []).append(line)
    if len(groups) > 1:
        return sum(_salvage(writer, group, refused) for group in groups.values())
    mid = len(lines) // 2
    return _salvage(writer, lines[:mid], refused) + _salvage(writer, lines[mid:], refused)


def _measurement(line: str) -> str:
    """The measurement of a line-protocol line (up to the first unescaped ',' or ' ')."""
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c in ", ":
            return line[:i]
        i += 1
    return line
