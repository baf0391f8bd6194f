"""The InfluxDB v2 write path through influxdb-client: only the answers the real InfluxDB 1.8
(tests/integration/test_influx_v2_real.py) cannot give.

No InfluxDB 2.x/3.x server can run here (Debian ships 1.6; scripts/peers builds 1.8), so this
test double is a local HTTP server that records the exact requests the official client sends
to ``/api/v2/write`` and answers what it is told, in InfluxDB 2.x's JSON shape. What is here,
and why the real 1.8 cannot show it:

* the request itself (``org``, ``bucket``, ``precision``, the token header): 1.8 ignores
  ``org``, and no server tells what it was sent;
* 404 ``bucket "…" not found`` — 2.x/Cloud's missing bucket (1.8 says "database not found"
  and the collector creates it; a bucket it must not create);
* 422 — 2.x's answer to a field type conflict (1.8 answers 400 ``partial write``);
* 503 and 429 — an overloaded or rate-limiting server (1.8 does not answer either on demand);
* a 503 outage that turns into a 401: the writer's own once-only report of the new problem."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from collector.influx import (
    InfluxCredentialsRefused,
    InfluxRejected,
    InfluxUnavailable,
    V2Writer,
    write_salvaging,
)
from fieldproof.config import InfluxConfig

Answer = tuple[int, dict[str, str] | None]


class Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    #: answers to give in order (the last one repeats); a batch holding b"bad" gets ``bad``
    answers: list[Answer] = []
    bad: Answer | None = None

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        Recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if Recorder.bad is not None:
            status, payload = Recorder.bad if b"bad" in body else (204, None)
        else:
            status, payload = Recorder.answers[0]
            if len(Recorder.answers) > 1:
                Recorder.answers.pop(0)
        self.send_response(status)
        if payload is not None:
            data = json.dumps(payload).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.requests = []
    Recorder.answers = [(204, None)]
    Recorder.bad = None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _writer(url: str, monkeypatch: pytest.MonkeyPatch) -> V2Writer:
    monkeypatch.setenv("TEST_INFLUX_TOKEN", "s3cret-token")
    return V2Writer(
        InfluxConfig(
            api="v2", url=url, org="coop", bucket="farm", token_env="TEST_INFLUX_TOKEN", timeout_s=2
        )
    )


def test_writes_line_protocol_with_org_bucket_precision_token(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _writer(server, monkeypatch)
    lines = [
        "soil_moisture,farm=a,gateway=gw-1 value=0.3,seq=1i 1700000000000000000",
        "soil_moisture,farm=a,gateway=gw-1 value=0.31,seq=2i 1700000001000000000",
    ]
    w.write(lines)
    w.close()
    assert len(Recorder.requests) == 1
    req = Recorder.requests[0]
    assert req["path"].startswith("/api/v2/write?")
    assert "org=coop" in req["path"] and "bucket=farm" in req["path"]
    assert "precision=ns" in req["path"]
    assert req["headers"]["Authorization"] == "Token s3cret-token"
    assert req["body"].decode().split("\n") == lines


def test_missing_bucket_on_2x_is_held_and_never_created(
    server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    Recorder.answers = [(404, {"code": "not found", "message": 'bucket "farm" not found'})]
    w = _writer(server, monkeypatch)
    for _ in range(2):
        with pytest.raises(InfluxUnavailable) as held:
            write_salvaging(w, ["m v=1 1", "m v=2 2"])
        assert held.value.kind == "bucket_missing"
        assert "influx bucket create --name farm --org coop" in str(held.value)
    w.close()
    # one request per attempt: no line-by-line salvage, no CREATE DATABASE on /query
    assert [r["path"].split("?")[0] for r in Recorder.requests] == ["/api/v2/write"] * 2


@pytest.mark.parametrize("status", [503, 429])
def test_overload_is_retryable(server: str, monkeypatch: pytest.MonkeyPatch, status: int) -> None:
    Recorder.answers = [(status, {"code": "unavailable", "message": "busy"})]
    w = _writer(server, monkeypatch)
    with pytest.raises(InfluxUnavailable) as held:
        write_salvaging(w, ["m v=1 1", "m v=2 2"])
    w.close()
    assert held.value.kind == "unavailable" and not isinstance(held.value, InfluxCredentialsRefused)
    assert len(Recorder.requests) == 1


def test_2x_type_conflict_422_is_salvaged(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Recorder.bad = (
        422,
        {"code": "unprocessable entity", "message": "failure writing points: field type conflict"},
    )
    w = _writer(server, monkeypatch)
    with pytest.raises(InfluxRejected, match="422"):
        w.write(["m v=1 1", 'm bad="x" 2'])
    refused: list[str] = []
    assert write_salvaging(w, ["m v=1 1", 'm bad="x" 2', "m v=3 3"], refused) == 1
    w.close()
    assert refused == ['m bad="x" 2']
    written = [r["body"] for r in Recorder.requests[2:]]
    assert b"m v=1 1" in written and b"m v=3 3" in written


def test_outage_that_turns_into_refused_credentials_is_reported_once(
    server: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The ingest loop logs the first failure of an outage; when the server then answers
    401, the writer says so itself, once, naming the config key."""
    caplog.set_level(logging.INFO, logger="fieldproof.collector.influx")
    unauthorized = (401, {"code": "unauthorized", "message": "unauthorized access"})
    Recorder.answers = [(503, None), (503, None), unauthorized]
    w = _writer(server, monkeypatch)
    for _ in range(2):
        with pytest.raises(InfluxUnavailable):
            w.write(["m v=1 1"])
    for _ in range(3):
        with pytest.raises(InfluxCredentialsRefused):
            w.write(["m v=1 1"])
    Recorder.answers = [(204, None)]
    w.write(["m v=1 1"])
    w.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "[influx] token_env = 'TEST_INFLUX_TOKEN'" in errors[0]
    assert "unauthorized access" in errors[0]
    assert any("takes writes again" in r.getMessage() for r in caplog.records)
