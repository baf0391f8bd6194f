"""``--against-influx``: compares the operator's InfluxDB with what the evidence proves; every
changed, added or deleted reading point is an error finding. Credentials never leave this
module in a message or the JSON."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Literal

from inspector.findings import FindingCode
from inspector.results import Findings, UsageError, VerificationResult, fmt_time

__all__ = ["MAX_LISTED_DIFFS", "InfluxAuth", "InfluxComparison", "PointDiff",
           "check_against_influx"]

MAX_LISTED_DIFFS = 1000
#: measurements the collector writes beside readings; not evidence, so not compared
_NOT_READINGS = frozenset({"gateway_status", "collector_stats", "quarantine", "anchor_state",
                           "dew_point", "vapour_pressure_deficit", "frost_risk",
                           "growing_degree_days", "chilling_hours", "soil_water_deficit"})


@dataclass(frozen=True)
class PointDiff:
    kind: Literal["changed", "added", "deleted"]
    measurement: str
    gateway: str
    sensor: str
    time_ns: int
    fields: tuple[str, ...]
    evidence: dict[str, Any] | None
    database: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "measurement": self.measurement, "gateway": self.gateway,
                "sensor": self.sensor, "time_ns": self.time_ns, "fields": list(self.fields),
                "evidence": self.evidence, "database": self.database}


@dataclass
class InfluxComparison:
    url: str
    database: str
    evidence_points: int = 0
    database_points: int = 0
    matched: int = 0
    changed: int = 0
    added: int = 0
    deleted: int = 0
    diffs: list[PointDiff] = dc_field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "diffs"}
        d["diffs"] = [x.to_json() for x in self.diffs]
        return d


def _influx_literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _evidence_points(
    result: VerificationResult, start_ns: int, end_ns: int
) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    """What the evidence says InfluxDB must hold, in the collector's schema (collector/ingest)."""
    info = {g.gateway: g for g in result.gateways}
    out: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for m in result.messages:
        g = info.get(m.gateway)
        for r in m.readings:
            t_ns = round(r.time * 1e9)
            if not start_ns <= t_ns <= end_ns:
                continue
            point: dict[str, Any] = {"seq": m.seq, "unit": r.unit,
                                     "farm": g.farm if g else None,
                                     "field": g.field if g else None}
            if r.value is None:
                point["missing"] = r.missing_reason
            else:
                point["value"] = r.value
            out[(r.quantity, m.gateway, r.sensor, t_ns)] = point
    return out


@dataclass(frozen=True)
class InfluxAuth:
    """Credentials for ``--against-influx``: an InfluxDB 1.x user and password (sent as HTTP
    Basic authentication, which every 1.x accepts, so they never appear in a URL or a server
    log) or an InfluxDB 2.x/3.x API token (``Authorization: Token …``). The secrets are kept
    out of ``repr`` and scrubbed from every message the comparison produces."""

    username: str | None = None
    password: str | None = dc_field(default=None, repr=False)
    token: str | None = dc_field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not None and self.username is not None:
            raise UsageError("give an InfluxDB 1.x user and password, or a 2.x token "
                             "(FIELDPROOF_INFLUX_TOKEN), not both")
        if (self.username is None) != (self.password is None):
            raise UsageError("an InfluxDB user needs a password (FIELDPROOF_INFLUX_PASSWORD or "
                             "--influx-password-file) and a password needs --influx-user")

    def secrets(self) -> tuple[str, ...]:
        return tuple(x for x in (self.password, self.token) if x)

    def request_kwargs(self) -> dict[str, Any]:
        import httpx

        if self.token is not None:
            return {"headers": {"Authorization": f"Token {self.token}"}}
        if self.username is not None and self.password is not None:
            return {"auth": httpx.BasicAuth(self.username, self.password)}
        return {}


def _userinfo(url: str) -> str:
    """Whatever stands between ``scheme://`` and the last ``@`` of ``url``: credentials, even
    when they hold characters (``#``, ``/``, ``?``) that make the URL itself unparsable."""
    start, at = url.find("://"), url.rfind("@")
    return url[start + 3:at] if 0 <= start < at else ""


def _redact_url(url: str) -> str:
    """``url`` without user info (``http://user:pass@host``) or credential parameters."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    info = _userinfo(url)
    if info:
        url = url.replace(info + "@", "", 1)
    try:
        parts = urlsplit(url)
        query = urlencode([(k, "***" if k.lower() in ("p", "u", "password", "token") else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)])
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "(an unparsable URL)"


def _scrub(text: str, url: str, auth: InfluxAuth | None) -> str:
    """``text`` with the URL's credentials and the secrets blanked, for messages and JSON."""
    from urllib.parse import unquote

    secrets = list(auth.secrets() if auth else ())
    info = _userinfo(url)
    if info:
        password = info.split(":", 1)[-1]
        # and the pieces a URL parser may quote back when the credentials break the URL
        pieces = [p for p in re.split(r"[:#/?@\[\]]", info) if len(p) >= 3]
        secrets += [info, unquote(info), password, unquote(password), *pieces]
    text = text.replace(url, _redact_url(url))
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _influx_rows(url: str, database: str, query: str, timeout: float,
                 auth: InfluxAuth | None = None) -> Iterable[tuple[str, dict[str, Any]]]:
    """(measurement, row) for every row of a chunked InfluxQL answer (any InfluxDB with /query)."""
    import json

    import httpx

    params = {"db": database, "q": query, "epoch": "ns", "chunked": "true",
              "chunk_size": "20000"}
    extra = auth.request_kwargs() if auth is not None else {}
    try:
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError):
        # not echoed: the parser's complaint may quote a piece of the credentials
        raise ValueError("the --against-influx URL is not a valid URL (credentials in it must "
                         "be percent-encoded; better, use --influx-user)") from None
    with httpx.stream("GET", f"{url.rstrip('/')}/query", params=params, timeout=timeout,
                      **extra) as r:
        if r.status_code in (401, 403):
            raise ValueError(
                f"InfluxDB refused the query (HTTP {r.status_code}): "
                + ("check --influx-user and its password, or FIELDPROOF_INFLUX_TOKEN"
                   if auth is not None and (auth.username or auth.token) else
                   "it needs credentials: --influx-user with FIELDPROOF_INFLUX_PASSWORD or "
                   "--influx-password-file (1.x), or FIELDPROOF_INFLUX_TOKEN (2.x)"))
        if r.status_code != 200:
            raise ValueError(f"InfluxDB answered HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.strip():
                continue
            doc = json.loads(line)
            if "error" in doc:
                raise ValueError(f"InfluxDB error: {doc['error']}")
            for res in doc.get("results", []):
                if "error" in res:
                    raise ValueError(f"InfluxQL error: {res['error']}")
                for series in res.get("series", []):
                    cols = series.get("columns", [])
                    for values in series.get("values", []):
                        yield str(series.get("name")), dict(zip(cols, values, strict=False))


def check_against_influx(
    result: VerificationResult, url: str, database: str, *, timeout: float = 60.0,
    auth: InfluxAuth | None = None,
) -> InfluxComparison:
    """Compare the operator's InfluxDB with what the evidence proves; every changed, added or
    deleted reading point becomes part of the result (and an error finding). ``auth``: the
    database's credentials; they never appear in the result, its messages or its JSON."""
    cmp = InfluxComparison(_redact_url(url), database)
    result.influx = cmp
    out = Findings()
    start, end = result.scope.get("from"), result.scope.get("to")
    if start is None or end is None:
        cmp.error = "the bundle could not be read, so there is nothing to compare"
        return cmp
    start_ns, end_ns = math.ceil(start * 1e9), math.floor(end * 1e9)
    expected = _evidence_points(result, start_ns, end_ns)
    cmp.evidence_points = len(expected)
    conds = [f'"gateway" = {_influx_literal(g.gateway)}' for g in result.gateways]
    farm, fld = result.scope.get("farm"), result.scope.get("field")
    if farm:
        conds.append(f'"farm" = {_influx_literal(farm)}' +
                     (f' AND "field" = {_influx_literal(fld)}' if fld else ""))
    if not conds:
        cmp.error = "no gateway in scope to compare"
        return cmp
    query = (f"SELECT * FROM /.*/ WHERE ({' OR '.join(f'({c})' for c in conds)}) "  # noqa: S608
             f"AND time >= {start_ns} AND time <= {end_ns}")
    gateway_filter = result.scope.get("gateway")
    ours = {g.gateway for g in result.gateways}
    ours_points = 0  # the database's points of the bundle's own gateways
    seen: set[tuple[str, str, str, int]] = set()

    def note(d: PointDiff) -> None:
        if len(cmp.diffs) < MAX_LISTED_DIFFS:
            cmp.diffs.append(d)

    try:
        for measurement, row in _influx_rows(url, database, query, timeout, auth):
            if measurement in _NOT_READINGS:
                continue
            gw, sensor, t_ns = row.get("gateway"), row.get("sensor"), row.get("time")
            if not isinstance(gw, str) or type(t_ns) is not int:
                continue
            if gateway_filter and gw != gateway_filter:
                continue
            cmp.database_points += 1
            ours_points += gw in ours
            key = (measurement, gw, str(sensor), t_ns)
            got = {k: row.get(k) for k in ("seq", "unit", "farm", "field", "value", "missing")}
            got = {k: v for k, v in got.items() if v is not None}
            want = expected.get(key)
            if want is None or key in seen:
                cmp.added += 1
                note(PointDiff("added", measurement, gw, str(sensor), t_ns, tuple(sorted(got)),
                               None, got))
                continue
            seen.add(key)
            norm = {k: v for k, v in want.items() if v not in (None, "")}
            differ = tuple(sorted(
                k for k in set(norm) | set(got)
                if not _same(norm.get(k), got.get(k))
            ))
            if differ:
                cmp.changed += 1
                note(PointDiff("changed", measurement, gw, str(sensor), t_ns, differ, norm, got))
            else:
                cmp.matched += 1
    except Exception as exc:  # unreachable, not InfluxDB, garbage: report, never crash
        cmp.error = _scrub(f"could not read InfluxDB at {url}: {type(exc).__name__}: {exc}",
                           url, auth)
        out.add(FindingCode.INFLUX_UNREADABLE, cmp.error)
    else:
        if expected and not ours_points:
            # not one point of these gateways: another database, not every point deleted
            cmp.error = _scrub(
                f"no points of these gateways in database {database!r} at {url} "
                f"({', '.join(sorted(ours)[:5])}{', …' if len(ours) > 5 else ''}; the evidence "
                f"proves {len(expected):,} reading point(s) between {fmt_time(start)} and "
                f"{fmt_time(end)}): wrong database? Check --database and the URL; only if "
                "this is the collector's database were all of them deleted", url, auth)
            cmp.diffs.clear()
            cmp.added = 0
            out.add(FindingCode.INFLUX_NO_POINTS, cmp.error)
            expected = {}
        for key, want in expected.items():
            if key not in seen:
                cmp.deleted += 1
                note(PointDiff("deleted", key[0], key[1], key[2], key[3], tuple(sorted(want)),
                               want, None))
        for kind, code, n in (("changed", FindingCode.INFLUX_CHANGED, cmp.changed),
                              ("added", FindingCode.INFLUX_ADDED, cmp.added),
                              ("deleted", FindingCode.INFLUX_DELETED, cmp.deleted)):
            if n:
                example = next(d for d in cmp.diffs if d.kind == kind)
                out.add(code,
                        f"{n:,} reading point(s) in InfluxDB {database} were {kind} compared "
                        f"with the evidence, e.g. {example.measurement} of {example.gateway}/"
                        f"{example.sensor} at {fmt_time(example.time_ns / 1e9)}"
                        + (f" ({', '.join(example.fields)})" if kind == "changed" else ""))
    result.findings = sorted(result.findings + out.items,
                             key=lambda f: ("error", "warning", "info").index(f.severity))
    if any(f.severity == "error" for f in out.items):
        result.verdict = "fail"
    return cmp


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return bool(a == b)
