"""The InfluxDB v2 write path through influxdb-client.

No InfluxDB 2 server can run here (Debian ships 1.6 only), so this test double is a local HTTP
server that records the exact requests the official client sends to ``/api/v2/write`` and
answers like InfluxDB 2 does (204, 400 with a JSON error, 503). The v1 path meets the real
InfluxDB 1.6 in test_pipeline.py."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from collector.influx import InfluxRejected, InfluxUnavailable, V2Writer, write_salvaging
from fieldproof.config import InfluxConfig


class Recorder(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []
    status = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            import gzip

            body = gzip.decompress(body)
        Recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        status = Recorder.status
        if status == 400 and b"bad" not in body:
            status = 204  # only batches containing the bad line are refused
        self.send_response(status)
        if status == 400:
            payload = json.dumps({"code": "invalid", "message": "field type conflict"}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        else:
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.requests = []
    Recorder.status = 204
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
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


def test_server_errors_are_retryable(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Recorder.status = 503
    w = _writer(server, monkeypatch)
    with pytest.raises(InfluxUnavailable):
        w.write(["m v=1 1"])
    w.close()


def test_rejected_line_is_salvaged_one_by_one(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Recorder.status = 400
    w = _writer(server, monkeypatch)
    with pytest.raises(InfluxRejected):
        w.write(["m v=1 1", 'm bad="x" 2'])
    refused = write_salvaging(w, ["m v=1 1", 'm bad="x" 2', "m v=3 3"])
    w.close()
    assert refused == 1
    written = [r["body"] for r in Recorder.requests[2:]]
    assert b"m v=1 1" in written and b"m v=3 3" in written


def test_unreachable_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    from fieldproof.services import free_port

    w = _writer(f"http://127.0.0.1:{free_port()}", monkeypatch)
    with pytest.raises(InfluxUnavailable):
        w.write(["m v=1 1"])
    w.close()
