"""The collector's inspector page and export API (collector/api.py), driven through its HTTP
endpoints and rendered in headless Chromium: the verdict banner must be in the DOM and its
colour on the screenshot. Anchors go to the Thor node test double (tests/support/thornode.py: no
VeChainThor node can run here; the double implements the REST contract of
shared/reference/thor-rest-api.yaml and rejects what a node rejects)."""

from __future__ import annotations

import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from collector.api import InspectorServer
from fieldproof.formats.bundle import MEDIA_TYPE, decode_bundle
from inspector.report import VERDICT_COLORS, write_report
from inspector.verify import verify_bundle
from tests.support.bundles import THOR_KEY, Farm, anchor_thor
from tests.support.thornode import ThorNode, funded

CHROMIUM = "/usr/bin/chromium"
NOW = time.time()
T0 = NOW - 6 * 3600


@dataclass
class Site:
    farm: Farm
    server: InspectorServer
    node: ThorNode


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    farm = Farm(tmp_path_factory.mktemp("collector"))
    with ThorNode(finality_depth=2, energy=funded(THOR_KEY.address),
                  genesis_timestamp=int(NOW - 600)) as node:
        north, south = farm.enroll("farm-a", "north"), farm.enroll("farm-a", "south")
        gappy = farm.enroll("farm-b", "east")
        farm.run(north, T0, 60, step=300)
        farm.run(south, T0, 60, step=300)
        farm.run(gappy, T0, 60, step=300, skip={20, 21, 22})
        farm.checkpoint()
        anchor_thor(farm, node.url, node.mine)
        server = InspectorServer(farm.config, port=0, nodes=[node.url], chain="thor").start()
        try:
            yield Site(farm, server, node)
        finally:
            server.close()
            farm.close()


def _chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    assert Path(CHROMIUM).exists(), "headless Chromium is needed: apt-get install chromium"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=20000",
         *args, url],
        capture_output=True, timeout=120, check=False,
    )


def _png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) into (width, height, pixels)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and color in (2, 6)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    pixels = [(r[i], r[i + 1], r[i + 2]) for r in rows for i in range(0, stride, channels)]
    return width, height, pixels


def _count_near(pixels: list[tuple[int, int, int]], hex_color: str, tol: int = 6) -> int:
    want = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return sum(1 for p in pixels if all(abs(p[k] - want[k]) <= tol for k in range(3)))


# ------------------------------------------------------------------------------ API


def test_scope_lists_farms_fields_gateways(site: Site) -> None:
    r = httpx.get(f"{site.server.url}/api/scope")
    assert r.status_code == 200
    doc = r.json()
    assert doc["origin"] == site.farm.config.log_origin
    assert doc["chain"] == "thor" and doc["nodes"] == [site.node.url]
    gws = {g.gateway: g for g in site.farm.gateways}
    assert doc["farms"] == {
        "farm-a": {"north": [g for g in gws if gws[g].field == "north"],
                   "south": [g for g in gws if gws[g].field == "south"]},
        "farm-b": {"east": [g for g in gws if gws[g].field == "east"]},
    }


def test_export_endpoint_returns_the_bundle(site: Site) -> None:
    r = httpx.get(f"{site.server.url}/api/export",
                  params={"farm": "farm-a", "field": "south", "from": T0, "to": NOW})
    assert r.status_code == 200
    assert r.headers["content-type"] == MEDIA_TYPE
    assert 'filename="fieldproof-farm-a-south-' in r.headers["content-disposition"]
    b = decode_bundle(r.content)
    assert len(b.messages) == 60 and b.scope.field == "south"
    result = verify_bundle(r.content, nodes=[site.node.url], chain="thor", offline=False,
                           log_key=site.farm.vkey)
    assert result.verdict == "pass"


@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"farm": "farm-a"}, 400, "from is required"),
        ({"from": "yesterday"}, 400, "neither Unix seconds nor an ISO 8601"),
        ({"from": str(NOW), "to": str(T0)}, 400, "from is after to"),
        ({"from": str(T0), "farm": "x" * 500}, 400, "longer than"),
        ({"from": str(T0), "farm": "nowhere"}, 400, "no gateway is enrolled"),
    ],
)
def test_bad_requests_say_why(site: Site, params: dict[str, str], status: int,
                              says: str) -> None:
    r = httpx.get(f"{site.server.url}/api/export", params=params)
    assert r.status_code == status
    assert says in r.json()["error"]


def test_unknown_path_is_404_and_page_is_self_contained(site: Site) -> None:
    assert httpx.get(f"{site.server.url}/nothing/here").status_code == 404
    page = httpx.get(f"{site.server.url}/")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "src=" not in page.text and "<link" not in page.text  # nothing from a CDN


# ------------------------------------------------------------------------------ browser


@pytest.mark.parametrize(("farm", "verdict"), [("farm-a", "pass"), ("farm-b", "warn")])
def test_page_shows_the_verdict_in_chromium(site: Site, tmp_path: Path, farm: str,
                                            verdict: str) -> None:
    url = f"{site.server.url}/?farm={farm}&from={int(T0)}&to={int(NOW)}&run=1"
    dom = _chromium(url, tmp_path / "p1", "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout.decode()
    assert f'data-verdict="{verdict}"' in html
    assert {"pass": "PASS</b>", "warn": "PASS WITH WARNINGS</b>"}[verdict] in html
    assert "bundle:" in html and "--log-key" in html

    shot = tmp_path / "page.png"
    res = _chromium(url, tmp_path / "p2", "--window-size=1200,1600", f"--screenshot={shot}")
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    width, height, pixels = _png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    assert len(set(pixels[::97])) > 20  # not a blank page
    banner = _count_near(pixels, VERDICT_COLORS[verdict])
    assert banner > 1200 * 40  # the verdict banner, full width
    other = "warn" if verdict == "pass" else "pass"
    assert _count_near(pixels, VERDICT_COLORS[other]) < banner / 20
    # the charts are drawn: the first series colour of the report appears
    assert _count_near(pixels, "#0969da", tol=30) > 200


def test_pdf_falls_back_to_chromium(site: Site, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without WeasyPrint the same report is printed by headless Chromium."""
    import importlib

    real = importlib.import_module

    def no_weasyprint(name: str, package: str | None = None) -> object:
        if name == "weasyprint":
            raise ImportError("weasyprint hidden by the test")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_weasyprint)
    r = httpx.get(f"{site.server.url}/api/export", params={"farm": "farm-b", "from": T0})
    result = verify_bundle(r.content, nodes=[], chain=None, offline=True, log_key=None)
    files = write_report(result, tmp_path / "r.html", pdf=True)
    assert files.pdf_engine == "chromium"
    assert files.pdf is not None and files.pdf.read_bytes().startswith(b"%PDF-")
