"""The collector's inspector page and export API (collector/api.py), driven through its HTTP
endpoints with an access token and in headless Chromium over the DevTools protocol: the operator
pastes a token, verifies and downloads; the verdict banner must be in the DOM and its colour on
the screenshot, with no CSP violation, while an injected inline script is blocked and a DNS
rebinding name is refused. Anchors go to a real VeChainThor node (thor solo, started once for
the module by tests/support/thor_solo.py, the anchor driven to the node's own finality), which
the page's verifier then asks. The attacks on the API itself are in
tests/collector/test_inspector_api_security.py."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.api import CSP, InspectorServer
from collector.api_tokens import TokenFile, tokens_path
from fieldproof.formats.bundle import MEDIA_TYPE, decode_bundle
from inspector.report import SEVERITY_COLORS, VERDICT_COLORS, write_report
from inspector.verify import verify_bundle
from tests.support.bundles import THOR_KEY, Farm, anchor_thor
from tests.support.cdp import Chromium, Page
from tests.support.thor_solo import SoloChain

pytestmark = pytest.mark.integration

NOW = time.time()
T0 = NOW - 6 * 3600
REBIND = "rebind.test"  # Chromium resolves it to 127.0.0.1, as a rebinding attacker's DNS would


@dataclass
class Site:
    farm: Farm
    server: InspectorServer
    node: SoloChain
    token: str  # all farms
    farm_b_token: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.token}"}

    def post(self, path: str, body: dict[str, Any], token: str | None = None) -> httpx.Response:
        return httpx.post(f"{self.server.url}{path}", json=body, headers=self.auth(token),
                          timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    farm = Farm(tmp_path_factory.mktemp("collector"))
    node = SoloChain(tmp_path_factory.mktemp("thor"))
    try:
        node.fund(THOR_KEY.address)
        north, south = farm.enroll("farm-a", "north"), farm.enroll("farm-a", "south")
        gappy = farm.enroll("farm-b", "east")
        farm.run(north, T0, 60, step=300)
        farm.run(south, T0, 60, step=300)
        farm.run(gappy, T0, 60, step=300, skip={20, 21, 22})
        farm.checkpoint()
        anchor_thor(farm, node.url, node.mine)
        tokens = TokenFile(tokens_path(farm.config))
        token, _ = tokens.create(None, "page tests")
        farm_b_token, _ = tokens.create("farm-b", "farm b only")
        server = InspectorServer(farm.config, port=0, nodes=[node.url], chain="thor").start()
        try:
            yield Site(farm, server, node, token, farm_b_token)
        finally:
            server.close()
    finally:
        farm.close()
        node.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    profile = tmp_path_factory.mktemp("chromium") / "profile"
    with Chromium(profile, f"--host-resolver-rules=MAP {REBIND} 127.0.0.1") as b:
        yield b


#: installed before the page's scripts: records every CSP violation the page causes
RECORD_CSP = """window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(e.effectiveDirective + " " + e.blockedURI));"""


def _connect(page: Page, site: Site, url: str, token: str) -> None:
    page.before_scripts(RECORD_CSP)
    page.goto(url)
    page.eval(f'document.getElementById("token").value = {json.dumps(token)};'
              ' document.getElementById("connect").click();')
    status = page.wait_for('(() => { const s = document.getElementById("status").textContent;'
                           ' return s.startsWith("connected") || s.startsWith("error") ? s'
                           ' : ""; })()')
    assert status.startswith("connected:"), status
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
    r = httpx.get(f"{site.server.url}/api/scope", headers=site.auth())
    assert r.status_code == 200
    doc = r.json()
    assert doc["origin"] == site.farm.config.log_origin
    assert doc["chain"] == "thor" and doc["nodes"] == [site.node.url]
    assert doc["token"]["scope"] == "all farms"
    gws = {g.gateway: g for g in site.farm.gateways}
    assert doc["farms"] == {
        "farm-a": {"north": [g for g in gws if gws[g].field == "north"],
                   "south": [g for g in gws if gws[g].field == "south"]},
        "farm-b": {"east": [g for g in gws if gws[g].field == "east"]},
    }
    # a farm's token sees that farm only
    only_b = httpx.get(f"{site.server.url}/api/scope", headers=site.auth(site.farm_b_token))
    assert only_b.status_code == 200 and list(only_b.json()["farms"]) == ["farm-b"]


def test_export_endpoint_returns_the_bundle(site: Site) -> None:
    r = site.post("/api/export", {"farm": "farm-a", "field": "south", "from": T0, "to": NOW})
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
    r = site.post("/api/export", params)
    assert r.status_code == status
    assert says in r.json()["error"]


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []  # text inside <script> or <style>
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(data)


def test_unknown_path_is_404_and_page_has_no_inline_code(site: Site) -> None:
    assert httpx.get(f"{site.server.url}/nothing/here").status_code == 404
    page = httpx.get(f"{site.server.url}/")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert csp == CSP
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp  # neither unsafe-inline nor unsafe-eval
    assert page.headers["x-frame-options"] == "DENY"
    tags = _Tags()
    tags.feed(page.text)
    assert tags.inline == []
    assert not [t for t, a in tags.tags if "style" in a or any(k.startswith("on") for k in a)]
    assert "?run=1" not in page.text
    # the script and the style sheet are files of this server, pinned by their hashes
    subresources = {a.get("src") or a.get("href"): a["integrity"]
                    for t, a in tags.tags if t in ("script", "link")}
    assert set(subresources) == {"/static/inspector.js", "/static/inspector.css"}
    for path, integrity in subresources.items():
        r = httpx.get(f"{site.server.url}{path}")
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
        digest = base64.b64encode(hashlib.sha384(r.content).digest()).decode()
        assert integrity == f"sha384-{digest}"


# ------------------------------------------------------------------------------ browser


@pytest.mark.parametrize(("farm", "verdict"), [("farm-a", "pass"), ("farm-b", "warn")])
def test_page_shows_the_verdict_in_chromium(site: Site, browser: Chromium, farm: str,
                                            verdict: str) -> None:
    page = browser.page(1200, 1600)
    _connect(page, site, f"{site.server.url}/?farm={farm}&from={int(T0)}&to={int(NOW)}",
             site.token)
    assert page.eval('document.getElementById("farm").value') == farm  # taken from the URL
    page.eval('document.getElementById("run").click()')
    page.wait_for('document.getElementById("verdict").dataset.verdict'
                  ' || document.getElementById("status").textContent.startsWith("error")')
    html = page.eval("document.documentElement.outerHTML")
    assert f'data-verdict="{verdict}"' in html, page.eval(
        'document.getElementById("status").textContent')
    assert {"pass": "PASS</b>", "warn": "PASS WITH WARNINGS</b>"}[verdict] in html
    assert "bundle:" in html and "--log-key" in html
    # the report is in the shadow root with its styles, as a constructed style sheet: the
    # colours its style attributes had come from rules on data-fp-style
    report = page.eval("""(() => {
      const root = document.getElementById("report").shadowRoot;
      return {h2: root.querySelectorAll("h2").length,
              rules: root.adoptedStyleSheets.reduce((n, s) => n + s.cssRules.length, 0),
              coloured: [...root.querySelectorAll("[data-fp-style]")].map((e) =>
                getComputedStyle(e)[e.tagName === "SPAN" && !e.classList.contains("badge")
                                    ? "color" : "backgroundColor"]),
              inline: root.querySelectorAll("[style], style, script").length};
    })()""")
    assert report["h2"] >= 5 and report["rules"] > 10 and report["inline"] == 0
    assert report["coloured"], "no element of the report kept its colour"
    assert "rgba(0, 0, 0, 0)" not in report["coloured"]  # every one got its colour
    if verdict == "warn":  # farm-b's gap is a finding with a badge in its severity's colour
        rgb = tuple(int(SEVERITY_COLORS["warning"][i:i + 2], 16) for i in (1, 3, 5))
        assert "rgb({}, {}, {})".format(*rgb) in report["coloured"]
    assert page.eval("window.__csp") == []  # the page did all that without a CSP violation

    width, height, pixels = _png_pixels(page.screenshot())
    assert (width, height) == (1200, 1600)
    assert len(set(pixels[::97])) > 20  # not a blank page
    banner = _count_near(pixels, VERDICT_COLORS[verdict])
    assert banner > 1200 * 40  # the verdict banner, full width
    other = "warn" if verdict == "pass" else "pass"
    assert _count_near(pixels, VERDICT_COLORS[other]) < banner / 20
    # the charts are drawn: the first series colour of the report appears
    assert _count_near(pixels, "#0969da", tol=30) > 200
    page.close()


def test_page_downloads_the_bundle_in_chromium(site: Site, browser: Chromium,
                                               tmp_path: Path) -> None:
    """The download is a POST with the token in a header, saved from a blob by the browser."""
    browser.call("Browser.setDownloadBehavior",
                 {"behavior": "allow", "downloadPath": str(tmp_path), "eventsEnabled": True})
    page = browser.page()
    _connect(page, site, f"{site.server.url}/?farm=farm-b&from={int(T0)}&to={int(NOW)}",
             site.farm_b_token)
    page.eval('document.getElementById("download").click()')
    begun = browser.wait_event("Browser.downloadWillBegin")
    done = browser.wait_event("Browser.downloadProgress",
                              match={"guid": begun["guid"], "state": "completed"})
    assert done["state"] == "completed"
    name = begun["suggestedFilename"]
    assert name.startswith("fieldproof-farm-b-") and name.endswith(".fpb")
    bundle = decode_bundle((tmp_path / name).read_bytes())
    assert bundle.scope.farm == "farm-b" and len(bundle.messages) == 57
    assert page.eval("window.__csp") == []
    page.close()


#: an inline <script> and an inline event handler, as an injection would add them
INJECT = """(() => {
  const s = document.createElement("script");
  s.textContent = "window.__ran = 'script'";
  document.body.appendChild(s);
  document.body.insertAdjacentHTML("beforeend",
    '<img id="probe" src="data:," onerror="window.__ran2 = \\'handler\\'">');
  return true;
})()"""


def test_inline_script_is_blocked_in_chromium(site: Site, browser: Chromium) -> None:
    # the probe works: on a page without our CSP both injections run
    control = browser.page()
    control.goto("about:blank")
    control.eval(INJECT)
    assert control.wait_for("window.__ran2 && [window.__ran, window.__ran2]") == [
        "script", "handler"]
    control.close()

    page = browser.page()
    _connect(page, site, f"{site.server.url}/", site.token)
    page.eval(INJECT)
    blocked = page.wait_for('window.__csp.length >= 2 && window.__csp')
    assert sorted(v.split()[0] for v in blocked) == ["script-src-attr", "script-src-elem"]
    assert page.eval("[window.__ran ?? null, window.__ran2 ?? null]") == [None, None]
    # the page's own code still runs: connected, farms listed
    assert page.eval('document.getElementById("farm").options.length') == 3
    page.close()


def test_dns_rebinding_name_is_refused_in_chromium(site: Site, browser: Chromium) -> None:
    """A page served under another name that resolves to the loopback API (DNS rebinding)
    gets 421 for everything, even with a valid token in hand."""
    port = site.server.httpd.server_address[1]
    page = browser.page()
    page.goto(f"http://{REBIND}:{port}/")
    text = page.eval("document.body.innerText")
    assert "does not answer for that Host" in text
    status = page.eval(f"""fetch("/api/scope", {{headers: {{"Authorization":
      "Bearer {site.token}"}}}}).then((r) => r.status)""")
    assert status == 421
    page.close()
    # the same browser reaches the API under its loopback name
    ok = browser.page()
    ok.goto(f"http://127.0.0.1:{port}/")
    assert ok.eval('document.getElementById("connect") !== null')
    ok.close()


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
    r = site.post("/api/export", {"farm": "farm-b", "from": T0})
    assert r.status_code == 200
    result = verify_bundle(r.content, nodes=[], chain=None, offline=True, log_key=None)
    files = write_report(result, tmp_path / "r.html", pdf=True)
    assert files.pdf_engine == "chromium"
    assert files.pdf is not None and files.pdf.read_bytes().startswith(b"%PDF-")
