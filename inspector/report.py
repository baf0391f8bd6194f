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

from inspector.verify import (
    AnchorCheck,
    CheckpointSummary,
    GatewaySummary,
    VerificationResult,
    readings_in_scope,
)

if TYPE_CHECKING:
    from inspector.combine import MultiResult

__all__ = [
    "ReportFiles",
    "explorer_url",
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
UNITS = {"/": "m³/m³", "Cel": "°C", "%RH": "% RH", "S/m": "S/m", "Pa": "Pa", "lx": "lx"}
THOR_EXPLORERS = {
    "0x00000000851caf3cfdb6e899cf5958bfb1ac3413d346d43539627e6be7ec1b4a":
        "https://explore.vechain.org/transactions/{tx}",
    "0x000000000b2bce3c70bc649a02749e8687721b09ed2e15997f466536b20bb127":
        "https://explore-testnet.vechain.org/transactions/{tx}",
}
EVM_EXPLORERS = {
    "1": "https://etherscan.io/tx/{tx}",
    "11155111": "https://sepolia.etherscan.io/tx/{tx}",
    "10": "https://optimistic.etherscan.io/tx/{tx}",
    "137": "https://polygonscan.com/tx/{tx}",
    "100": "https://gnosisscan.io/tx/{tx}",
    "8453": "https://basescan.org/tx/{tx}",
    "42161": "https://arbiscan.io/tx/{tx}",
}
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


def explorer_url(chain: str, network: str, tx: str) -> str | None:
    """A public explorer's page for the tx, for the networks we know; None otherwise."""
    table = THOR_EXPLORERS if chain == "thor" else EVM_EXPLORERS
    pattern = table.get(network)
    return pattern.format(tx=tx) if pattern else None


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


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks: list[float] = []
    v = first
    while v <= hi + step * 1e-9 and len(ticks) < 12:
        ticks.append(round(v, 10))
        v += step
    return ticks


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


def _chart(title: str, unit: str, series: Sequence[_Series],
           gaps: Sequence[tuple[float, float, str]], t_lo: float, t_hi: float) -> str:
    w, h = 860, 230
    left, right, top, bottom = 62, 14, 26, 40
    pw, ph = w - left - right, h - top - bottom
    values = [v for s in series for _, v in s.points]
    if values:
        v_lo, v_hi = min(values), max(values)
    else:
        v_lo, v_hi = 0.0, 1.0
    if v_hi - v_lo < 1e-9:
        v_lo, v_hi = v_lo - 1.0, v_hi + 1.0
    pad = (v_hi - v_lo) * 0.08
    v_lo, v_hi = v_lo - pad, v_hi + pad
    if t_hi <= t_lo:
        t_lo, t_hi = t_lo - 60, t_hi + 60

    def x(t: float) -> float:
        return left + (t - t_lo) / (t_hi - t_lo) * pw

    def y(v: float) -> float:
        return top + (1 - (v - v_lo) / (v_hi - v_lo)) * ph

    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
        f'width="{w}" height="{h}" role="img" aria-label="{_e(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600" fill="#1f2328">'
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
    for v in _nice_ticks(v_lo, v_hi):
        yy = y(v)
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{yy:.1f}" y2="{yy:.1f}" '
                     'stroke="#eaeef2"/>')
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" '
                     f'font-size="10" fill="#57606a">{v:g}</text>')
    span = t_hi - t_lo
    fmt = ("%H:%M:%S" if span < 1800 else "%H:%M" if span < 2 * 86400
           else "%m-%d %H:%M" if span < 20 * 86400 else "%Y-%m-%d")
    for i in range(6):
        t = t_lo + span * i / 5
        xx = x(t)
        parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top + ph}" y2="{top + ph + 4}" '
                     'stroke="#8c959f"/>')
        anchor = "start" if i == 0 else "end" if i == 5 else "middle"
        parts.append(f'<text x="{xx:.1f}" y="{top + ph + 16}" text-anchor="{anchor}" '
                     f'font-size="10" fill="#57606a">{_e(_t(t, fmt))}</text>')
    for s in series:
        for pts in _segments(_downsample(s.points, MAX_POINTS_PER_SERIES), s.breaks):
            if len(pts) == 1:
                px, py = x(pts[0][0]), y(pts[0][1])
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{s.color}"/>')
            else:
                path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
                parts.append(f'<polyline fill="none" stroke="{s.color}" stroke-width="1.6" '
                             f'points="{path}"><title>{_e(s.label)}</title></polyline>')
        for t in s.missing[:500]:
            xx = x(t)
            parts.append(f'<line x1="{xx:.1f}" x2="{xx:.1f}" y1="{top + ph - 8}" '
                         f'y2="{top + ph}" stroke="#cf222e" stroke-width="1.5"/>')
    parts.append(f'<text x="{left + pw}" y="{h - 4}" text-anchor="end" font-size="10" '
                 'fill="#57606a">UTC</text>')
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
        else:
            s.points.append((r.time, r.value))
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
            unit = units.get(q, "")
            out.append(_chart(TITLES.get(q, q.replace("_", " ").capitalize()),
                              UNITS.get(unit, unit or "–"), series, gaps, t_lo, t_hi))
    return "\n".join(out)


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
            net = (f"thor genesis <code>{_e(a.ref.network[:12])}…</code>"
                   if a.ref.chain == "thor" else f"evm chain id {_e(a.ref.network)}" + (
                       f", genesis <code>{_e(a.ref.genesis[:12])}…</code>"
                       if a.ref.genesis else " (no genesis recorded)"))
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


_CSS = """
@page { size: A4 landscape; margin: 12mm; }
body { font-family: "DejaVu Sans", Arial, Helvetica, sans-serif; color: #1f2328; margin: 0;
       font-size: 12px; }
main { padding: 16px 22px; }
.verdict { color: #fff; padding: 18px 22px; }
.verdict h1 { margin: 0 0 4px 0; font-size: 26px; letter-spacing: .5px; }
.verdict p { margin: 0; font-size: 13px; }
h2 { font-size: 16px; border-bottom: 1px solid #d0d7de; padding-bottom: 3px; margin-top: 22px; }
h3 { font-size: 14px; margin: 14px 0 4px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 5px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 11px; word-break: break-all; }
.badge { color: #fff; border-radius: 3px; padding: 1px 5px; font-size: 11px; }
.ok { color: #1a7f37; font-weight: 600; } .bad { color: #cf222e; font-weight: 600; }
.warn { color: #b35900; font-weight: 600; } .muted { color: #57606a; }
figure { margin: 4px 0 12px; page-break-inside: avoid; }
svg.chart { max-width: 100%; height: auto; }
figcaption .key { margin-right: 14px; font-size: 11px; white-space: nowrap; }
figcaption .key i { display: inline-block; width: 14px; height: 4px; margin-right: 4px;
                    vertical-align: middle; }
dl.meta { display: grid; grid-template-columns: 180px auto; gap: 2px 10px; margin: 6px 0; }
dl.meta dt { color: #57606a; } dl.meta dd { margin: 0; }
"""


def _known(result: VerificationResult) -> str:
    return "<br>".join(
        f"#{k.number} size {k.size if k.size is not None else '?'}: "
        + (f'<span class="ok">{_e(k.detail)}, consistent</span>' if k.status == "linked"
           else f'<span class="bad">{_e(k.status)}: {_e(k.detail[:200])}</span>')
        for k in result.known_checkpoints)


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
        ("Period (all bundles)", f"{_e(_t(s.get('from')))} – {_e(_t(s.get('to')))}"),
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
                 ("Period", f"{_e(_t(r.scope.get('from')))} – {_e(_t(r.scope.get('to')))}"),
                 ("Messages", f"{len(r.messages):,} verified of {r.total_messages:,}; "
                              f"{r.verified_readings:,} readings; {r.registry_events} "
                              "registry events"),
                 ("Completeness", _completeness(r))]
        if r.known_checkpoints:
            bmeta.append(("Known checkpoints", _known(r)))
        notes = "".join(f"<li>{_e(x)}</li>" for x in r.bundle_notes)
        parts.append(
            f'<h2 id="bundle-{n}">Bundle {_e(b.label)}: '
            f'<span style="color:{VERDICT_COLORS[b.verdict]}">{VERDICT_LABELS[b.verdict]}'
            f"</span></h2>"
            f'<dl class="meta">{"".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in bmeta)}</dl>'
            + (f"<p>Exporter's notes (not evidence):</p><ul>{notes}</ul>" if notes else "")
            + f"<h3>Findings of this bundle</h3>{_findings_of(b.findings)}"
            f"<h3>Gateways in this log (gaps: what this log alone lacks)</h3>{_gateways(r)}"
            f"<h3>Checkpoints and anchors</h3>{_anchors(r)}")
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
        ("Period", f"{_e(_t(s.get('from')))} – {_e(_t(s.get('to')))}"),
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
    if result.known_checkpoints:
        meta.append(("Known checkpoints", _known(result)))
    notes = "".join(f"<li>{_e(n)}</li>" for n in result.bundle_notes)
    banner = (f'<div class="verdict" id="verdict" data-verdict="{result.verdict}" '
              f'style="background:{color}"><h1>{VERDICT_LABELS[result.verdict]}</h1>'
              f"<p>{_e(result.summary())}</p></div>") if standalone else ""
    body = f"""{banner}
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
{_influx(result)}
<h2>Check it yourself</h2>
<p>Install fieldproof and run <code>fieldproof verify BUNDLE --log-key '{_e(result.log_key)}'
{"--chain " + _e(result.chain) if result.chain else ""} --node URL [--node URL …]</code> with
chain nodes you choose. The bundle format is documented in docs/bundle.md, so you can also
write your own verifier.</p>
</main>"""
    if not standalone:
        return f"<style>{_CSS}</style>{body}"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>")


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
