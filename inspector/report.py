"""The inspector's report of a verification: HTML (inline SVG charts, no external resources),
a PDF of the same page, and JSON.

Everything shown comes from :class:`inspector.verify.VerificationResult` (or, for several
bundles, :class:`inspector.combine.MultiResult`: one verdict, the charts and gaps of the
union of the verified readings, then each bundle's log, checkpoints and anchors): the charts
draw only readings whose message verified, so what an inspector hands on is what the evidence
proves.
Every string from the bundle is escaped (a bundle is hostile input, so is its farm name).
"""

from __future__ import annotations

import html
import importlib
import json
import math
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from anchor.chain_reader import explorer_url, network_label
from inspector.verify import (
    AnchorCheck,
    CheckpointSummary,
    GatewaySummary,
    VerificationResult,
    gateway_of,
    readings_in_scope,
)

if TYPE_CHECKING:
    from inspector.combine import MultiResult

__all__ = [
    "ReportFiles",
    "render_html",
    "render_multi_html",
    "write_json",
    "write_pdf",
    "write_report",
]

VERDICT_COLORS = {"pass": "#1a7f37", "warn": "#b35900", "fail": "#cf222e"}
VERDICT_LABELS = {"pass": "PASS", "warn": "PASS WITH WARNINGS", "fail": "FAIL"}
SEVERITY_COLORS = {"error": "#cf222e", "warning": "#b35900", "info": "#57606a"}
PALETTE = ("#0969da", "#bf3989", "#1a7f37", "#8250df", "#b35900", "#1b7c83", "#6e7781",
           "#a40e26")
QUANTITY_ORDER = ("soil_moisture", "soil_temperature", "air_temperature", "air_humidity",
                  "soil_ec")
TITLES = {
    "soil_moisture": "Soil moisture",
    "soil_temperature": "Soil temperature",
    "air_temperature": "Air temperature",
    "air_humidity": "Air humidity",
    "soil_ec": "Soil electrical conductivity",
}
#: SenML unit → (the unit agronomists read, the factor from the signed value to it). The
#: evidence keeps SenML units; only the report converts, and says so under the charts.
DISPLAY_UNITS: dict[str, tuple[str, float]] = {
    "/": ("%", 100.0),  # a ratio; soil moisture's is volumetric water content (%VWC)
    "Cel": ("°C", 1.0),
    "%RH": ("% RH", 1.0),
    "S/m": ("dS/m", 10.0),  # 1 S/m = 10 dS/m
    "Pa": ("kPa", 0.001),
    "hPa": ("kPa", 0.1),
    "kPa": ("kPa", 1.0),
    "lx": ("lx", 1.0),
}
#: the conversions named in the report, so a reader can go back to the signed values
CONVERSION_NOTES = {
    "/": "m³/m³ × 100 = %VWC (any ratio × 100 = %)",
    "S/m": "S/m × 10 = dS/m",
    "Pa": "Pa ÷ 1000 = kPa",
    "hPa": "hPa ÷ 10 = kPa",
}
#: 1970-era times come from a gateway without a clock or an open-ended export, never a period
PLAUSIBLE_PERIOD_START = 1_577_836_800.0  # 2020-01-01
MAX_POINTS_PER_SERIES = 1200


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _t(ts: float | None, fmt: str = "%Y-%m-%d %H:%M:%S UTC") -> str:
    if ts is None or not math.isfinite(ts):
        return "–"
    try:
        return time.strftime(fmt, time.gmtime(ts))
    except (OverflowError, OSError, ValueError):
        return f"{ts:.0f}"


# ----------------------------------------------------------------------------- charts


@dataclass
class _Series:
    label: str
    color: str
    points: list[tuple[float, float]]
    missing: list[float]
    breaks: tuple[float, ...] = ()  # the line stops across these times (missing messages)


def _segments(points: list[tuple[float, float]], breaks: Sequence[float],
              ) -> list[list[tuple[float, float]]]:
    """Split a series where a gap lies between two points, so no line bridges missing data."""
    segments: list[list[tuple[float, float]]] = [[]]
    for p in points:
        last = segments[-1][-1] if segments[-1] else None
        if last is not None and any(last[0] < b <= p[0] for b in breaks):
            segments.append([])
        segments[-1].append(p)
    return [seg for seg in segments if seg]


def display_unit(quantity: str, unit: str) -> tuple[str, float]:
    """The unit a quantity is shown in and the factor from its SenML value (soil moisture in
    %VWC, EC in dS/m, pressure in kPa); units we do not know are shown as signed."""
    shown, factor = DISPLAY_UNITS.get(unit, (unit or "–", 1.0))
    if unit == "/" and "moisture" in quantity:
        shown = "%VWC"
    return shown, factor


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round-number ticks covering [lo, hi]: a step of 1, 2 or 5 × 10ⁿ giving about
    ``count`` intervals, the first tick at or below ``lo`` and the last at or above ``hi``,
    so the axis starts and ends on a labelled round number."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0, 1.0]
    if hi - lo < 1e-12 * max(1.0, abs(lo), abs(hi)):
        lo, hi = lo - 1.0, hi + 1.0
    raw = (hi - lo) / count
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw * (1 - 1e-9))
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [round(k * step, decimals) for k in range(first, last + 1)]


def tick_label(value: float, ticks: Sequence[float]) -> str:
    """A tick's label with as many decimals as the step needs (0.1, 0.2 … never 0.30000004)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(abs(step)) + 1e-9)) if step else 0
    return f"{value:.{decimals}f}"


#: time steps (seconds) a time axis may use: whole seconds, minutes, hours and days
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600,
              6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400,
              56 * 86400, 91 * 86400, 182 * 86400, 364 * 86400)


def time_step(span: float, count: int = 6) -> int:
    """The smallest step of :data:`TIME_STEPS` giving at most ``count`` intervals over
    ``span`` seconds (decades, e.g. a clockless gateway's 1970 readings: 364-day multiples)."""
    span = max(span, 1.0)
    step = next((s for s in TIME_STEPS if span / s <= count), None)
    if step is None:
        step = math.ceil(span / count / TIME_STEPS[-1]) * TIME_STEPS[-1]
    return step


def time_ticks(t_lo: float, t_hi: float, count: int = 6) -> list[float]:
    """Ticks at whole seconds, minutes, hours or days (UTC) inside [t_lo, t_hi]: the smallest
    step from :data:`TIME_STEPS` giving at most ``count`` intervals over the span. The axis
    keeps the data's own span (the chart uses its full width); the ticks fall on round times."""
    step = time_step(t_hi - t_lo, count)
    first = math.ceil(t_lo / step - 1e-9) * step
    return [float(t) for t in range(first, math.floor(t_hi) + 1, step)]


def _time_label(t: float, step: float, previous: float | None) -> tuple[str, str]:
    """(time, date) label of one tick; the date only where it changes."""
    day = _t(t, "%Y-%m-%d")
    new_day = previous is None or _t(previous, "%Y-%m-%d") != day
    if step >= 86400:
        return _t(t, "%m-%d"), (_t(t, "%Y") if previous is None or
                                _t(previous, "%Y") != _t(t, "%Y") else "")
    fmt = "%H:%M:%S" if step < 60 else "%H:%M"
    return _t(t, fmt), day if new_day else ""


def _downsample(points: list[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """Keep each bucket's min and max so peaks and dips survive thinning."""
    if len(points) <= limit:
        return points
    buckets = max(1, limit // 2)
    t0, t1 = points[0][0], points[-1][0]
    width = (t1 - t0) / buckets or 1.0
    groups: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for p in points:
        groups[min(buckets - 1, int((p[0] - t0) / width))].append(p)
    out: list[tuple[float, float]] = []
    for k in sorted(groups):
        g = groups[k]
        lo, hi = min(g, key=lambda p: p[1]), max(g, key=lambda p: p[1])
        out.extend(sorted({lo, hi}))
    return out


#: chart size in CSS px: the width of an A4 page's text (180 mm), so print is 1:1
CHART_W, CHART_H = 680, 210


def _chart(title: str, unit: str, series: Sequence[_Series],
           gaps: Sequence[tuple[float, float, str]], t_lo: float, t_hi: float) -> str:
    """One quantity's chart as inline SVG, as wide as the page, with round-number ticks."""
    w, h = CHART_W, CHART_H
    left, right, top, bottom = 46, 8, 28, 42
    pw, ph = w - left - right, h - top - bottom
    values = [v for s in series for _, v in s.points]
    v_ticks = nice_ticks(min(values), max(values)) if values else nice_ticks(0.0, 1.0)
    v_lo, v_hi = v_ticks[0], v_ticks[-1]
    if t_hi - t_lo < 1.0:
        t_lo, t_hi = t_lo - 30.0, t_hi + 30.0
    t_ticks = time_ticks(t_lo, t_hi)

    def x(t: float) -> float:
        return left + (t - t_lo) / (t_hi - t_lo) * pw

    def y(v: float) -> float:
        return top + (1 - (v - v_lo) / (v_hi - v_lo)) * ph

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
        f'width="100%" preserveAspectRatio="xMinYMin meet" role="img" '
        f'aria-label="{_e(title)}">',
        f'<text x="0" y="14" font-size="12" font-weight="600" fill="#1f2328">'
        f"{_e(title)} ({_e(unit)})</text>",
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#ffffff" '
        'stroke="#d0d7de"/>',
    ]
    for a, b, label in gaps:
        xa, xb = max(left, x(a)), min(left + pw, x(b))
        if xb > xa:
            parts.append(
                f'<rect class="gap" x="{xa:.1f}" y="{top}" width="{max(1.5, xb - xa):.1f}" '
                f'height="{ph}" fill="#cf222e" fill-opacity="0.16"><title>{_e(label)}</title>'
                "</rect>")
    for v in v_ticks:
        yy = y(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     'stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 5}" y="{yy + 3.5:.1f}" text-anchor="end" '
                     f'font-size="10" fill="#57606a">{tick_label(v, v_ticks)}</text>')
    step = time_step(t_hi - t_lo)
    previous: float | None = None
    for t in t_ticks:
        xx = x(t)
        parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top}" y2="{top + ph + 4}" '
                     'stroke="#eaeef2"/>')
        clock, day = _time_label(t, step, previous)
        previous = t
        anchor = ("start" if xx - left < 30 else "end" if left + pw - xx < 30
                  else "middle")
        parts.append(f'<text x="{xx:.1f}" y="{top + ph + 15}" text-anchor="{anchor}" '
                     f'font-size="10" fill="#57606a">{_e(clock)}</text>')
        if day:
            parts.append(f'<text x="{xx:.1f}" y="{top + ph + 27}" text-anchor="{anchor}" '
                         f'font-size="10" fill="#57606a">{_e(day)}</text>')
    for s in series:
        for pts in _segments(_downsample(s.points, MAX_POINTS_PER_SERIES), s.breaks):
            if len(pts) == 1:
                px, py = x(pts[0][0]), y(pts[0][1])
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{s.color}"/>')
            else:
                path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
                parts.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="1.4" '
                             f'points="{path}"><title>{_e(s.label)}</title></polyline>')
        for t in s.missing[:500]:
            xx = x(t)
            parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top + ph - 8}" '
                         f'y2="{top + ph}" stroke="#cf222e" stroke-width="1.5"/>')
    parts.append(f'<text x="{left + pw}" y="{h - 2}" text-anchor="end" font-size="10" '
                 'fill="#57606a">time (UTC)</text>')
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><i style="background:{s.color}"></i>{_e(s.label)}</span>'
        for s in series
    )
    return f'<figure>{"".join(parts)}<figcaption>{legend}</figcaption></figure>'


def _charts(result: VerificationResult) -> str:
    gw_info = {g.gateway: g for g in result.gateways}
    # (farm, field) -> quantity -> (gateway, sensor) -> points / missing
    data: dict[tuple[str, str], dict[str, dict[tuple[str, str], _Series]]] = defaultdict(dict)
    units: dict[str, str] = {}
    colors: dict[tuple[str, str], str] = {}
    for m, r in readings_in_scope(result):
        g = gw_info.get(m.gateway)
        place = ((g.farm or "?") if g else "?", (g.field or "?") if g else "?")
        key = (m.gateway, r.sensor)
        if key not in colors:
            colors[key] = PALETTE[len(colors) % len(PALETTE)]
        per_q = data[place].setdefault(r.quantity, {})
        s = per_q.get(key)
        if s is None:
            breaks = tuple(gap.before_time for gap in g.gaps) if g else ()
            s = per_q[key] = _Series(f"{m.gateway} / {r.sensor}", colors[key], [], [], breaks)
        units.setdefault(r.quantity, r.unit)
        if r.value is None:
            s.missing.append(r.time)
        elif math.isfinite(r.value):  # the scale would not hold an infinite value
            s.points.append((r.time, r.value * display_unit(r.quantity, r.unit)[1]))
    if not data:
        return "<p>No verified readings in this period: nothing to draw.</p>"
    out = []
    for (farm, fld), quantities in sorted(data.items()):
        gws = {gw for q in quantities.values() for gw, _ in q}
        gaps = [
            (gap.after_time, gap.before_time,
             f"{g.gateway}: seq {gap.first_missing}–{gap.last_missing} missing")
            for g in result.gateways if g.gateway in gws for gap in g.gaps
        ]
        times = [t for q in quantities.values() for s in q.values()
                 for t in [p[0] for p in s.points] + s.missing]
        t_lo, t_hi = min(times), max(times)
        out.append(f"<h3>Farm {_e(farm)} · field {_e(fld)}</h3>")
        order = [q for q in QUANTITY_ORDER if q in quantities] + sorted(
            q for q in quantities if q not in QUANTITY_ORDER)
        for q in order:
            series = []
            for s in sorted(quantities[q].values(), key=lambda s: s.label):
                s.points.sort()
                series.append(s)
            out.append(_chart(TITLES.get(q, q.replace("_", " ").capitalize()),
                              display_unit(q, units.get(q, ""))[0], series, gaps, t_lo, t_hi))
    notes = sorted({CONVERSION_NOTES[u] for u in units.values() if u in CONVERSION_NOTES})
    if notes:
        out.append('<p class="muted">Shown in the units agronomists read; the evidence '
                   f"holds SenML units: {_e('; '.join(notes))}.</p>")
    return "\n".join(out)


# ----------------------------------------------------------------------------- period


def period_of(result: VerificationResult) -> tuple[float | None, float | None, str]:
    """(start, end, where they come from) of the period the report covers.

    The bundle's scope when it names real times; an open bound (an export "from 0", a
    1970 clock) is replaced by the first or last verified reading in the scope, and the
    text says so, so the report never claims a period starting in 1970."""
    scope = result.scope
    start, end = _plausible(scope.get("from")), _plausible(scope.get("to"))
    if start is not None and end is not None and end >= start:
        return start, end, "the bundle's scope"
    times = [r.time for _, r in readings_in_scope(result) if _plausible(r.time) is not None]
    first, last = (min(times), max(times)) if times else (None, None)
    if start is None and end is None:
        return first, last, ("first to last verified reading (the bundle's scope is open)"
                             if times else "no verified reading, and the bundle's scope is open")
    if start is None:
        return first, end, "first verified reading to the end of the bundle's scope"
    return start, last, "start of the bundle's scope to the last verified reading"


def _plausible(ts: object) -> float | None:
    """``ts`` as a time when it can be a period's bound (2020 to the year 3000), else None."""
    in_range = (isinstance(ts, int | float) and math.isfinite(ts)
                and PLAUSIBLE_PERIOD_START <= ts < 32_503_680_000)
    return float(ts) if in_range and isinstance(ts, int | float) else None


def _period(result: VerificationResult) -> str:
    start, end, source = period_of(result)
    return f'{_e(_t(start))} – {_e(_t(end))} <span class="muted">({_e(source)})</span>'


# ----------------------------------------------------------------------------- sections


def _rows(rows: Iterable[Sequence[str]]) -> str:
    return "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{_rows(rows)}</tbody></table>'


def _findings(result: VerificationResult) -> str:
    return _finding_table(result.findings, with_bundles=False)


def _finding_table(findings: Sequence[Any], with_bundles: bool) -> str:
    if not findings:
        return "<p>No findings: every check passed.</p>"
    rows = []
    for f in findings:
        badge = (f'<span class="badge" style="background:{SEVERITY_COLORS[f.severity]}">'
                 f"{_e(f.severity)}</span>")
        row = [badge, f"<code>{_e(f.code)}</code>", _e(f.gateway or "")]
        if with_bundles:
            row.append("<br>".join(_e(b) for b in f.bundles))
        row.append(_e(f.message) + (f" ({f.count:,})" if f.count > 1 else ""))
        rows.append(row)
    head = ("severity", "finding", "gateway", *(("bundle(s)",) if with_bundles else ()),
            "what it means")
    return _table(head, rows, "findings")


def _gateways(result: VerificationResult) -> str:
    def row(g: GatewaySummary) -> tuple[str, ...]:
        clock = ", ".join(f"{k} {v}" for k, v in sorted(g.clock.items())) or "none"
        key = (f"<code>{_e(g.public_key[:16])}…</code> @ {g.enrolled_index}"
               if g.public_key else '<b class="bad">not enrolled in the evidence</b>')
        if g.revoked_index is not None:
            key += f"<br>revoked @ {g.revoked_index}"
        seqs = "–" if g.first_seq is None else f"{g.first_seq}–{g.last_seq}"
        return (f"<code>{_e(g.gateway)}</code>", _e(g.farm or "?"), _e(g.field or "?"),
                f"{g.verified_messages:,} / {g.messages:,}", f"{g.readings:,}",
                f"{g.missing_values:,}", seqs,
                f"{len(g.gaps)} ({g.missing_messages:,} msg)", f"{g.outside_anchored:,}",
                _e(clock), _gateway_completeness(g), key)

    return _table(("gateway", "farm", "field", "messages verified / in bundle", "readings",
                   "missing values", "seq", "gaps", "outside anchored range",
                   "clock anomalies", "evidence complete", "enrolled key (log index)"),
                  [row(g) for g in result.gateways], "gateways")


def _gateway_completeness(g: GatewaySummary) -> str:
    """One gateway's completeness cell: what the signed claim says and whether it held."""
    c = g.claim
    if not g.completeness:
        return '<span class="warn">unproven</span>'
    if g.completeness != "complete":
        return f'<b class="bad">{_e(g.completeness.upper())}</b>'
    if c is None or c.from_seq is None:
        return '<span class="ok">yes</span> (no message in the log yet)'
    return (f'<span class="ok">yes</span>: seq {c.from_seq}–{c.to_seq}, {c.count:,} msg '
            f"(log: {c.first_seq}–{c.latest_seq})")


def _completeness(result: VerificationResult) -> str:
    c = result.completeness
    css = {"complete": "ok", "unproven": "warn"}.get(c.status, "bad")
    return f'<span class="{css}">{_e(c.line())}</span>'



def _gap_list(result: VerificationResult) -> str:
    rows = [
        (f"<code>{_e(g.gateway)}</code>", f"{gap.first_missing}–{gap.last_missing}",
         f"{gap.size:,}", _e(_t(gap.after_time)), _e(_t(gap.before_time)),
         _e(f"{(gap.before_time - gap.after_time) / 60:.1f} min"))
        for g in result.gateways for gap in g.gaps
    ]
    if not rows:
        return "<p>No sequence gaps: every gateway's messages are consecutive.</p>"
    return _table(("gateway", "missing seq", "messages", "after", "before", "span"), rows)


def _anchor_status(c: CheckpointSummary, a: AnchorCheck, offline: bool) -> str:
    if offline:
        return '<span class="warn">claimed (not checked: offline)</span>'
    if not a.checked:
        return '<span class="muted">not checked (other chain)</span>'
    if a.verified:
        return '<span class="ok">verified, final</span>'
    return '<span class="bad">FAILED</span>'


def _anchors(result: VerificationResult) -> str:
    rows = []
    for c in result.checkpoints:
        cp = f"#{c.position} size {c.size if c.size is not None else '?'}"
        root = f"<code>{_e((c.root or '?')[:16])}…</code>"
        valid = ('<span class="ok">signature ok</span>' if c.valid
                 else f'<span class="bad">invalid: {_e(c.problem[:200])}</span>')
        link = {True: "✓", False: '<span class="bad">✗ not consistent</span>', None: "–"}[
            c.consistent_with_next]
        if not c.anchors:
            rows.append((cp, root, valid, link, "–", "<i>not anchored</i>", "–", "–", "–"))
        for a in c.anchors:
            tx = f"<code>{_e(a.ref.tx)}</code>"
            url = explorer_url(a.ref.chain, a.ref.network, a.ref.tx)
            if url:
                tx = f'<a href="{_e(url)}">{tx}</a>'
            net = _e(network_label(a.ref.chain, a.ref.network, a.ref.genesis))
            nodes = "<br>".join(
                _e(f"{n.node}: {'ok' if n.ok else n.detail[:160]}") for n in a.answers)
            block_time = a.block_time if a.block_time is not None else a.ref.block_time
            rows.append((cp, root, valid, link, net, tx,
                         f"{a.ref.block_number:,}<br><code>{_e(a.ref.block_id[:18])}…</code>",
                         _e(_t(block_time)),
                         _anchor_status(c, a, result.offline) + (f"<br>{nodes}" if nodes else "")))
    if not rows:
        return "<p>The bundle has no checkpoints.</p>"
    return _table(("checkpoint", "root", "signature", "consistent with next", "chain",
                   "transaction", "block", "block time", "status"), rows, "anchors")


def _influx(result: VerificationResult) -> str:
    cmp = result.influx
    if cmp is None:
        return ""
    out = ["<h2>Operator's database compared with the evidence</h2>"]
    if cmp.error:
        out.append(f'<p class="bad">{_e(cmp.error)}</p>')
        return "".join(out)
    out.append(
        f"<p>InfluxDB <code>{_e(cmp.url)}</code> database <code>{_e(cmp.database)}</code>: "
        f"{cmp.database_points:,} points in scope, {cmp.evidence_points:,} proven by the "
        f"evidence; {cmp.matched:,} identical, <b>{cmp.changed:,} changed</b>, "
        f"<b>{cmp.added:,} added</b> (not proven), <b>{cmp.deleted:,} deleted</b>.</p>")
    if cmp.diffs:
        rows = [(_e(d.kind), _e(d.measurement), f"<code>{_e(d.gateway)}</code>", _e(d.sensor),
                 _e(_t(d.time_ns / 1e9)), _e(", ".join(d.fields)),
                 _e(json.dumps(d.evidence)), _e(json.dumps(d.database)))
                for d in cmp.diffs]
        out.append(_table(("difference", "measurement", "gateway", "sensor", "time", "fields",
                           "evidence", "database"), rows, "influx"))
        if cmp.changed + cmp.added + cmp.deleted > len(cmp.diffs):
            out.append(f"<p>… and {cmp.changed + cmp.added + cmp.deleted - len(cmp.diffs):,} "
                       "more (see the JSON result).</p>")
    return "".join(out)


# ----------------------------------------------------------------------------- checks on request
# Each section below is shown only when its check ran; it says what was checked, against what,
# and the outcome, in plain words. The finding codes stay in the findings table.


def _names(names: Sequence[str]) -> str:
    return _e(", ".join(names)) if names else '<span class="muted">none</span>'


def _cp_label(position: object, size: object) -> str:
    return f"#{_e(position)} size {_e(size if size is not None else '?')}"


def _policy(result: VerificationResult, h: str = "h2") -> str:
    """``--policy``: per checkpoint, which witnesses cosigned, which are missing, whether the
    quorum is met and whether the checkpoint counts."""
    p = result.policy
    if p is None:
        return ""
    cps: list[dict[str, Any]] = p["checkpoints"]
    if p["require_quorum"]:
        rule = "only witnesses' cosignatures count (--require-quorum), not anchors"
    elif result.offline:
        rule = ("a verified, final anchor would count too, but anchors were not checked "
                "(offline)")
    else:
        rule = "a checkpoint with a verified, final anchor counts too"
    status = p["status"]
    if status == "met":
        proving = next((c for c in cps if c["position"] == p["proving"]), None)
        where = _cp_label(p["proving"], proving["size"] if proving else None)
        outcome = (f'<span class="ok">Quorum met</span>: checkpoint {where} counts, and every '
                   "checkpoint of the bundle is covered by one that counts.")
    elif status == "no_log":
        outcome = ('<b class="bad">No checkpoint is signed by a log of the policy</b>: under '
                   "this policy the bundle proves nothing. Check that the policy's log line "
                   "holds this log's published key.")
    else:
        bare = [c for c in cps if c["valid"] and not c["covered"]]
        outcome = ('<b class="bad">Quorum NOT met</b>: ' + (
            f"{len(bare)} checkpoint(s) count for nothing under the policy ("
            + ", ".join(_cp_label(c["position"], c["size"]) for c in bare)
            + "), and no later checkpoint that extends them does better: the entries they "
            "prove are not proven under your policy." if bare else
            "no checkpoint of the bundle is valid, so none can count."))
    rows = []
    for c in cps:
        cosigned = _names(c["signed"])
        if c["invalid"]:
            cosigned += f'<br><span class="bad">do not verify: {_names(c["invalid"])}</span>'
        if c["unknown_signatures"]:
            cosigned += (f'<br><span class="muted">{c["unknown_signatures"]} signature(s) by '
                         "keys the policy does not list</span>")
        if p["require_quorum"]:
            anchor = '<span class="muted">not counted (--require-quorum)</span>'
        elif c["anchored"]:
            anchor = '<span class="ok">verified, final</span>'
        else:
            anchor = ('<span class="muted">not checked (offline)</span>' if result.offline
                      else "no verified, final anchor")
        if not c["valid"]:
            counts = '<b class="bad">invalid checkpoint</b>'
        elif c["counts"]:
            counts = '<span class="ok">counts</span>'
        elif c["covered"]:
            counts = '<span class="ok">covered</span> by a later checkpoint that counts'
        else:
            counts = '<b class="bad">counts for nothing</b>'
        rows.append((
            _cp_label(c["position"], c["size"]),
            '<span class="ok">yes</span>' if c["signed_by_policy_log"]
            else f'<b class="bad">no</b>: {_e(str(c["problem"] or "")[:200])}',
            cosigned, _names(c["missing"]),
            '<span class="ok">met</span>' if c["quorum_met"] else '<b class="bad">not met</b>',
            anchor, counts))
    return (f"<{h}>Trust policy (--policy)</{h}>"
            f"<p>Checked every checkpoint of the bundle against your trust policy "
            f"({_e(p['policy'])}): a checkpoint counts as proof when a log of the policy signed "
            f"it and the witnesses of quorum <b>{_e(p['quorum'])}</b> cosigned it; {rule}.</p>"
            f"<p>{outcome}</p>"
            + (_table(("checkpoint", "signed by a log of the policy", "cosigned by",
                       "witnesses missing", "quorum", "anchor", "under the policy"), rows,
                      "policy") if rows else ""))


def _roots_signed(result: VerificationResult, size: int | None) -> list[tuple[str, str]]:
    """(where, root hex) of every checkpoint of the bundle and known checkpoint of ``size``."""
    if size is None:
        return []
    found = [(f"bundle checkpoint {c.position}", c.root) for c in result.checkpoints
             if c.valid and c.size == size and c.root]
    found += [(f"known checkpoint #{k.number}", k.root) for k in result.known_checkpoints
              if k.size == size and k.root and k.status != "invalid"]
    found += [(str(o["source"]), str(o["root"])) for o in result.outside_checkpoints
              if o["size"] == size and o["root"]]
    return [(where, root) for where, root in found if root is not None]


def _outside(result: VerificationResult, h: str = "h2") -> str:
    """``--mirror``, ``--witness-checkpoint``, ``--known-checkpoint``: which outside checkpoint
    was compared with the bundle's, and whether it is linked, or a fork (both roots named)."""
    views, known = result.outside_checkpoints, result.known_checkpoints
    if not views and not known:
        return ""
    rows = []
    for k in known:
        what = f"known checkpoint #{k.number} (--known-checkpoint)"
        detail = _e(k.detail[:300])
        outcome = {
            "linked": f'<span class="ok">linked</span>: {detail}, consistent with the bundle',
            "conflict": f'<b class="bad">CONFLICT</b>: {detail}',
            "unlinked": f'<span class="warn">not compared</span>: {detail}',
        }.get(k.status, f'<b class="bad">unusable</b>: {detail}')
        rows.append((_e(what), _e(k.size if k.size is not None else "?"),
                     f"<code>{_e((k.root or '?')[:16])}…</code>", outcome))
    for v in views:
        what = {"mirror": "", "witness": ""}.get(str(v["kind"]), f"{v['kind']}: ")
        what += str(v["source"])
        if v["cosigned_by"]:
            what += f", cosigned by {', '.join(v['cosigned_by'])}"
        detail = _e(str(v["detail"])[:300])
        status = v["status"]
        if status == "fork":
            others = [(where, root) for where, root in _roots_signed(result, v["size"])
                      if root != v["root"]]
            outcome = ('<b class="bad">LOG FORK</b>: the log key signed two histories. This '
                       f"view signs root <code>{_e(v['root'])}</code> for {_e(v['size'])} "
                       "entries" + ("; " + "; ".join(
                           f"{_e(where)} signs root <code>{_e(root)}</code>"
                           for where, root in others) if others else
                           ", and does not extend a smaller tree signed elsewhere")
                       + ". Keep both checkpoints as evidence.")
        elif status == "consistent":
            outcome = f'<span class="ok">linked</span>: {detail}'
        elif status == "unlinked":
            outcome = f'<span class="warn">not compared</span>: {detail}'
        else:
            outcome = f'<b class="bad">unusable</b>: {detail}'
        root = v["root"]
        rows.append((_e(what), _e(v["size"] if v["size"] is not None else "?"),
                     f"<code>{_e(str(root)[:16])}…</code>" if root else "–", outcome))
    forks = sum(1 for v in views if v["status"] == "fork") + sum(
        1 for k in known if k.status == "conflict")
    verdict = (f'<b class="bad">{forks} outside checkpoint(s) show another history</b>.'
               if forks else '<span class="ok">No other history was found</span> in what '
               "could be compared.")
    return (f"<{h}>Outside views of the log (split-view check)</{h}>"
            "<p>A log key could sign two different trees of one size, one shown to you and "
            "another to everybody else. The bundle's "
            f"{sum(1 for c in result.checkpoints if c.valid)} valid checkpoint(s) were "
            f"compared with {len(rows)} checkpoint(s) from outside the bundle: {verdict}</p>"
            + _table(("outside checkpoint", "size", "root", "outcome"), rows, "outside"))


def _all_anchors(result: VerificationResult, h: str = "h2") -> str:
    """``--all-anchors``: the block range read, whether the scan was complete, every anchor of
    the log found and how its root compares with the signed ones."""
    a = result.all_anchors
    if a is None:
        return ""
    chain = str(a["chain"])
    refs = [x.ref for c in result.checkpoints for x in c.anchors if x.ref.chain == chain]
    net = network_label(chain, refs[0].network, refs[0].genesis) if refs else chain
    head = f"<{h}>Every anchor of the log on chain (--all-anchors)</{h}>"
    nodes = ", ".join(a["nodes"]) or "none"
    if a["head"] is None:  # no node answered the scan
        return (head + f"<p>Asked {_e(net)} through {_e(nodes)} for every anchor of this log: "
                '<b class="bad">no node could be scanned</b>, so whether the chain holds other '
                "anchors of this log is not known (the findings say why).</p>")
    span = f"blocks {a['first_block']:,}–{a['last_block']:,}"
    if a["complete"]:
        done = '<span class="ok">complete</span>: every block of the range was read'
    else:
        why = str(a.get("detail") or "") or "its block budget"
        done = (f'<b class="warn">NOT complete</b>: the scan stopped at block '
                f"{a['last_block']:,} ({_e(why)}); run again with --from-block "
                f"{a['last_block'] + 1} to read the rest")
    ours = {n.sender.lower() for c in result.checkpoints for x in c.anchors for n in x.answers
            if n.ok and n.sender}
    found: list[dict[str, Any]] = a["anchors"]
    by = {s: sum(1 for x in found if x["status"] == s) for s in ("matches", "conflict",
                                                                 "unchecked")}
    rows = []
    for x in found:
        tx = f"<code>{_e(x['tx'])}</code>"
        url = explorer_url(chain, refs[0].network, str(x["tx"])) if refs else None
        if url:
            tx = f'<a href="{_e(url)}">{tx}</a>'
        sender = f"<code>{_e(x['sender'])}</code>"
        if str(x["sender"]).lower() in ours:
            sender += "<br>(the account that sent this bundle's anchors)"
        if x["status"] == "matches":
            outcome = '<span class="ok">matches</span> the signed root of that size'
        elif x["status"] == "conflict":
            signed = [(w, r) for w, r in _roots_signed(result, x["size"]) if r != x["root"]]
            outcome = ('<b class="bad">CONFLICT</b>: it anchors root '
                       f"<code>{_e(x['root'])}</code>, but " + "; ".join(
                           f"{_e(w)} signs root <code>{_e(r)}</code>" for w, r in signed)
                       if signed else '<b class="bad">CONFLICT</b>: another root than the '
                       "one signed for that size (see the findings)")
        else:
            outcome = '<span class="muted">not compared: no root known for that size</span>'
        rows.append((tx, f"{x['block_number']:,}" + ("" if x["final"] else
                                                       '<br><span class="warn">not final</span>'),
                     _e(_t(x["block_time"])), sender, _e(x["size"]),
                     f"<code>{_e(str(x['root'])[:16])}…</code>", outcome))
    summary = (f"{len(found)} anchor(s) of this log found: {by['matches']} match the signed "
               f"checkpoints, {by['conflict']} conflict, {by['unchecked']} could not be "
               "compared.")
    return (head + f"<p>Read every block of {_e(net)} through {_e(nodes)} for anchors of "
            f"this log, whoever sent them: {span} (the head was block "
            f"{_e(a['head'] if a['head'] is not None else '?')} when the scan began); {done}."
            f"</p><p>{summary}</p>"
            + (_table(("transaction", "block", "block time", "sender", "tree size", "root",
                       "outcome"), rows, "all-anchors") if rows else ""))


def _seal(result: VerificationResult, h: str = "h2") -> str:
    """The log's completeness seal: found at the proving checkpoint, or completeness not
    provable; per sealed gateway, the latest seq the log held against what the bundle holds."""
    s = result.seal
    if s is None:
        return ""
    status, size = s["status"], s["size"]
    farms = ", ".join(s["farms"]) or "none"
    text = {
        "sealed": f'<span class="ok">Seal found</span> at the proving checkpoint (tree size '
                  f"{_e(size)}, its last entry; farm(s) {_e(farms)}): every gateway of the "
                  "scope the seal lists, and the period's ends, are in the bundle.",
        "withheld": f'<b class="bad">Evidence WITHHELD</b>: by the log\'s seal at tree size '
                    f"{_e(size)}, evidence of "
                    + _e(", ".join(gw for gw, state in sorted(s["gateways"].items())
                                   if state != "complete"))
                    + " was left out (each gateway below, the findings say what).",
        "invalid": f'<b class="bad">The seal does not hold</b>: {_e(s["detail"])}. Nothing in '
                   "the log then shows the bundle is complete.",
    }.get(status, '<span class="warn">Completeness not provable</span>: the bundle carries no '
          "seal, so that no gateway, registry event or end of the period was left out rests "
          "on the operator's signed claim only (see the findings for why there is none).")
    rows = []
    summary = gateway_of(result)
    # the claim's first/latest seq equal the seal's whenever the claim was checked and the seal
    # held (else seal_claim_mismatch makes the seal invalid): the sealed latest seq is the claim's
    agreed = status in ("sealed", "withheld") and result.completeness.status != "invalid"
    for gw, state in sorted(s["gateways"].items()):
        g = summary(gw)
        sealed = (f"{g.claim.latest_seq}" if agreed and g is not None and g.claim is not None
                  and g.claim.latest_seq is not None else "–")
        held = ("nothing" if g is None or g.first_seq is None
                else f"seq {g.first_seq}–{g.last_seq} ({g.verified_messages:,} verified)")
        rows.append((f"<code>{_e(gw)}</code>",
                     '<span class="ok">complete</span>' if state == "complete"
                     else f'<b class="bad">{_e(str(state).upper())}</b>', _e(sealed), _e(held)))
    return (f"<{h}>The log's completeness seal</{h}>"
            "<p>Checked whether the bundle holds everything the log's own seal, written with "
            "the checkpoint before anyone knew what would be exported, says the log held for "
            f"this scope: {text}</p>"
            + (_table(("gateway", "by the seal", "latest seq in the log (sealed)",
                       "the bundle holds"), rows, "seal") if rows else ""))


def _checks_on_request(result: VerificationResult, h: str = "h2") -> str:
    """The sections of the checks that ran, in the order of docs/bundle.md §5 (3a, 4a, 4b,
    9)."""
    return "".join(section(result, h) for section in (_outside, _policy, _all_anchors, _seal))


def _unreadable(result: VerificationResult, h: str = "h2") -> str:
    """A bundle that cannot be read at all: the reason, and that nothing was checked."""
    return (f"<{h}>The bundle could not be read</{h}>"
            f'<p class="bad">{_e(result.unreadable)}</p>'
            "<p>Nothing in it was checked: not its log key, checkpoints, anchors, messages or "
            "readings, so this report shows no gateways, charts or anchors. Get the bundle "
            "again (copy or download it whole) and verify that.</p>")


_CSS = """
@page { size: A4; margin: 14mm 15mm 16mm 15mm;
        @bottom-right { content: "page " counter(page) " of " counter(pages);
                        font: 8pt "DejaVu Sans", Arial, sans-serif; color: #57606a; } }
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; color: #1f2328; margin: 0;
       font-size: 12px; }
main { padding: 16px 22px; }
.verdict { color: #fff; padding: 18px 22px; }
.verdict h1 { margin: 0 0 4px 0; font-size: 26px; letter-spacing: .5px; }
.verdict p { margin: 0; font-size: 13px; }
h2 { font-size: 16px; border-bottom: 1px solid #d0d7de; padding-bottom: 3px; margin-top: 22px;
     break-after: avoid; }
h3 { font-size: 14px; margin: 14px 0 4px; break-after: avoid; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
thead { display: table-header-group; }
tr { break-inside: avoid; }
th, td { border: 1px solid #d0d7de; padding: 3px 5px; text-align: left; vertical-align: top;
         overflow-wrap: break-word; }
th { background: #f6f8fa; font-weight: 600; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 11px; word-break: break-all; }
table.findings td:nth-child(2) code { white-space: nowrap; }  /* a code is one word */
.badge { color: #fff; border-radius: 3px; padding: 1px 5px; font-size: 11px; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
.warn { color: #b35900; font-weight: 600; } .muted { color: #57606a; font-weight: normal; }
figure { margin: 4px 0 12px; break-inside: avoid; }
svg.chart { display: block; width: 100%; height: auto; }
figcaption .key { margin-right: 14px; font-size: 11px; white-space: nowrap; }
figcaption .key i { display: inline-block; width: 14px; height: 4px; margin-right: 4px;
                    vertical-align: middle; }
dl.meta { display: grid; grid-template-columns: 180px auto; gap: 2px 10px; margin: 6px 0; }
dl.meta dt { color: #57606a; } dl.meta dd { margin: 0; }
@media print {
  body { font-size: 8.5pt; }
  main { padding: 0; }
  .verdict { padding: 10px 12px; }
  .verdict h1 { font-size: 18pt; }
  .verdict p { font-size: 9pt; }
  h2 { font-size: 11.5pt; margin-top: 14px; }
  h3 { font-size: 10pt; margin: 8px 0 2px; }
  table { font-size: 7.5pt; }
  th, td { padding: 2px 3px; }
  code, .badge, figcaption .key { font-size: 7pt; }
  dl.meta { grid-template-columns: 32mm auto; display: block; }
  dl.meta dt { float: left; clear: left; width: 32mm; }
  dl.meta dd { margin-left: 34mm; }
}
"""


def _log_key(result: VerificationResult) -> str:
    return f"<code>{_e(result.log_key)}</code> " + (
        '<span class="ok">(pinned by the inspector)</span>' if result.log_key_pinned
        else '<span class="warn">(taken from the bundle, not pinned)</span>')


def _combined_gateways(multi: MultiResult) -> str:
    rows = [
        (f"<code>{_e(g.gateway)}</code>", _e(g.farm or "?"), _e(g.field or "?"),
         f"{g.verified_messages:,}",
         "<br>".join(f"{_e(label)}: {n:,}" for label, n in g.bundles.items()),
         f"{g.readings:,}", "–" if g.first_seq is None else f"{g.first_seq}–{g.last_seq}",
         f"{len(g.gaps)} ({g.missing_messages:,} msg)", f"{g.logged_twice:,}",
         f'<span class="bad">{g.conflicts:,}</span>' if g.conflicts else "0")
        for g in multi.combined.gateways
    ]
    return _table(("gateway", "farm", "field", "distinct messages verified",
                   "held by bundle", "readings", "seq", "gaps over all bundles",
                   "logged twice", "conflicting"), rows, "gateways")


def render_multi_html(multi: MultiResult, *,
                      title: str = "fieldproof verification report") -> str:
    """The report of several bundles: one verdict, the findings (each naming its bundles),
    the gateways, charts and gaps of the union of the verified readings, then each bundle's
    own log, findings, gateways, checkpoints and anchors."""
    union = multi.union
    s = union.scope
    scope = ", ".join(f"{k} {s[k]}" for k in ("farm", "field", "gateway") if s.get(k)) or "all"
    meta = [
        ("Bundles", "<br>".join(
            f"{_e(b.label)}: log <code>{_e(b.result.origin or '(unreadable)')}</code> — "
            f'<span style="color:{VERDICT_COLORS[b.verdict]}">{VERDICT_LABELS[b.verdict]}'
            "</span>" for b in multi.bundles)),
        ("Scope (all bundles)", _e(scope)),
        ("Period (all bundles)", _period(union)),
        ("Chain", "not checked (offline)" if multi.offline else _e(multi.chain or "none")),
        ("Nodes asked", _e(", ".join(multi.nodes) or "none")),
        ("Verified at", _e(_t(multi.verified_at))),
    ]
    parts = []
    for n, b in enumerate(multi.bundles, 1):
        r = b.result
        bmeta = [("Evidence log", f"<code>{_e(r.origin or '(unreadable)')}</code>"),
                 ("Log key", _log_key(r)),
                 ("Scope", _e(", ".join(f"{k} {r.scope[k]}" for k in ("farm", "field",
                                                                     "gateway")
                                        if r.scope.get(k)) or "all")),
                 ("Period", _period(r)),
                 ("Messages", f"{len(r.messages):,} verified of {r.total_messages:,}; "
                              f"{r.verified_readings:,} readings; {r.registry_events} "
                              "registry events"),
                 ("Completeness", _completeness(r))]
        notes = "".join(f"<li>{_e(x)}</li>" for x in r.bundle_notes)
        heading = (f'<h2 id="bundle-{n}">Bundle {_e(b.label)}: '
                   f'<span style="color:{VERDICT_COLORS[b.verdict]}">'
                   f"{VERDICT_LABELS[b.verdict]}</span></h2>")
        if r.unreadable:
            parts.append(heading + _unreadable(r, "h3")
                         + f"<h3>Findings of this bundle</h3>{_findings_of(b.findings)}")
            continue
        parts.append(
            heading
            + f'<dl class="meta">{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in bmeta)}</dl>'
            + (f"<p>Exporter's notes (not evidence):</p><ul>{notes}</ul>" if notes else "")
            + f"<h3>Findings of this bundle</h3>{_findings_of(b.findings)}"
            f"<h3>Gateways in this log (gaps: what this log alone lacks)</h3>{_gateways(r)}"
            f"<h3>Checkpoints and anchors</h3>{_anchors(r)}" + _checks_on_request(r, "h3"))
    keys = " ".join(f"--log-key '{_e(b.result.log_key)}'" for b in multi.bundles
                    if b.result.log_key)
    body = f"""<div class="verdict" id="verdict" data-verdict="{multi.verdict}"
style="background:{VERDICT_COLORS[multi.verdict]}"><h1>{VERDICT_LABELS[multi.verdict]}</h1>
<p>{_e(multi.summary())}</p></div>
<main>
<dl class="meta">{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta)}</dl>
<h2>Findings</h2>{_finding_table(multi.all_findings(), with_bundles=True)}
<h2>Gateways over all bundles</h2>{_combined_gateways(multi)}
<h2>Crop history (verified readings of all bundles; red bands: messages missing from every
bundle, red ticks: missing values)</h2>
{_charts(union)}
<h2>Sequence gaps over all bundles</h2>{_gap_list(union)}
{_influx(union)}
{"".join(parts)}
<h2>Check it yourself</h2>
<p>Install fieldproof and run <code>fieldproof verify {" ".join(_e(b.label) for b in
multi.bundles)} {keys} {"--chain " + _e(multi.chain) if multi.chain else ""} --node URL
[--node URL …]</code> with chain nodes you choose. The bundle format is documented in
docs/bundle.md, so you can also write your own verifier.</p>
</main>"""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>")


def _findings_of(findings: Sequence[Any]) -> str:
    return _finding_table(findings, with_bundles=False)


def render_html(result: VerificationResult, *, title: str = "fieldproof verification report",
                standalone: bool = True) -> str:
    """The report as one HTML page with inline CSS and SVG; nothing is fetched from outside.

    ``standalone=False`` gives the body (and its styles) without the verdict banner, for a page
    that shows the verdict itself (the collector's inspector page)."""
    color = VERDICT_COLORS[result.verdict]
    s = result.scope
    scope = ", ".join(f"{k} {s[k]}" for k in ("farm", "field", "gateway") if s.get(k)) or "all"
    nodes = ", ".join(result.nodes) or "none"
    meta = [
        ("Scope", _e(scope)),
        ("Period", _period(result)),
        ("Evidence log", f"<code>{_e(result.origin)}</code>"),
        ("Log key", f"<code>{_e(result.log_key)}</code> " + (
            '<span class="ok">(pinned by the inspector)</span>' if result.log_key_pinned
            else '<span class="warn">(taken from the bundle, not pinned)</span>')),
        ("Chain", "not checked (offline)" if result.offline else _e(result.chain or "none")),
        ("Nodes asked", _e(nodes)),
        ("Verified at", _e(_t(result.verified_at))),
        ("Messages", f"{len(result.messages):,} verified of {result.total_messages:,}; "
                     f"{result.verified_readings:,} readings; {result.registry_events} registry "
                     "events"),
        ("Completeness", _completeness(result)),
    ]
    notes = "".join(f"<li>{_e(n)}</li>" for n in result.bundle_notes)
    banner = (f'<div class="verdict" id="verdict" data-verdict="{result.verdict}" '
              f'style="background:{color}"><h1>{VERDICT_LABELS[result.verdict]}</h1>'
              f"<p>{_e(result.summary())}</p></div>") if standalone else ""
    if result.unreadable:  # nothing was checked: the reason, not a report of empty tables
        body = (f'{banner}<main><dl class="meta"><dt>Verified at</dt>'
                f"<dd>{_e(_t(result.verified_at))}</dd></dl>{_unreadable(result)}"
                f"<h2>Findings</h2>{_findings(result)}</main>")
    else:
        body = _readable_body(result, banner, meta, notes)
    if not standalone:
        return f"<style>{_CSS}</style>{body}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>")


def _readable_body(result: VerificationResult, banner: str, meta: Sequence[tuple[str, str]],
                   notes: str) -> str:
    return f"""{banner}
<main>
<dl class="meta">{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta)}</dl>
{f"<p>Exporter's notes (not evidence):</p><ul>{notes}</ul>" if notes else ""}
<h2>Findings</h2>{_findings(result)}
<h2>Gateways</h2>{_gateways(result)}
<h2>Crop history (verified readings only; red bands: missing messages, red ticks: missing
values)</h2>
{_charts(result)}
<h2>Sequence gaps</h2>{_gap_list(result)}
<h2>Checkpoints and anchors</h2>{_anchors(result)}
{_checks_on_request(result)}
{_influx(result)}
<h2>Check it yourself</h2>
<p>Install fieldproof and run <code>fieldproof verify BUNDLE --log-key '{_e(result.log_key)}'
{"--chain " + _e(result.chain) if result.chain else ""} --node URL [--node URL …]</code> with
chain nodes you choose. The bundle format is documented in docs/bundle.md, so you can also
write your own verifier.</p>
</main>"""


# ----------------------------------------------------------------------------- files


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    pdf: Path | None
    pdf_engine: str | None


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def write_pdf(html_path: Path, pdf_path: Path) -> str:
    """Render ``html_path`` to PDF: WeasyPrint when installed, else headless Chromium.
    Returns the engine used; raises RuntimeError when neither works."""
    problems = []
    try:
        weasyprint: Any = importlib.import_module("weasyprint")
        weasyprint.HTML(filename=str(html_path)).write_pdf(str(pdf_path))
        return "weasyprint"
    except ImportError as exc:
        problems.append(f"weasyprint not usable ({exc})")
    except Exception as exc:  # WeasyPrint raises plain exceptions for missing Pango etc.
        problems.append(f"weasyprint failed ({type(exc).__name__}: {exc})")
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("cannot write a PDF: " + "; ".join(problems) +
                           "; and no chromium found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="fieldproof-pdf-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--no-pdf-header-footer", f"--print-to-pdf={pdf_path}",
               html_path.resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    if proc.returncode != 0 or not pdf_path.exists():
        raise RuntimeError(f"chromium could not print the PDF: {proc.stderr[-500:]!r}")
    return "chromium"


def write_report(result: VerificationResult | MultiResult, path_html: Path | str,
                 pdf: bool) -> ReportFiles:
    """Write the HTML report and, with ``pdf``, the same page as PDF beside it (.pdf)."""
    path = Path(path_html)
    page = (render_html(result) if isinstance(result, VerificationResult)
            else render_multi_html(result))
    path.write_text(page, encoding="utf-8")
    if not pdf:
        return ReportFiles(path, None, None)
    pdf_path = path.with_suffix(".pdf")
    engine = write_pdf(path, pdf_path)
    return ReportFiles(path, pdf_path, engine)


def write_json(result: VerificationResult, path: Path | str) -> None:
    Path(path).write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n",
                          encoding="utf-8")
