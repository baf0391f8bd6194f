"""The collector's small HTTP API and inspector page (stdlib ``http.server``, loopback by default).

* ``GET /`` — the inspector page (``collector/static/``): paste an access token, pick farm,
  field, gateway and period, download the bundle, see a verification preview (verdict,
  findings, crop-history charts).
* ``GET /api/scope`` — the farms, fields and gateways this token may read.
* ``POST /api/export`` — the evidence bundle (docs/bundle.md) for a JSON body
  ``{"farm", "field", "gateway", "from", "to"}`` (``from`` required; times in Unix seconds or
  ISO 8601; ``to`` defaults to now).
* ``POST /api/verify`` — exports and verifies the same bundle here, answers JSON with the
  verdict and the HTML report.

Every ``/api/`` call carries ``Authorization: Bearer <token>``; a token reads one farm or all
farms (collector/api_tokens.py, made with ``fieldproof collector api-token create``). Tokens never
ride in a URL or a cookie, so another site can neither read them nor make a browser use them
(no CSRF). Requests whose Host header is not one the API is served under are refused with 421, so
a web page the operator visits cannot reach the loopback API by DNS rebinding. Periods are finite
and at most ``[api] max_range_s`` long; at most ``[api] max_concurrent_exports`` exports or
verifications run at once (more get 429 with Retry-After). A failure the client cannot fix is
logged with an id and answered with that id only. The page runs under a CSP without
``unsafe-inline``: its script and style are files with SRI hashes.

The preview runs on the operator's machine, so it proves nothing to an inspector by itself: the
page says so and shows the ``fieldproof verify`` command to run on the downloaded bundle. Serve it
to other machines only through a TLS-terminating reverse proxy (docs/deploy.md, "Inspector API").
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import logging
import math
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click

from collector.api_tokens import ApiToken, TokenFile, tokens_path
from fieldproof.config import CollectorConfig
from fieldproof.errors import FieldproofError
from fieldproof.formats.tiles import TileError, entries_path, parse_path, tile_path

log = logging.getLogger("fieldproof.collector.api")

__all__ = ["ApiError", "BadRequest", "InspectorServer", "inspector_command", "serve"]

MAX_PARAM = 128
#: the largest request body read (the parameters of one export)
MAX_BODY = 8 * 1024
DEFAULT_PORT = 8470
#: the times a period may start or end at: 1970-01-01 to 9999-12-31 (UTC)
MIN_TIME, MAX_TIME = 0.0, 253402300799.0
#: a client that sends nothing for this long is dropped (a stalled upload holds a thread)
SOCKET_TIMEOUT_S = 30.0
#: after refusing a request without reading its body, read (and drop) at most this much of it
#: for at most this long, so the refusal reaches the client before the connection closes
MAX_LINGER_BYTES = 1024 * 1024
LINGER_S = 2.0
_PARAMS = ("farm", "field", "gateway", "from", "to")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_REALM = 'Bearer realm="fieldproof-inspector"'

#: the page's script and style are files (collector/static/), so no inline code runs at all
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


#: where the log's public tiles are served (C2SP tlog-tiles prefix)
TILES_PREFIX = "/tiles/"


class ApiError(FieldproofError):
    """A request answered with ``status`` and a message the client may see (no secrets, no
    exception text)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class BadRequest(ApiError, ValueError):
    """A request parameter is missing or unusable; answered with HTTP 400."""

    def __init__(self, message: str) -> None:
        super().__init__(HTTPStatus.BAD_REQUEST, message)


class Busy(FieldproofError):
    """Every export slot (or the verifier) is taken; answered with 429 and Retry-After."""


# ------------------------------------------------------------------------------ parameters


def _time(value: object, what: str) -> float:
    """A period bound from the JSON body: Unix seconds (number or string) or ISO 8601."""
    from fieldproof.cli_common import parse_time

    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadRequest(f"{what} must be Unix seconds or an ISO 8601 date/time string")
    if isinstance(value, str):
        if len(value) > MAX_PARAM:
            raise BadRequest(f"{what} is longer than {MAX_PARAM} characters")
        try:
            t = parse_time(value)
        except click.BadParameter as exc:
            raise BadRequest(f"{what}: {exc.message}") from None
        except (OverflowError, ValueError, OSError):  # a date the platform cannot convert
            t = -1.0  # out of range, said below
        shown = repr(value.strip())
    else:
        try:
            t = float(value)
        except OverflowError:  # an integer too large for a float
            t = math.inf
        shown = "the number given" if isinstance(value, int) else repr(t)
    if not math.isfinite(t):
        raise BadRequest(f"{what} must be a finite time (Unix seconds or ISO 8601), not {shown}")
    if not MIN_TIME <= t <= MAX_TIME:
        raise BadRequest(
            f"{what} must lie between 1970-01-01 and 9999-12-31 (Unix seconds 0 to "
            f"{MAX_TIME:.0f}), not {shown}"
        )
    return t


def _scope_params(body: dict[str, Any], max_range_s: float) -> dict[str, Any]:
    """The export parameters of a request body, checked; raises :class:`BadRequest`."""
    if any(k not in _PARAMS for k in body):
        raise BadRequest("unknown parameter; the parameters are " + ", ".join(_PARAMS))

    def name(key: str) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{key} must be a string")
        value = value.strip()
        if len(value) > MAX_PARAM:
            raise BadRequest(f"{key} is longer than {MAX_PARAM} characters")
        if _CONTROL.search(value):
            raise BadRequest(f"{key} contains control characters")
        return value or None

    names = {key: name(key) for key in ("farm", "field", "gateway")}
    if body.get("from") in (None, ""):
        raise BadRequest("from is required (ISO 8601 or Unix seconds)")
    t0 = _time(body["from"], "from")
    t1 = time.time() if body.get("to") in (None, "") else _time(body["to"], "to")
    if t0 > t1:
        raise BadRequest("from is after to")
    if t1 - t0 > max_range_s:
        raise BadRequest(
            f"the period is {(t1 - t0) / 86400:.1f} days long; at most "
            f"{max_range_s / 86400:.1f} days fit in one export (ask for shorter periods, or the "
            "operator raises [api] max_range_s)"
        )
    return {**names, "start": t0, "end": t1}


def _authorize(params: dict[str, Any], token: ApiToken) -> None:
    """Confine the export to the token's farm: a farm token exports that farm by default and
    nothing else (the exporter selects gateways by farm *and* field *and* gateway)."""
    if token.farm is None:
        return
    if params["farm"] is None:
        params["farm"] = token.farm
    elif params["farm"] != token.farm:
        raise ApiError(HTTPStatus.FORBIDDEN, f"this token reads farm {token.farm} only")


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


# ------------------------------------------------------------------------------ static files


def _sri(data: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(data).digest()).decode()


@functools.cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """path → (body, content type) of the page and its files, read once from the package."""
    root = resources.files("collector") / "static"
    js = (root / "inspector.js").read_bytes()
    css = (root / "inspector.css").read_bytes()
    page = (root / "index.html").read_text(encoding="utf-8")
    page = page.replace("@JS_SRI@", _sri(js)).replace("@CSS_SRI@", _sri(css))
    html = (page.encode(), "text/html; charset=utf-8")
    return {
        "/": html,
        "/index.html": html,
        "/static/inspector.js": (js, "text/javascript; charset=utf-8"),
        "/static/inspector.css": (css, "text/css; charset=utf-8"),
    }


@dataclass(frozen=True)
class _Route:
    method: str
    needs_token: bool


_ROUTES = {
    "/api/scope": _Route("GET", True),
    "/api/export": _Route("POST", True),
    "/api/verify": _Route("POST", True),
}


# ------------------------------------------------------------------------------ the server


class InspectorServer:
    """The HTTP server; ``start()`` serves in a thread, ``close()`` stops it. ``host`` and
    ``port`` default to the config's ``[api]`` section (port 0: any free port)."""

    def __init__(
        self,
        config: CollectorConfig,
        host: str | None = None,
        port: int | None = None,
        *,
        nodes: list[str] | None = None,
        chain: str | None = None,
    ) -> None:
        self.config = config
        self.api = config.api
        anchor = config.anchor
        if nodes is None:
            nodes = [anchor.url] if anchor.chain != "none" and anchor.url else []
        self.nodes = nodes
        self.chain = chain or (anchor.chain if anchor.chain != "none" else None)
        self.tokens = TokenFile(tokens_path(config))
        self.tiles_dir = config.data_dir / "tiles"
        self.tokens.load()  # a broken or world-readable token file stops the start
        _assets()
        self._verify_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.api.max_concurrent_exports)
        self.httpd = ThreadingHTTPServer(
            (self.api.host if host is None else host, self.api.port if port is None else port),
            _handler(self),
        )
        self.httpd.daemon_threads = True
        bound = int(self.httpd.server_address[1])
        names = {f"127.0.0.1:{bound}", f"localhost:{bound}", f"[::1]:{bound}"}
        if bound == 80:
            names |= {"127.0.0.1", "localhost", "[::1]"}
        self.allowed_hosts = frozenset(names | {h.lower() for h in self.api.allowed_hosts})
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

    @contextmanager
    def export_slot(self) -> Iterator[None]:
        """One of ``[api] max_concurrent_exports`` slots, or :class:`Busy` at once."""
        if not self._slots.acquire(blocking=False):
            raise Busy(f"{self.api.max_concurrent_exports} exports are running")
        try:
            yield
        finally:
            self._slots.release()

    # ---------------------------------------------------------------- endpoints

    def scope(self, token: ApiToken | None = None) -> dict[str, Any]:
        """Farms, fields and gateways (those ``token`` may read), the log and the chain."""
        from collector.export import list_scope

        farms = list_scope(self.config)
        if token is not None:
            farms = {farm: v for farm, v in farms.items() if token.may_read(farm)}
        out: dict[str, Any] = {
            "origin": self.config.log_origin,
            "farms": farms,
            "chain": self.chain,
            "nodes": self.nodes,
        }
        if token is not None:
            out["token"] = {"id": token.id, "scope": token.scope}
        return out

    def export(self, params: dict[str, Any]) -> bytes:
        from collector.export import export_bundle

        return export_bundle(self.config, **params)

    def verify(self, params: dict[str, Any]) -> dict[str, Any]:
        from collector.export import log_vkey
        from inspector.report import render_html
        from inspector.verify import VerifyOptions, verify_bundle

        # one at a time: the collector's cores are for ingest
        if not self._verify_lock.acquire(blocking=False):
            raise Busy("a verification is running")
        try:
            data = self.export(params)
            offline = not self.nodes
            result = verify_bundle(
                data,
                nodes=self.nodes,
                chain=None if offline else self.chain,
                offline=offline,
                log_key=log_vkey(self.config),
                options=VerifyOptions(workers=1),
            )
        finally:
            self._verify_lock.release()
        return {
            "verdict": result.verdict,
            "passed": result.passed,
            "summary": result.summary_line(),
            "bundle_bytes": len(data),
            "result": result.to_json(),
            **_report_parts(render_html(result, standalone=False)),
        }


_STYLE_BLOCK = re.compile(r"<style>(.*?)</style>", re.S)
_STYLE_ATTR = re.compile(r'\sstyle="([^"]*)"')
_COLOUR_STYLE = re.compile(r"(?:background|color):#[0-9A-Fa-f]{3,8}")


def _report_parts(html: str) -> dict[str, str]:
    """The report for a page whose CSP allows no inline style: its ``<style>`` blocks become
    one style sheet (``report_css``, applied by the page as a constructed sheet) and each style
    attribute — a colour from the report's own tables, as every bundle string is escaped — a
    ``data-fp-style`` attribute with a rule in that sheet; any other style is dropped."""
    css = _STYLE_BLOCK.findall(html)
    rules: dict[str, int] = {}

    def attribute(m: re.Match[str]) -> str:
        value = m.group(1).strip().rstrip(";").replace(" ", "")
        if not _COLOUR_STYLE.fullmatch(value):
            return ""
        return f' data-fp-style="{rules.setdefault(value, len(rules))}"'

    body = _STYLE_ATTR.sub(attribute, _STYLE_BLOCK.sub("", html))
    css += [f'[data-fp-style="{n}"] {{ {v} !important; }}' for v, n in rules.items()]
    return {"report_html": body, "report_css": "\n".join(css)}


def _filename(params: dict[str, Any]) -> str:
    parts = [p for p in (params.get("farm"), params.get("field"), params.get("gateway")) if p]
    stamp = time.strftime("%Y%m%d", time.gmtime(params["start"]))
    safe = "-".join("".join(c if c.isalnum() or c in "-_." else "_" for c in p) for p in parts)
    return f"fieldproof-{safe or 'all'}-{stamp}.fpb"


def _handler(app: InspectorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "fieldproof-inspector"
        sys_version = ""
        timeout = SOCKET_TIMEOUT_S
        #: a body was sent and not read: drain it before closing, or the close would reset the
        #: connection and the client might lose the answer
        unread_body = False

        def finish(self) -> None:
            super().finish()
            if not self.unread_body:
                return
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(LINGER_S)
                left = MAX_LINGER_BYTES
                while left > 0 and (chunk := self.connection.recv(min(left, 65536))):
                    left -= len(chunk)
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(
            self,
            status: int,
            body: bytes,
            ctype: str,
            extra: dict[str, str] | None = None,
            cache: str = "no-store",
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", cache)
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cross-Origin-Opener-Policy", "same-origin")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json", extra)

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """Errors of http.server itself (bad request line, unknown method): JSON with the
            status phrase only, never the request's bytes."""
            self.close_connection = True
            try:
                phrase = HTTPStatus(code).phrase
            except ValueError:
                phrase = "error"
            self._json(code, {"error": phrase})

        def do_GET(self) -> None:
            self._handle("GET")

        def do_POST(self) -> None:
            self._handle("POST")

        # ------------------------------------------------------------ checks

        def _check_host(self) -> None:
            hosts = self.headers.get_all("Host") or []
            if len(hosts) != 1:
                raise BadRequest("give exactly one Host header")
            if hosts[0].strip().lower() not in app.allowed_hosts:
                raise ApiError(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    "this server does not answer for that Host name (the operator lists the "
                    "names it is served under in [api] allowed_hosts)",
                )

        def _authenticate(self) -> ApiToken:
            values = self.headers.get_all("Authorization") or []
            if len(values) != 1:
                raise ApiError(
                    HTTPStatus.UNAUTHORIZED,
                    "an access token is required: send one 'Authorization: Bearer <token>' "
                    "header (the operator makes tokens with 'fieldproof collector api-token "
                    "create')",
                    {"WWW-Authenticate": _REALM},
                )
            scheme, _, text = values[0].strip().partition(" ")
            text = text.strip()
            token = app.tokens.check(text) if scheme.lower() == "bearer" else None
            if token is None:
                log.warning(
                    "inspector API: refused a token (id %s) from %s",
                    app.tokens.peek_id(text) or "malformed",
                    self.client_address[0],
                )
                raise ApiError(
                    HTTPStatus.UNAUTHORIZED,
                    "the access token is not valid (unknown, revoked or expired)",
                    {"WWW-Authenticate": _REALM + ', error="invalid_token"'},
                )
            return token

        def _body(self) -> dict[str, Any]:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise ApiError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    "send the parameters as a JSON object (Content-Type: application/json)",
                )
            if self.headers.get("Transfer-Encoding") is not None:
                self.close_connection = True
                raise ApiError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length, not chunks")
            lengths = self.headers.get_all("Content-Length") or []
            if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,9}", lengths[0].strip()):
                self.close_connection = True
                raise ApiError(HTTPStatus.LENGTH_REQUIRED, "give one numeric Content-Length")
            size = int(lengths[0])
            if size > MAX_BODY:
                self.close_connection = True
                raise ApiError(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    f"the request body is larger than {MAX_BODY} bytes",
                )
            data = self.rfile.read(size)
            self.unread_body = False
            if len(data) != size:
                self.close_connection = True
                raise BadRequest("the request body is shorter than its Content-Length")
            try:
                doc = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise BadRequest(
                    "the request body is not JSON (UTF-8; NaN and Infinity are not JSON)"
                ) from None
            if not isinstance(doc, dict):
                raise BadRequest("the request body must be a JSON object")
            return doc

        # ------------------------------------------------------------ dispatch

        def _handle(self, method: str) -> None:
            from collector.export import ExportError

            path = urlsplit(self.path).path
            self.unread_body = method == "POST"
            try:
                if not self.path.startswith("/"):
                    raise BadRequest("the request target must be a path")
                self._check_host()
                if path.startswith(TILES_PREFIX):
                    if method != "GET":
                        raise ApiError(
                            HTTPStatus.METHOD_NOT_ALLOWED,
                            "tiles are read with GET",
                            {"Allow": "GET"},
                        )
                    self._tile(path[len(TILES_PREFIX) :])
                    return
                asset = _assets().get(path)
                route = _Route("GET", False) if asset is not None else _ROUTES.get(path)
                if route is None:
                    raise ApiError(HTTPStatus.NOT_FOUND, "no such resource")
                if method != route.method:
                    raise ApiError(
                        HTTPStatus.METHOD_NOT_ALLOWED,
                        f"{path} takes {route.method} only"
                        + (" with the parameters as a JSON body" if route.method == "POST" else ""),
                        {"Allow": route.method},
                    )
                if asset is not None:
                    self._send(200, *asset)
                    return
                self._api(path, self._authenticate())
            except ApiError as exc:
                self._json(exc.status, {"error": exc.message}, exc.headers)
            except ExportError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except Busy as exc:
                log.info("inspector API: busy (%s); %s answered 429", exc, path)
                self._json(
                    HTTPStatus.TOO_MANY_REQUESTS,
                    {"error": "the server is busy with other exports; try again later"},
                    {"Retry-After": str(app.api.retry_after_s)},
                )
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True  # the client left or stalled: nothing to answer
            except Exception:
                error_id = secrets.token_hex(6)
                log.exception("inspector API: error %s on %s %s", error_id, method, path)
                self._json(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    {
                        "error": f"internal error {error_id}: the operator finds it in the "
                        "collector's log",
                        "id": error_id,
                    },
                )

        def _tile(self, rel: str) -> None:
            """The log's public tiles (C2SP tlog-tiles, docs/evidence-log.md §8), read-only
            from ``<data_dir>/tiles``. Hash tiles and the checkpoint reveal sizes and timing,
            not readings: public. Entry bundles hold every farm's data: an all-farms token."""
            if rel == "checkpoint":
                name = "checkpoint"
                ctype, cache = "text/plain; charset=utf-8", "no-cache, max-age=0"
            else:
                try:
                    level, index, width = parse_path(rel)
                except TileError:
                    raise ApiError(HTTPStatus.NOT_FOUND, "no such tile") from None
                if level is None and self._authenticate().farm is not None:
                    raise ApiError(
                        HTTPStatus.FORBIDDEN,
                        "entry bundles hold every farm's messages: they need a token for all farms",
                    )
                # rebuilt from the parsed numbers: nothing of the request reaches the path
                name = (
                    entries_path(index, width) if level is None else tile_path(level, index, width)
                )
                ctype, cache = "application/octet-stream", "public, max-age=31536000, immutable"
            try:
                data = (app.tiles_dir / name).read_bytes()
            except FileNotFoundError:
                raise ApiError(HTTPStatus.NOT_FOUND, "no such tile (yet)") from None
            self._send(200, data, ctype, cache=cache)

        def _api(self, path: str, token: ApiToken) -> None:
            from fieldproof.formats.bundle import MEDIA_TYPE

            if path == "/api/scope":
                self._json(200, app.scope(token))
                return
            params = _scope_params(self._body(), app.api.max_range_s)
            _authorize(params, token)
            log.info(
                "inspector API: %s farm=%s field=%s gateway=%s from=%.0f to=%.0f by token %s",
                path,
                params["farm"],
                params["field"],
                params["gateway"],
                params["start"],
                params["end"],
                token.id,
            )
            with app.export_slot():
                if path == "/api/export":
                    data = app.export(params)
                    self._send(
                        200,
                        data,
                        MEDIA_TYPE,
                        {"Content-Disposition": f'attachment; filename="{_filename(params)}"'},
                    )
                else:
                    self._json(200, app.verify(params))

    return Handler


def serve(
    config: CollectorConfig, host: str | None = None, port: int | None = None
) -> InspectorServer:
    """Start the inspector API in a background thread (for the collector service)."""
    server = InspectorServer(config, host, port).start()
    log.info("inspector page on %s", server.url)
    return server


@click.command("inspector")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--host",
    default=None,
    help="address to bind (default: [api] host, 127.0.0.1); keep loopback unless behind a "
    "TLS-terminating reverse proxy",
)
@click.option(
    "--port",
    default=None,
    type=click.IntRange(0, 65535),
    help=f"port (default: [api] port, {DEFAULT_PORT})",
)
def inspector_command(config_path: Path, host: str | None, port: int | None) -> None:
    """Serve the inspector page and export API of this collector (access tokens:
    'fieldproof collector api-token create')."""
    from fieldproof.config import load_collector_config
    from fieldproof.errors import ConfigError

    try:
        config = load_collector_config(config_path)
        server = InspectorServer(config, host, port)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if not server.tokens.all():
        click.echo(
            f"no access tokens yet: make one with 'fieldproof collector api-token create "
            f"--config {config_path} --farm FARM' (or --all-farms)",
            err=True,
        )
    click.echo(f"inspector page: {server.url}/", err=True)
    click.echo("answering for Host: " + ", ".join(sorted(server.allowed_hosts)), err=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
