"""``verify --against-influx`` with credentials: an InfluxDB 1.x user and password (HTTP Basic
authentication; the password from FIELDPROOF_INFLUX_PASSWORD or --influx-password-file, never
the command line) or a 2.x API token (FIELDPROOF_INFLUX_TOKEN). No secret may appear in a
finding, an error, the JSON result or the command's output.

The 1.x path runs against the real influxd the suite uses (fieldproof/services.InfluxDB), with
``auth-enabled = true`` added to its generated configuration by a subclass here: services.py
has no switch for it. The token path is checked against a small local HTTP server that records
each request's headers and parameters, because the only InfluxDB here (Debian's 1.6) has no
tokens; the server answers as InfluxDB's /query does, so the comparison runs to the end.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
from click.testing import CliRunner

from collector.export import export_bundle
from fieldproof.services import InfluxDB
from inspector.cli import verify_command
from inspector.verify import InfluxAuth, UsageError, check_against_influx, verify_bundle
from tests.support.bundles import Farm

NOW = time.time()
T0 = NOW - 7200
USER, PASSWORD, TOKEN = "inspector", "pw-Zq8!x#3", "tok-9f8e7d6c5b4a"
DB = "fieldproof"


class AuthInfluxDB(InfluxDB):
    """The suite's influxd with authentication on (the first user is made without it)."""

    def command(self) -> list[str]:
        cmd = super().command()
        config = self.workdir / "influxdb.conf"
        config.write_text(config.read_text().replace(
            "[http]\n  enabled = true\n", "[http]\n  enabled = true\n  auth-enabled = true\n"))
        return cmd


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthInfluxDB]:
    db = AuthInfluxDB(tmp_path_factory.mktemp("influx-auth"))
    db.start()
    try:
        q = f"CREATE USER {USER} WITH PASSWORD '{PASSWORD}' WITH ALL PRIVILEGES"
        httpx.post(f"{db.url}/query", data={"q": q}, timeout=10).raise_for_status()
        r = httpx.post(f"{db.url}/query", data={"q": f"CREATE DATABASE {DB}"}, timeout=10)
        assert r.status_code == 401, "auth-enabled did not take effect"
        httpx.post(f"{db.url}/query", data={"q": f"CREATE DATABASE {DB}"},
                   auth=(USER, PASSWORD), timeout=10).raise_for_status()
        yield db
    finally:
        db.stop()


@pytest.fixture
def evidence(tmp_path: Path) -> Iterator[tuple[Farm, bytes, list[str]]]:
    """A verified bundle of 3 messages and the line protocol of their readings, written as
    the collector writes them (docs/influx-schema.md)."""
    farm = Farm(tmp_path)
    g = farm.enroll()
    items = [g.message(T0 + 60 * i) for i in range(3)]
    farm.accept(items)
    farm.checkpoint()
    lines = [
        f"{r.quantity},farm={g.farm},field={g.field},gateway={g.gateway},sensor={r.sensor},"
        f"unit={r.unit} value={r.value},seq={p.seq}i {round(r.time * 1e9)}"
        for _, p in items for r in p.readings
    ]
    data = export_bundle(farm.config, farm=None, field=None, gateway=None, start=T0 - 60,
                         end=NOW + 60)
    yield farm, data, lines
    farm.close()


def _verified(farm: Farm, data: bytes) -> Any:
    r = verify_bundle(data, nodes=[], chain=None, offline=True, log_key=farm.vkey)
    assert r.codes("error") == set(), [f.message for f in r.findings]  # unanchored: a warning
    return r


def _no_secret(*texts: str) -> None:
    for t in texts:
        assert PASSWORD not in t and TOKEN not in t and "pw-Zq8" not in t


def test_user_and_password_against_a_real_influxd(influx: AuthInfluxDB,
                                                  evidence: tuple[Farm, bytes, list[str]]
                                                  ) -> None:
    farm, data, lines = evidence
    httpx.post(f"{influx.url}/write", params={"db": DB}, content="\n".join(lines),
               auth=(USER, PASSWORD), timeout=10).raise_for_status()

    r = _verified(farm, data)
    cmp = check_against_influx(r, influx.url, DB, auth=InfluxAuth(USER, PASSWORD))
    assert cmp.error is None and cmp.matched == len(lines) == 15
    assert r.codes("error") == set() and r.passed

    r = _verified(farm, data)
    cmp = check_against_influx(r, influx.url, DB)
    assert r.codes("error") == {"influx_unreadable"} and cmp.error is not None
    assert "HTTP 401" in cmp.error and "FIELDPROOF_INFLUX_PASSWORD" in cmp.error

    r = _verified(farm, data)
    wrong = PASSWORD + "-wrong"
    cmp = check_against_influx(r, influx.url, DB, auth=InfluxAuth(USER, wrong))
    assert r.codes("error") == {"influx_unreadable"}
    assert "check --influx-user" in (cmp.error or "")
    _no_secret(json.dumps(r.to_json()), repr(InfluxAuth(USER, wrong)))
    assert wrong not in json.dumps(r.to_json())

    # credentials in the URL (percent-encoded) work too, and the URL is kept without them
    host = influx.url.removeprefix("http://")
    r = _verified(farm, data)
    cmp = check_against_influx(r, f"http://{USER}:{quote(PASSWORD, safe='')}@{host}", DB)
    assert cmp.error is None and cmp.matched == 15
    assert cmp.url == influx.url
    # not encoded, the '#' breaks the URL: an error, still without the password in it
    for url in (f"http://{USER}:{PASSWORD}@{host}", f"http://{USER}:{PASSWORD}@127.0.0.1:9",
                f"http://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:9"):
        r = _verified(farm, data)
        cmp = check_against_influx(r, url, DB)
        assert cmp.error is not None and r.codes("error") == {"influx_unreadable"}
        _no_secret(json.dumps(r.to_json()))
        assert quote(PASSWORD, safe="") not in json.dumps(r.to_json())


def test_cli_reads_the_password_from_env_or_file(tmp_path: Path, influx: AuthInfluxDB,
                                                 evidence: tuple[Farm, bytes, list[str]]
                                                 ) -> None:
    farm, data, lines = evidence
    httpx.post(f"{influx.url}/write", params={"db": DB}, content="\n".join(lines),
               auth=(USER, PASSWORD), timeout=10).raise_for_status()
    bundle = tmp_path / "b.fpb"
    bundle.write_bytes(data)
    base = [str(bundle), "--offline", "--log-key", farm.vkey, "--against-influx", influx.url,
            "--database", DB, "--json"]
    runner = CliRunner()
    res = runner.invoke(verify_command, [*base, "--influx-user", USER],
                        env={"FIELDPROOF_INFLUX_PASSWORD": PASSWORD})
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["influx"]["matched"] == 15
    secret = tmp_path / "influx.pw"
    secret.write_text(PASSWORD + "\n")
    res = runner.invoke(verify_command, [*base, "--influx-user", USER,
                                         "--influx-password-file", str(secret)],
                        env={"FIELDPROOF_INFLUX_PASSWORD": "ignored: the file wins"})
    assert res.exit_code == 0, res.output
    secret.write_text("not-it\n")
    res = runner.invoke(verify_command, [*base, "--influx-user", USER,
                                         "--influx-password-file", str(secret)])
    assert res.exit_code == 1 and "influx_unreadable" in res.output
    assert "not-it" not in res.output
    res = runner.invoke(verify_command, [*base, "--influx-user", USER],
                        env={"FIELDPROOF_INFLUX_PASSWORD": PASSWORD + "x"})
    assert res.exit_code == 1
    _no_secret(res.output)
    # usage errors (exit 2): a user without a password, a password without a user, both kinds
    res = runner.invoke(verify_command, [*base, "--influx-user", USER],
                        env={"FIELDPROOF_INFLUX_PASSWORD": None})
    assert res.exit_code == 2 and "FIELDPROOF_INFLUX_PASSWORD" in res.output
    res = runner.invoke(verify_command, [*base, "--influx-password-file", str(secret)])
    assert res.exit_code == 2 and "--influx-user" in res.output
    res = runner.invoke(verify_command, [*base, "--influx-user", USER],
                        env={"FIELDPROOF_INFLUX_PASSWORD": PASSWORD,
                             "FIELDPROOF_INFLUX_TOKEN": TOKEN})
    assert res.exit_code == 2 and "not both" in res.output
    _no_secret(res.output)


# ----------------------------------------------------------------------------- recording server


class Recorder:
    """An HTTP server answering /query like InfluxDB (one empty result, or ``status``), and
    keeping every request's path, parameters and headers."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                rec.requests.append((url.path, parse_qs(url.query), dict(self.headers)))
                body = (b'{"results":[{"statement_id":0}]}\n' if rec.status == 200 else
                        b'{"error":"authorization failed"}\n')
                self.send_response(rec.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    yield r
    r.close()


def test_token_goes_in_the_authorization_header_only(recorder: Recorder,
                                                      evidence: tuple[Farm, bytes, list[str]]
                                                      ) -> None:
    farm, data, _ = evidence
    r = _verified(farm, data)
    cmp = check_against_influx(r, recorder.url, DB, auth=InfluxAuth(token=TOKEN))
    # the server holds nothing: no point of these gateways, so a wrong database, not deletions
    assert cmp.deleted == 0 and "wrong database?" in (cmp.error or "")
    ((path, params, headers),) = recorder.requests
    assert path == "/query" and params["db"] == [DB]
    assert headers["Authorization"] == f"Token {TOKEN}"
    assert not {"u", "p", "token"} & set(params)
    _no_secret(json.dumps(params), json.dumps(r.to_json()))

    r = _verified(farm, data)
    check_against_influx(r, recorder.url, DB, auth=InfluxAuth(USER, PASSWORD))
    _, params, headers = recorder.requests[-1]
    assert headers["Authorization"] == "Basic " + base64.b64encode(
        f"{USER}:{PASSWORD}".encode()).decode()
    _no_secret(json.dumps(params))


def test_refused_token_is_reported_without_it(evidence: tuple[Farm, bytes, list[str]]) -> None:
    farm, data, _ = evidence
    refusing = Recorder(status=401)
    try:
        r = _verified(farm, data)
        cmp = check_against_influx(r, refusing.url, DB, auth=InfluxAuth(token=TOKEN))
    finally:
        refusing.close()
    assert r.codes("error") == {"influx_unreadable"}
    assert "HTTP 401" in (cmp.error or "")
    _no_secret(json.dumps(r.to_json()))


def test_cli_takes_the_token_from_the_environment(tmp_path: Path, recorder: Recorder,
                                                  evidence: tuple[Farm, bytes, list[str]]
                                                  ) -> None:
    farm, data, _ = evidence
    bundle = tmp_path / "b.fpb"
    bundle.write_bytes(data)
    res = CliRunner().invoke(verify_command, [
        str(bundle), "--offline", "--log-key", farm.vkey, "--against-influx", recorder.url,
        "--database", DB], env={"FIELDPROOF_INFLUX_TOKEN": TOKEN})
    # an empty server holds none of the gateways: said to be the wrong database
    assert res.exit_code == 1 and "influx_no_points" in res.output
    assert recorder.requests[-1][2]["Authorization"] == f"Token {TOKEN}"
    _no_secret(res.output)


def test_auth_arguments_are_checked() -> None:
    with pytest.raises(UsageError, match="not both"):
        InfluxAuth(USER, PASSWORD, TOKEN)
    with pytest.raises(UsageError, match="needs a password"):
        InfluxAuth(USER)
    assert PASSWORD not in repr(InfluxAuth(USER, PASSWORD))
    assert TOKEN not in repr(InfluxAuth(token=TOKEN))
