"""The collector's small HTTP API and inspector page (stdlib ``http.server``, loopback by default).

* ``GET /`` — the inspector page: pick farm, field, gateway and period, download the bundle, see
  a verification preview (verdict, findings, crop-history charts).
* ``GET /api/scope`` — farms, fields and gateways known to this collector.
* ``GET /api/export?farm=&field=&gateway=&from=&to=`` — the evidence bundle (docs/bundle.md).
* ``GET /api/verify?…`` — exports and verifies the same bundle here, answers JSON with the
  verdict and the HTML report.

The preview runs on the operator's machine, so it proves nothing to an inspector by itself: the
page says so and shows the ``fieldproof verify`` command to run on the downloaded bundle. The
server binds to 127.0.0.1 unless told otherwise; put it behind an authenticating reverse proxy
before exposing it, since bundles carry a farm's data.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click

from fieldproof.config import CollectorConfig

log = logging.getLogger("fieldproof.collector.api")

__all__ = ["InspectorServer", "inspector_command", "serve"]

MAX_PARAM = 128
DEFAULT_PORT = 8470


class BadRequest(ValueError):
    """A request parameter is missing or unusable; answered with HTTP 400."""


def _parse_time(text: str, what: str) -> float:
    from fieldproof.cli_common import parse_time

    try:
        return parse_time(text)
    except click.BadParameter as exc:
        raise BadRequest(f"{what}: {exc.message}") from None


def _scope_params(query: dict[str, list[str]]) -> dict[str, Any]:
    def one(name: str) -> str | None:
        values = query.get(name, [])
        if len(values) > 1:
            raise BadRequest(f"give {name} once")
        value = values[0].strip() if values else ""
        if len(value) > MAX_PARAM:
            raise BadRequest(f"{name} is longer than {MAX_PARAM} characters")
        return value or None

    start = one("from")
    if start is None:
        raise BadRequest("from is required (ISO 8601 or Unix seconds)")
    end = one("to")
    t0 = _parse_time(start, "from")
    t1 = time.time() if end is None else _parse_time(end, "to")
    if t0 > t1:
        raise BadRequest("from is after to")
    return {
        "farm": one("farm"),
        "field": one("field"),
        "gateway": one("gateway"),
        "start": t0,
        "end": t1,
    }


class InspectorServer:
    """The HTTP server; ``start()`` serves in a thread, ``close()`` stops it."""

    def __init__(
        self,
        config: CollectorConfig,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        *,
        nodes: list[str] | None = None,
        chain: str | None = None,
    ) -> None:
        self.config = config
        anchor = config.anchor
        if nodes is None:
            nodes = [anchor.url] if anchor.chain != "none" and anchor.url else []
        self.nodes = nodes
        self.chain = chain or (anchor.chain if anchor.chain != "none" else None)
        self._verify_lock = threading.Lock()
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> InspectorServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="inspector-api", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(10)

    # ---------------------------------------------------------------- endpoints

    def scope(self) -> dict[str, Any]:
        from collector.export import list_scope

        return {
            "origin": self.config.log_origin,
            "farms": list_scope(self.config),
            "chain": self.chain,
            "nodes": self.nodes,
        }

    def export(self, params: dict[str, Any]) -> bytes:
        from collector.export import export_bundle

        return export_bundle(self.config, **params)

    def verify(self, params: dict[str, Any]) -> dict[str, Any]:
        from collector.export import log_vkey
        from inspector.report import render_html
        from inspector.verify import VerifyOptions, verify_bundle

        data = self.export(params)
        offline = not self.nodes
        with self._verify_lock:  # one at a time: the collector's cores are for ingest
            result = verify_bundle(
                data,
                nodes=self.nodes,
                chain=None if offline else self.chain,
                offline=offline,
                log_key=log_vkey(self.config),
                options=VerifyOptions(workers=1),
            )
        return {
            "verdict": result.verdict,
            "passed": result.passed,
            "summary": result.summary_line(),
            "bundle_bytes": len(data),
            "result": result.to_json(),
            "report_html": render_html(result, standalone=False),
        }


def _filename(params: dict[str, Any]) -> str:
    parts = [p for p in (params.get("farm"), params.get("field"), params.get("gateway")) if p]
    stamp = time.strftime("%Y%m%d", time.gmtime(params["start"]))
    safe = "-".join("".join(c if c.isalnum() or c in "-_." else "_" for c in p) for p in parts)
    return f"fieldproof-{safe or 'all'}-{stamp}.fpb"


_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "connect-src 'self'; img-src data:; base-uri 'none'; "
    "form-action 'self'"
)


def _handler(app: InspectorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fieldproof-inspector"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(
            self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Security-Policy", _CSP)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def do_GET(self) -> None:
            from collector.export import ExportError
            from fieldproof.formats.bundle import MEDIA_TYPE

            url = urlsplit(self.path)
            query = parse_qs(url.query, keep_blank_values=True)
            try:
                if url.path in ("/", "/index.html"):
                    self._send(200, PAGE.encode(), "text/html; charset=utf-8")
                elif url.path == "/api/scope":
                    self._json(200, app.scope())
                elif url.path == "/api/export":
                    params = _scope_params(query)
                    data = app.export(params)
                    self._send(
                        200,
                        data,
                        MEDIA_TYPE,
                        {"Content-Disposition": f'attachment; filename="{_filename(params)}"'},
                    )
                elif url.path == "/api/verify":
                    self._json(200, app.verify(_scope_params(query)))
                else:
                    self._json(404, {"error": f"no such resource: {url.path}"})
            except (BadRequest, ExportError) as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except BrokenPipeError:
                pass
            except Exception as exc:
                log.exception("inspector API: %s failed", url.path)
                self._json(500, {"error": f"{type(exc).__name__}: {exc}"})

    return Handler


def serve(
    config: CollectorConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> InspectorServer:
    """Start the inspector API in a background thread (for the collector service)."""
    server = InspectorServer(config, host, port).start()
    log.info("inspector page on %s", server.url)
    return server


@click.command("inspector")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to bind; keep loopback unless behind an authenticating proxy",
)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
def inspector_command(config_path: Path, host: str, port: int) -> None:
    """Serve the inspector page and export API of this collector."""
    from fieldproof.config import load_collector_config
    from fieldproof.errors import ConfigError

    try:
        config = load_collector_config(config_path)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    server = InspectorServer(config, host, port)
    click.echo(f"inspector page: {server.url}/", err=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>fieldproof · inspector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 0; color: #1f2328;
       background: #f6f8fa; font-size: 14px; }
header { background: #24292f; color: #fff; padding: 12px 20px; }
header h1 { margin: 0; font-size: 18px; }
header p { margin: 2px 0 0; color: #c9d1d9; font-size: 12px; }
form { display: flex; flex-wrap: wrap; gap: 10px 16px; align-items: end; padding: 14px 20px;
       background: #fff; border-bottom: 1px solid #d0d7de; }
label { display: flex; flex-direction: column; font-size: 12px; color: #57606a; gap: 3px; }
select, input { font-size: 14px; padding: 4px 6px; min-width: 150px; }
button, a.button { font-size: 14px; padding: 6px 14px; border-radius: 6px; cursor: pointer;
                   border: 1px solid #1f883d; background: #1f883d; color: #fff;
                   text-decoration: none; }
a.button { background: #fff; color: #1f883d; }
#status { padding: 8px 20px; color: #57606a; min-height: 18px; }
#verdict { display: none; color: #fff; padding: 14px 20px; font-size: 15px; }
#verdict b { font-size: 22px; display: block; }
#verdict.pass { background: #1a7f37; } #verdict.warn { background: #b35900; }
#verdict.fail { background: #cf222e; }
#howto { padding: 8px 20px; font-size: 12px; color: #57606a; }
#howto code { background: #eaeef2; padding: 1px 4px; word-break: break-all; }
#report { background: #fff; }
</style></head>
<body>
<header><h1>fieldproof · crop history evidence</h1>
<p id="origin">loading…</p></header>
<form id="pick" onsubmit="return false">
  <label>Farm <select id="farm"></select></label>
  <label>Field <select id="field"></select></label>
  <label>Gateway <select id="gateway"></select></label>
  <label>From (UTC) <input id="from" type="datetime-local" step="1"></label>
  <label>To (UTC) <input id="to" type="datetime-local" step="1"></label>
  <button id="run" type="button">Verify preview</button>
  <a id="download" class="button" href="#" download>Download bundle</a>
</form>
<div id="status"></div>
<div id="verdict" role="status"></div>
<div id="howto">This preview runs on the operator's server, so on its own it proves nothing:
download the bundle and check it yourself with
<code id="cmd">fieldproof verify BUNDLE --log-key KEY --node URL</code>
against chain nodes you choose.</div>
<div id="report"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let scope = {farms: {}};
const params = new URLSearchParams(location.search);

function iso(t) { return new Date(t * 1000).toISOString().slice(0, 19); }
function epoch(v) { return v ? Date.parse(v + "Z") / 1000 : null; }
function fill(sel, values, all, chosen) {
  sel.textContent = "";
  const none = document.createElement("option");
  none.value = ""; none.textContent = all; sel.appendChild(none);
  for (const v of values) {
    const o = document.createElement("option");
    o.value = v; o.textContent = v; sel.appendChild(o);
  }
  if (chosen !== null && values.includes(chosen)) sel.value = chosen;
}
function refresh(keep) {
  const farms = Object.keys(scope.farms).sort();
  fill($("farm"), farms, "all farms", keep ? params.get("farm") : $("farm").value);
  const f = scope.farms[$("farm").value] || {};
  fill($("field"), Object.keys(f).sort(), "all fields", keep ? params.get("field") : null);
  let gws = [];
  for (const [field, ids] of Object.entries(f))
    if (!$("field").value || field === $("field").value) gws = gws.concat(ids);
  fill($("gateway"), gws.sort(), "all gateways", keep ? params.get("gateway") : null);
  link();
}
function query() {
  const q = new URLSearchParams();
  for (const k of ["farm", "field", "gateway"]) if ($(k).value) q.set(k, $(k).value);
  q.set("from", String(epoch($("from").value)));
  if ($("to").value) q.set("to", String(epoch($("to").value)));
  return q;
}
function link() { $("download").href = "/api/export?" + query().toString(); }
async function run() {
  $("status").textContent = "exporting and verifying…";
  $("verdict").style.display = "none";
  try {
    const r = await fetch("/api/verify?" + query().toString());
    const body = await r.json();
    if (!r.ok) { $("status").textContent = "error: " + body.error; return; }
    const v = $("verdict");
    v.className = body.verdict;
    v.dataset.verdict = body.verdict;
    v.textContent = "";
    const b = document.createElement("b");
    b.textContent = {pass: "PASS", warn: "PASS WITH WARNINGS", fail: "FAIL"}[body.verdict];
    v.appendChild(b);
    v.appendChild(document.createTextNode(body.summary.replace(/^[A-Z ]+: /, "")));
    v.style.display = "block";
    $("status").textContent = "bundle: " + body.bundle_bytes.toLocaleString() + " bytes";
    // the server escapes every bundle string; a shadow root keeps the report's styles apart
    const host = $("report");
    const root = host.shadowRoot || host.attachShadow({mode: "open"});
    root.innerHTML = body.report_html;
    const key = body.result.log.vkey;
    $("cmd").textContent = "fieldproof verify BUNDLE --log-key '" + key + "'" +
      (scope.chain ? " --chain " + scope.chain + " --node URL [--node URL …]" : " --offline");
  } catch (e) {
    $("status").textContent = "error: " + e;
  }
}
async function init() {
  const now = Date.now() / 1000;
  $("from").value = iso(params.has("from") ? Number(params.get("from")) : now - 86400);
  $("to").value = iso(params.has("to") ? Number(params.get("to")) : now);
  const r = await fetch("/api/scope");
  scope = await r.json();
  $("origin").textContent = "evidence log " + scope.origin + " · anchors: " +
    (scope.chain ? scope.chain + " via " + scope.nodes.join(", ") : "none configured");
  refresh(true);
  for (const k of ["farm", "field"]) $(k).addEventListener("change", () => refresh(false));
  for (const k of ["gateway", "from", "to"]) $(k).addEventListener("change", link);
  $("run").addEventListener("click", run);
  if (params.get("run") === "1") await run();
}
init();
</script>
</body></html>
"""
