"""The inspector's report as an agronomist and a printer get it: the real period (never 1970),
units agronomists read (dS/m, %VWC), round-number ticks, and a PDF laid out for A4 — checked
by rendering the PDF to pixels (pdftoppm, poppler-utils: scripts/bootstrap installs it)."""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.export import export_bundle
from inspector.report import (
    display_unit,
    nice_ticks,
    period_of,
    render_html,
    tick_label,
    time_ticks,
    write_report,
)
from inspector.verify import VerificationResult, verify_bundle
from tests.support.bundles import Farm

#: the first reading: four hours before now, on a whole hour (enrolment slack allows it)
T0 = float(int(time.time()) // 3600 * 3600 - 4 * 3600)
BLUE = (0x09, 0x69, 0xDA)  # the first series' colour (inspector.report.PALETTE[0])


# ----------------------------------------------------------------------------- ticks, units


@pytest.mark.parametrize(
    ("lo", "hi"),
    [(0.31, 0.38), (18.5, 18.56), (-3.2, 41.7), (0.0, 1.0), (1200.0, 98_000.0), (5.0, 5.0)],
)
def test_value_ticks_are_1_2_5_steps_covering_the_data(lo: float, hi: float) -> None:
    ticks = nice_ticks(lo, hi)
    steps = {round(b - a, 12) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1, ticks  # evenly spaced
    step = steps.pop()
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 9) in (1.0, 2.0, 5.0), (step, ticks)
    assert ticks[0] <= lo and ticks[-1] >= hi  # the axis ends on labelled round numbers
    assert 3 <= len(ticks) <= 12, ticks
    assert all(abs(t / step - round(t / step)) < 1e-6 for t in ticks)  # multiples of the step


def test_tick_labels_have_the_step_s_decimals() -> None:
    ticks = nice_ticks(0.1, 0.35)
    assert [tick_label(t, ticks) for t in ticks] == ["0.10", "0.15", "0.20", "0.25", "0.30",
                                                     "0.35"]
    ticks = nice_ticks(0, 100)
    assert [tick_label(t, ticks) for t in ticks] == ["0", "20", "40", "60", "80", "100"]


@pytest.mark.parametrize(
    ("span_s", "step_s"),
    [(4 * 3600 + 1234, 3600), (50 * 60, 600), (10 * 86400, 2 * 86400), (40.0, 10)],
)
def test_time_ticks_fall_on_whole_minutes_hours_days(span_s: float, step_s: int) -> None:
    lo = 1_764_000_000.0 + 517  # not on any round time
    ticks = time_ticks(lo, lo + span_s)
    assert ticks and all(lo <= t <= lo + span_s for t in ticks)
    assert all(t % step_s == 0 for t in ticks), (ticks, step_s)
    assert {b - a for a, b in itertools.pairwise(ticks)} == {step_s}


@pytest.mark.parametrize(
    ("quantity", "unit", "value", "shown", "expected"),
    [
        ("soil_ec", "S/m", 0.12, "dS/m", 1.2),
        ("soil_moisture", "/", 0.31, "%VWC", 31.0),
        ("air_pressure", "Pa", 101_325.0, "kPa", 101.325),
        ("air_temperature", "Cel", 21.5, "°C", 21.5),
        ("air_humidity", "%RH", 61.0, "% RH", 61.0),
        ("soil_ph", "pH", 6.5, "pH", 6.5),  # unknown to the table: shown as signed
    ],
)
def test_units_agronomists_read(
    quantity: str, unit: str, value: float, shown: str, expected: float
) -> None:
    label, factor = display_unit(quantity, unit)
    assert label == shown
    assert value * factor == pytest.approx(expected)


# ----------------------------------------------------------------------------- a real bundle


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    f = Farm(tmp_path_factory.mktemp("report"))
    north = f.enroll("farm-a", "north")
    south = f.enroll("farm-a", "south")
    f.run(north, T0, 200, skip={50, 51, 52})
    f.run(south, T0 + 30, 200)
    f.checkpoint()
    yield f
    f.close()


def _verify(farm: Farm, start: float, end: float) -> VerificationResult:
    bundle = export_bundle(farm.config, farm="farm-a", field=None, gateway=None, start=start,
                           end=end)
    return verify_bundle(bundle, nodes=[], chain=None, offline=True, log_key=farm.vkey)


@pytest.fixture(scope="module")
def open_result(farm: Farm) -> VerificationResult:
    """Exported "from the beginning" (start 0), as the demo and many operators do."""
    return _verify(farm, 0.0, time.time() + 60)


def test_open_scope_period_is_the_readings_and_says_so(open_result: VerificationResult) -> None:
    start, end, source = period_of(open_result)
    assert start == T0  # the first verified reading, not 1970
    assert end == open_result.scope["to"]
    assert "first verified reading" in source and "scope" in source
    page = render_html(open_result)
    assert "1970" not in page
    assert time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(T0)) in page
    assert _e_source(source) in page


def _e_source(source: str) -> str:
    return source.replace("'", "&#x27;")


def test_real_scope_period_is_the_scope(farm: Farm) -> None:
    result = _verify(farm, T0 + 600, T0 + 3600)
    assert period_of(result) == (T0 + 600, T0 + 3600, "the bundle's scope")


def test_units_in_the_page(open_result: VerificationResult) -> None:
    page = render_html(open_result)
    assert "Soil electrical conductivity (dS/m)" in page
    assert "Soil moisture (%VWC)" in page
    assert "S/m × 10 = dS/m" in page  # the conversion back to the signed values is stated
    assert "(S/m)" not in page and "m³/m³)" not in page


def _pages(pdf: Path, out: Path, dpi: int = 40) -> list[tuple[int, int, bytes]]:
    """Every page as (width, height, RGB bytes), rendered by pdftoppm."""
    pdftoppm = shutil.which("pdftoppm")
    assert pdftoppm, "pdftoppm missing: apt-get install poppler-utils (scripts/bootstrap)"
    subprocess.run([pdftoppm, "-r", str(dpi), str(pdf), str(out / "page")], check=True,
                   timeout=120)
    pages = []
    for path in sorted(out.glob("page-*.ppm"), key=lambda p: int(p.stem.split("-")[1])):
        data = path.read_bytes()
        magic, w, h, maxval, pixels = data.split(maxsplit=4)
        assert magic == b"P6" and maxval == b"255"
        pages.append((int(w), int(h), pixels[: int(w) * int(h) * 3]))
    return pages


def _ink_rows(w: int, h: int, px: bytes) -> list[int]:
    """Rows with anything darker than the page's white."""
    return [y for y in range(h) if min(px[y * w * 3:(y + 1) * w * 3]) < 200]


def _blue_extent(w: int, h: int, px: bytes) -> int:
    """Horizontal span (pixels) of the first series' line colour on a page, 0 when absent."""
    cols = [
        i // 3 % w for i in range(0, len(px), 3)
        if abs(px[i] - BLUE[0]) < 60 and abs(px[i + 1] - BLUE[1]) < 60
        and abs(px[i + 2] - BLUE[2]) < 50 and px[i + 2] > 150
    ]
    return max(cols) - min(cols) if cols else 0


def test_pdf_is_a4_first_page_full_and_charts_full_width(
    open_result: VerificationResult, tmp_path: Path
) -> None:
    files = write_report(open_result, tmp_path / "report.html", pdf=True)
    assert files.pdf is not None
    pages = _pages(files.pdf, tmp_path)
    assert len(pages) >= 2
    for w, h, _ in pages:  # A4 portrait: 210 × 297 mm
        assert abs(w / h - 210 / 297) < 0.01, (w, h, files.pdf_engine)
    w, h, px = pages[0]
    rows = _ink_rows(w, h, px)
    # the first page's content reaches its lower part (the page number sits below 94 %)
    body = [y for y in rows if y < 0.94 * h]
    assert body and max(body) > 0.8 * h, (max(body) / h, files.pdf_engine)
    text_width = w * 180 / 210  # 15 mm margins
    extents = [_blue_extent(pw, ph, ppx) for pw, ph, ppx in pages]
    charted = [e for e in extents if e]
    assert charted, "no chart found in the PDF"
    assert all(e >= 0.85 * text_width for e in charted), (
        [round(e / text_width, 3) for e in charted], files.pdf_engine)
