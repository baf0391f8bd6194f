"""Attacks on the inspector API (collector/api.py), each performed against the real server on
loopback: no or a wrong token, a token for another farm, DNS rebinding (a foreign Host), CSRF
(a GET or a form post for an action), non-finite and endless periods, hostile request bodies,
more exports than the server runs at once, and a failure whose text must not reach the client.
The page in a real browser is in test_inspector_page.py."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from collector.api import InspectorServer
from collector.api_tokens import TokenFile, TokenStoreError, tokens_path
from fieldproof.config import ApiConfig, CollectorConfig
from fieldproof.formats.bundle import decode_bundle
from fieldproof.wire import open_message
from tests.support.bundles import Farm

NOW = time.time()
T0 = NOW - 6 * 3600
DAY = 86400.0
MAX_DAYS = 30
RETRY_AFTER = 7
PROXY_NAME = "inspector.farm.example"


@dataclass
class Api:
    farm: Farm
    config: CollectorConfig
    server: InspectorServer
    tokens: TokenFile
    all_farms: str
    farm_a: str
    farm_b: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return int(self.server.httpd.server_address[1])

    def post(self, path: str, body: Any, token: str | None = None,
             headers: dict[str, str] | None = None) -> httpx.Response:
        h = {"Authorization": f"Bearer {token or self.all_farms}", **(headers or {})}
        return httpx.post(f"{self.url}{path}", json=body, headers=h, timeout=60)

    def raw(self, path: str, content: bytes, token: str | None = None,
            ctype: str = "application/json") -> httpx.Response:
        return httpx.post(f"{self.url}{path}", content=content, timeout=60,
                          headers={"Authorization": f"Bearer {token or self.all_farms}",
                                   "Content-Type": ctype})


def _config(farm: Farm, **api: Any) -> CollectorConfig:
    settings = {"max_range_s": MAX_DAYS * DAY, "max_concurrent_exports": 2,
                "retry_after_s": RETRY_AFTER, "allowed_hosts": [PROXY_NAME], **api}
    return farm.config.model_copy(update={"api": ApiConfig(**settings)})


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    farm = Farm(tmp_path_factory.mktemp("collector"))
    a, b = farm.enroll("farm-a", "north"), farm.enroll("farm-b", "east")
    farm.run(a, T0, 10, step=300)
    farm.run(b, T0, 10, step=300)
    farm.checkpoint()
    config = _config(farm)
    tokens = TokenFile(tokens_path(config))
    everything, _ = tokens.create(None, "all")
    only_a, _ = tokens.create("farm-a", "a")
    only_b, _ = tokens.create("farm-b", "b")
    server = InspectorServer(config, port=0).start()
    try:
        yield Api(farm, config, server, tokens, everything, only_a, only_b)
    finally:
        server.close()
        farm.close()


def _raw_http(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes no HTTP client library would, return (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ------------------------------------------------------------------------------ tokens

ROUTES = [("GET", "/api/scope"), ("POST", "/api/export"), ("POST", "/api/verify")]


def _call(api: Api, method: str, path: str, headers: dict[str, str],
          url_extra: str = "") -> httpx.Response:
    body = json.dumps({"farm": "farm-a", "from": T0}).encode() if method == "POST" else None
    return httpx.request(method, f"{api.url}{path}{url_extra}", content=body, timeout=60,
                         headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_missing_or_wrong_token_is_401(api: Api, method: str, path: str) -> None:
    token_id, secret = api.all_farms.split(".")[1:]
    other_secret = ("A" if secret[0] != "A" else "B") + secret[1:]
    attempts: list[tuple[dict[str, str], str]] = [
        ({}, ""),
        ({"Authorization": "Bearer"}, ""),
        ({"Authorization": f"Bearer fpa1.{token_id}.{other_secret}"}, ""),  # right id, wrong key
        ({"Authorization": f"Bearer fpa1.0badc0de.{secret}"}, ""),  # unknown id
        ({"Authorization": f"Bearer {api.all_farms}x"}, ""),
        ({"Authorization": f"Basic {api.all_farms}"}, ""),
        ({"Authorization": "Bearer " + "A" * 100_00}, ""),
        ({"Cookie": f"token={api.all_farms}"}, ""),  # cookies are no credential here
        ({}, f"?token={api.all_farms}&access_token={api.all_farms}"),  # nor is the URL
    ]
    for headers, extra in attempts:
        r = _call(api, method, path, headers, extra)
        assert r.status_code == 401, (headers.keys(), extra, r.text)
        assert r.headers["www-authenticate"].startswith('Bearer realm="fieldproof-inspector"')
        assert "error" in r.json() and secret not in r.text
    # the control: the same request with the token in the header works
    ok = _call(api, method, path, {"Authorization": f"Bearer {api.all_farms}"})
    assert ok.status_code == 200, ok.text


def test_expired_and_revoked_tokens_are_refused_by_the_running_server(api: Api) -> None:
    past = TokenFile(api.tokens.path, clock=lambda: NOW - 2 * DAY)
    expired, _ = past.create("farm-a", "expired yesterday", ttl_s=DAY)
    r = httpx.get(f"{api.url}/api/scope", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401

    fresh, tok = api.tokens.create("farm-a", "revoked soon")
    auth = {"Authorization": f"Bearer {fresh}"}
    assert httpx.get(f"{api.url}/api/scope", headers=auth).status_code == 200
    assert api.tokens.revoke(tok.id) is not None  # what 'api-token revoke' does
    assert httpx.get(f"{api.url}/api/scope", headers=auth).status_code == 401


def test_a_farm_token_reads_only_its_farm(api: Api) -> None:
    auth = {"Authorization": f"Bearer {api.farm_b}"}
    scope = httpx.get(f"{api.url}/api/scope", headers=auth).json()
    assert list(scope["farms"]) == ["farm-b"] and scope["token"]["scope"] == "farm farm-b"

    for path in ("/api/export", "/api/verify"):
        r = api.post(path, {"farm": "farm-a", "from": T0}, api.farm_b)
        assert r.status_code == 403 and "farm farm-b only" in r.json()["error"]
    # no farm: the token's farm, and nothing of the other
    r = api.post("/api/export", {"from": T0}, api.farm_b)
    assert r.status_code == 200
    bundle = decode_bundle(r.content)
    assert bundle.scope.farm == "farm-b" and len(bundle.messages) == 10
    gw_a = next(g.gateway for g in api.farm.gateways if g.farm == "farm-a")
    gw_b = next(g.gateway for g in api.farm.gateways if g.farm == "farm-b")
    assert {open_message(m.data)[0] for m in bundle.messages} == {gw_b}  # no reading of farm-a
    # naming a gateway of the other farm selects nothing (farm AND gateway)
    r = api.post("/api/export", {"gateway": gw_a, "from": T0}, api.farm_b)
    assert r.status_code == 400 and "no gateway is enrolled" in r.json()["error"]
    # the all-farms token reads farm-a
    assert api.post("/api/export", {"farm": "farm-a", "from": T0}).status_code == 200


def test_no_token_text_in_log_lines(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token_id, secret = api.farm_a.split(".")[1:]
    wrong = f"fpa1.{token_id}.{'B' if secret[0] != 'B' else 'C'}{secret[1:]}"
    assert api.post("/api/export", {"from": T0}, api.farm_a).status_code == 200
    assert api.post("/api/export", {"from": T0}, wrong).status_code == 401
    assert f"token {token_id}" in caplog.text and f"(id {token_id})" in caplog.text
    assert secret not in caplog.text and wrong.split(".")[2] not in caplog.text


def test_a_token_file_others_can_read_is_refused(api: Api, tmp_path: Path) -> None:
    farm_dir = tmp_path / "data"
    config = api.config.model_copy(update={"data_dir": farm_dir})
    TokenFile(tokens_path(config)).create(None)
    os.chmod(tokens_path(config), 0o644)
    with pytest.raises(TokenStoreError, match="chmod 600"):
        InspectorServer(config, port=0)


# ------------------------------------------------------------------------------ DNS rebinding


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1",
                                  "localhost", "{port}", "127.0.0.1:{port}.evil.example"])
def test_foreign_host_is_421(api: Api, host: str) -> None:
    """A rebinding attacker's page asks the loopback API under its own name: refused, even
    with a valid token, before anything is read."""
    headers = {"Host": host.format(port=api.port), "Authorization": f"Bearer {api.all_farms}"}
    for r in (httpx.get(f"{api.url}/", headers=headers),
              httpx.get(f"{api.url}/api/scope", headers=headers),
              httpx.post(f"{api.url}/api/export", json={"from": T0}, headers=headers)):
        assert r.status_code == 421, r.text
        assert "does not answer for that Host" in r.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LocalHost:{port}",
                                  "[::1]:{port}", PROXY_NAME])
def test_the_names_the_api_is_served_under_work(api: Api, host: str) -> None:
    headers = {"Host": host.format(port=api.port), "Authorization": f"Bearer {api.all_farms}"}
    assert httpx.get(f"{api.url}/api/scope", headers=headers).status_code == 200


def test_missing_or_double_host_is_400(api: Api) -> None:
    assert _raw_http(api.port, b"GET / HTTP/1.0\r\n\r\n")[0] == 400
    double = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\nHost: evil.example\r\n" \
             "Connection: close\r\n\r\n"
    assert _raw_http(api.port, double.encode())[0] == 400


# ------------------------------------------------------------------------------ CSRF


def test_actions_are_post_only(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fieldproof.collector.api")
    auth = {"Authorization": f"Bearer {api.all_farms}"}
    for path in ("/api/export", "/api/verify"):
        r = httpx.get(f"{api.url}{path}", params={"farm": "farm-a", "from": T0}, headers=auth)
        assert r.status_code == 405 and r.headers["allow"] == "POST", r.text
        assert httpx.get(f"{api.url}{path}").status_code == 405  # also without a token
    assert "/api/export farm=" not in caplog.text  # nothing was exported
    r = httpx.post(f"{api.url}/api/scope", json={}, headers=auth)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    assert httpx.post(f"{api.url}/", json={}).status_code == 405
    r = httpx.put(f"{api.url}/api/export", json={"from": T0}, headers=auth)
    assert r.status_code == 501 and r.json() == {"error": "Not Implemented"}
    # the page does nothing on its own: /?run=1 is the same static page
    assert httpx.get(f"{api.url}/?run=1&farm=farm-a").content == httpx.get(f"{api.url}/").content


def test_a_cross_site_form_post_cannot_act(api: Api) -> None:
    """What an HTML form on another site can send: no Authorization header, a simple content
    type. Refused for the token; with one, the form's content type is refused too."""
    form = {"farm": "farm-a", "from": str(T0)}
    for ctype in ("application/x-www-form-urlencoded", "text/plain", "multipart/form-data"):
        r = httpx.post(f"{api.url}/api/export", data=form, headers={"Content-Type": ctype})
        assert r.status_code == 401
    r = httpx.post(f"{api.url}/api/export", data=form,
                   headers={"Authorization": f"Bearer {api.all_farms}"})
    assert r.status_code == 415 and "application/json" in r.json()["error"]


# ------------------------------------------------------------------------------ periods


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"from": "nan"}', "from must be a finite time (Unix seconds or ISO 8601), not 'nan'"),
        (b'{"from": "NaN"}', "from must be a finite time"),
        (b'{"from": "inf"}', "from must be a finite time"),
        (b'{"from": "-Infinity"}', "from must be a finite time"),
        (b'{"from": "1e400"}', "finite time (Unix seconds or ISO 8601), not '1e400'"),
        (b'{"from": 1e400}', "from must be a finite time"),
        (b'{"from": ' + b"9" * 400 + b"}", "from must be a finite time"),
        # a fixed id: T0 is the clock at collection, and parallel workers must agree on ids
        pytest.param(f'{{"from": {T0}, "to": "nan"}}'.encode(), "to must be a finite time",
                     id="from-T0-to-nan"),
        (b'{"from": NaN}', "NaN and Infinity are not JSON"),
        (b'{"from": Infinity}', "NaN and Infinity are not JSON"),
        (b'{"from": 1e20}', "between 1970-01-01 and 9999-12-31"),
        (b'{"from": -5}', "between 1970-01-01 and 9999-12-31"),
        (b'{"from": "0001-01-01T00:00+14:00"}', "between 1970-01-01 and 9999-12-31"),
        (b'{"from": "1969-12-31"}', "between 1970-01-01 and 9999-12-31"),
        (b'{"from": true}', "from must be Unix seconds or an ISO 8601"),
        (b'{"from": ["1"]}', "from must be Unix seconds or an ISO 8601"),
    ],
)
def test_times_must_be_finite(api: Api, body: bytes, says: str) -> None:
    for path in ("/api/export", "/api/verify"):
        r = api.raw(path, body)
        assert r.status_code == 400, r.text
        assert says in r.json()["error"]
        assert "Traceback" not in r.text and "Error" not in r.text


def test_period_longer_than_the_maximum_is_400(api: Api) -> None:
    long = {"farm": "farm-a", "from": NOW - (MAX_DAYS + 1) * DAY, "to": NOW}
    for path in ("/api/export", "/api/verify"):
        r = api.post(path, long)
        assert r.status_code == 400
        assert f"at most {MAX_DAYS:.1f} days" in r.json()["error"]
    # an open end counts from now
    r = api.post("/api/export", {"from": NOW - (MAX_DAYS + 1) * DAY})
    assert r.status_code == 400 and "31.0 days long" in r.json()["error"]
    # the control: just under the maximum is served
    ok = api.post("/api/export", {"farm": "farm-a", "from": NOW - (MAX_DAYS - 1) * DAY})
    assert ok.status_code == 200


# ------------------------------------------------------------------------------ bodies


@pytest.mark.parametrize(
    ("content", "status", "says"),
    [
        (b"farm=farm-a", 400, "not JSON"),
        (b"\xff\xfe{}", 400, "not JSON"),
        (b'["farm-a"]', 400, "must be a JSON object"),
        # nesting deep enough for a RecursionError where the recursion limit is the default:
        # refused as not JSON there, else for what it is parsed into; never a 500
        (b"[" * 4000 + b"]" * 4000, 400, "JSON"),
        (b'{"farm":' * 900 + b"1" + b"}" * 900, 400, "JSON"),
        (b'{"from": 1, "fram": "a"}', 400, "unknown parameter"),
        (b'{"from": 1, "farm": 5}', 400, "farm must be a string"),
        (b'{"from": 1, "farm": "a\\nb"}', 400, "control characters"),
        (b'{"from": 1, "farm": "' + b"x" * 9000 + b'"}', 413, "larger than 8192 bytes"),
    ],
)
def test_hostile_bodies_are_refused(api: Api, content: bytes, status: int, says: str) -> None:
    r = api.raw("/api/export", content)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert says in error or (content.startswith(b'{"farm":{') and "farm must be" in error)


def test_chunked_or_unsized_body_is_refused(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"from": 1}'

    r = httpx.post(f"{api.url}/api/export", content=chunks(),
                   headers={"Authorization": f"Bearer {api.all_farms}",
                            "Content-Type": "application/json"})
    assert r.status_code == 411
    head = (f"POST /api/export HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n"
            f"Authorization: Bearer {api.all_farms}\r\nContent-Type: application/json\r\n"
            "Content-Length: -1\r\nConnection: close\r\n\r\n")
    status, body = _raw_http(api.port, head.encode())
    assert status == 411 and b"Content-Length" in body


def test_server_errors_of_its_own_say_only_the_status(api: Api) -> None:
    """http.server's own refusals echo the request line; here they say the status only."""
    status, body = _raw_http(api.port, b"GET /<script>alert(1)</script> x HTTP/1.0\r\n\r\n")
    assert status == 400 and json.loads(body) == {"error": "Bad Request"}
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as s:
        s.sendall(b"GET /<script>alert(1)</script> HTTP/9.9\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert json.loads(data.partition(b"\r\n\r\n")[2] or data) == {
        "error": "HTTP Version Not Supported"}


# ------------------------------------------------------------------------------ concurrency


class GatedServer(InspectorServer):
    """The real server whose exports wait at a gate the test opens, so "N exports running"
    is a state the test sets up, not a race it hopes to win."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.inside = threading.Semaphore(0)

    def export(self, params: dict[str, Any]) -> bytes:
        self.inside.release()
        if not self.gate.wait(120):
            raise RuntimeError("the test never opened the gate")
        return super().export(params)


def _in_thread(fn: Callable[[], httpx.Response], out: list[httpx.Response]) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t


def test_exports_beyond_the_limit_get_429(api: Api) -> None:
    server = GatedServer(api.config, port=0)
    server.start()  # kept apart: start() is typed InspectorServer, the gate is ours
    url = server.url
    auth = {"Authorization": f"Bearer {api.all_farms}"}

    def export() -> httpx.Response:
        return httpx.post(f"{url}/api/export", json={"farm": "farm-a", "from": T0},
                          headers=auth, timeout=120)

    try:
        running: list[httpx.Response] = []
        threads = [_in_thread(export, running) for _ in range(2)]  # the limit
        for _ in threads:
            assert server.inside.acquire(timeout=120), "an export never started"
        extra: list[httpx.Response] = []
        for t in [_in_thread(export, extra) for _ in range(4)]:
            t.join(120)
        assert [r.status_code for r in extra] == [429] * 4
        for r in extra:
            assert r.headers["retry-after"] == str(RETRY_AFTER)
            assert "busy" in r.json()["error"]
        verify = httpx.post(f"{url}/api/verify", json={"farm": "farm-a", "from": T0},
                            headers=auth, timeout=120)
        assert verify.status_code == 429
        server.gate.set()
        for t in threads:
            t.join(120)
        assert [r.status_code for r in running] == [200, 200]
        assert export().status_code == 200  # the slots are free again
    finally:
        server.gate.set()
        server.close()


def test_one_verification_at_a_time(api: Api) -> None:
    config = _config(api.farm, max_concurrent_exports=4)
    server = GatedServer(config, port=0)
    server.start()  # kept apart: start() is typed InspectorServer, the gate is ours
    auth = {"Authorization": f"Bearer {api.all_farms}"}

    def verify() -> httpx.Response:
        return httpx.post(f"{server.url}/api/verify", json={"farm": "farm-a", "from": T0},
                          headers=auth, timeout=120)

    try:
        first: list[httpx.Response] = []
        t = _in_thread(verify, first)
        assert server.inside.acquire(timeout=120)
        second = verify()  # export slots are free, the verifier is not
        assert second.status_code == 429 and second.headers["retry-after"] == str(RETRY_AFTER)
        server.gate.set()
        t.join(120)
        assert first[0].status_code == 200 and first[0].json()["verdict"] in ("pass", "warn")
    finally:
        server.gate.set()
        server.close()


# ------------------------------------------------------------------------------ 500


def test_a_failure_answers_only_an_id(api: Api, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A corrupt collector database: the client gets an id, the log gets the id and the
    exception; nothing of the exception, path or database reaches the client."""
    data_dir = tmp_path / "broken"
    data_dir.mkdir()
    config = api.config.model_copy(update={"data_dir": data_dir})
    config.db_path.write_bytes(b"this is not an SQLite database " * 64)
    token, _ = TokenFile(tokens_path(config)).create(None)
    server = InspectorServer(config, port=0).start()
    caplog.set_level(logging.ERROR, logger="fieldproof.collector.api")
    try:
        r = httpx.get(f"{server.url}/api/scope", headers={"Authorization": f"Bearer {token}"})
    finally:
        server.close()
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "id"} and re.fullmatch(r"[0-9a-f]{12}", body["id"])
    assert body["error"] == (f"internal error {body['id']}: the operator finds it in the "
                             "collector's log")
    for leak in ("database", "sqlite", "Error", str(tmp_path)):
        assert leak not in r.text
    [record] = [rec for rec in caplog.records if body["id"] in rec.getMessage()]
    assert record.exc_info is not None and "not a database" in str(record.exc_info[1])


def test_a_token_file_opened_up_while_running_fails_closed(api: Api, tmp_path: Path) -> None:
    config = _config(api.farm, tokens_file=tmp_path / "tokens.json")
    token, _ = TokenFile(tokens_path(config)).create(None)
    server = InspectorServer(config, port=0).start()
    auth = {"Authorization": f"Bearer {token}"}
    try:
        assert httpx.get(f"{server.url}/api/scope", headers=auth).status_code == 200
        os.chmod(tokens_path(config), 0o644)
        r = httpx.get(f"{server.url}/api/scope", headers=auth)
    finally:
        server.close()
    assert r.status_code == 500 and set(r.json()) == {"error", "id"}
    assert token.split(".")[2] not in r.text
