"""A collector site and enrolled gateways for the enrollment and doctor tests: real CA, real
files."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from pathlib import Path
from typing import Any

import click
import httpx
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from anchor.evidence import EvidenceLog
from collector.broker import TEMPLATE_DIR, SecureMosquitto, provision_broker_certs
from collector.ca import CertificateAuthority
from collector.enrollment import (
    Enroller,
)
from collector.registry import Registry
from collector.security_cli import (
    approve_command,
)
from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats.enrollment import REQUEST_TYPE
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.keys import create_key_file
from fieldproof.services import ServiceError, free_port
from fieldproof.tls import fingerprint, make_csr
from fieldproof.wire import encode_deterministic, gateway_id_for, public_key_bytes, sign1
from gateway.config import GatewayConfig, load_gateway_config
from gateway.enroll import (
    enroll_command,
    enroll_install_command,
)

FARM, FIELD = "farm-a", "north"


@dataclass
class Site:
    root: Path
    collector_config: Path
    cfg: CollectorConfig
    ca: CertificateAuthority
    broker_certs: Path

    def registry(self) -> Registry:
        db = open_db(self.cfg.db_path)
        return Registry(db, EvidenceLog.open(db, self.cfg.log_origin, key_file=None))

    def enroller(self) -> Enroller:
        return Enroller.from_config(self.cfg, self.registry())

    def log_events(self) -> list[dict[str, object]]:
        db = open_db(self.cfg.db_path)
        try:
            log = EvidenceLog.open(db, self.cfg.log_origin, key_file=None)
            entries = log.store.entries(0, log.store.size())
        finally:
            db.close()
        return [e for e in map(parse_registry_event, entries) if e is not None]


def collector_toml_head(cdir: Path, mqtt_port: int, influx: str) -> str:
    """The start of a collector config on a TLS broker at ``mqtt_port`` (its certificates under
    ``<cdir>/tls``), ending inside ``[influx]`` with the given lines (``url = …``, …)."""
    return f"""collector_id = "collector-1"
data_dir = "{cdir}"
stats_interval_s = 5

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[mqtt.tls]
ca_file = "{cdir}/tls/ca.pem"
cert_file = "{cdir}/tls/collector.pem"
key_file = "{cdir}/tls/collector.key"

[influx]
{influx}
"""


def make_site(root: Path, mqtt_port: int = 8883, influx_url: str = "http://127.0.0.1:1") -> Site:
    cdir = root / "collector"
    cdir.mkdir(parents=True)
    path = cdir / "collector.toml"
    path.write_text(collector_toml_head(cdir, mqtt_port, f'url = "{influx_url}"') + f"""
[enrollment]
crl_copy = "{root}/broker/certs/crl.pem"
broker_host = "127.0.0.1"
broker_port = {mqtt_port}
""")
    cfg = load_collector_config(path)
    ca = CertificateAuthority.create(cfg.data_dir / "ca")
    certs = root / "broker" / "certs"
    provision_broker_certs(ca, certs, ["127.0.0.1", "localhost"])
    return Site(root, path, cfg, ca, certs)


#: how many free ports :func:`start_site_broker` tries when another process took the one it chose
PORT_ATTEMPTS = 5


def start_site_broker(
    root: Path,
    influx_url: str = "http://127.0.0.1:1",
    collector_ids: tuple[str, ...] = ("collector-1",),
    template_dir: Path = TEMPLATE_DIR,
) -> tuple[Site, SecureMosquitto]:
    """A site (``make_site``) and its TLS broker started on a free port. The site's configs
    name the port before the broker binds it, so another process (a parallel test worker, an
    outgoing connection) may take it meanwhile; then both are made again on another port."""
    for attempt in range(PORT_ATTEMPTS):
        port = free_port()
        site = make_site(root / ("site" if attempt == 0 else f"site-{attempt}"), port, influx_url)
        broker = SecureMosquitto(
            root / "mosquitto",
            site.broker_certs.parent,
            list(collector_ids),
            port,
            template_dir=template_dir,
        )
        try:
            broker.start()
        except ServiceError as exc:
            if "in use" not in str(exc).lower() or attempt == PORT_ATTEMPTS - 1:
                raise
            continue
        return site, broker
    raise AssertionError("unreachable")  # the last attempt returns or raises


def make_gateway(
    root: Path, name: str, mqtt_port: int = 8883, farm: str = FARM, field: str = FIELD,
    fault_rate: float = 0.0,
) -> tuple[Path, GatewayConfig]:  # fmt: skip
    gdir = root / name
    gdir.mkdir(parents=True)
    create_key_file(gdir / "gateway.key")
    path = gdir / "gateway.toml"
    path.write_text(f"""key_file = "{gdir}/gateway.key"
data_dir = "{gdir}"
farm = "{farm}"
field = "{field}"
interval_s = 0.2
status_interval_s = 5
confirm_timeout_s = 10

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[mqtt.tls]
ca_file = "{gdir}/tls/ca.pem"
cert_file = "{gdir}/tls/client.pem"
key_file = "{gdir}/tls/client.key"

[[sensors]]
kind = "simulated"
name = "station"
seed = 3
fault_rate = {fault_rate}
""")
    return path, load_gateway_config(path)


def enroll_by_file(site: Site, gw_config: Path) -> str:
    """The offline path: request file → operator approves → gateway installs the answer."""
    ok(invoke(enroll_command, "--config", gw_config, "--installer", "Ana (tech 7)",
              "--location", "45.1,7.6", "--out", gw_config.parent / "request.cose"))  # fmt: skip
    out = ok(invoke(approve_command, "--config", site.collector_config, "--yes",
                    "--operator", "op", gw_config.parent / "request.cose"))  # fmt: skip
    assert "enrolled" in out
    response = next(gw_config.parent.glob("gw-*.response.json"))
    # the operator tells the technician the CA's fingerprint (nothing else vouches for it here)
    ok(invoke(enroll_install_command, "--config", gw_config,
              "--ca-fingerprint", fingerprint(site.ca.cert), response))  # fmt: skip
    return response.name.split(".")[0]


def forge_request(
    key: Ed25519PrivateKey, tls_key: ec.EllipticCurvePrivateKey, *, gw: str | None = None,
    **fields: object,
) -> bytes:  # fmt: skip
    """An enrollment request built by hand, as an attacker builds one: signed by ``key`` for
    ``gw`` (default: the id ``key`` derives) with none of the gateway's own checks."""
    pk = public_key_bytes(key)
    gw = gw or gateway_id_for(pk)
    body: dict[str, Any] = {
        "t": REQUEST_TYPE, "gw": gw, "pk": pk, "farm": FARM, "field": FIELD, "location": "",
        "installer": "mallory", "sensors": [], "time": time.time(),
        "nonce": secrets.token_bytes(16), "csr": make_csr(tls_key, gw).public_bytes(Encoding.DER),
    }  # fmt: skip
    body.update(fields)
    return sign1(encode_deterministic(body), key, gw.encode())


class OnPathProxy:
    """Someone between the gateway and a plain-HTTP enrollment endpoint: every request is
    passed on to ``upstream`` and every answer goes through ``tamper(method, body)`` first."""

    def __init__(
        self, upstream: str, tamper: Callable[[str, int, bytes], bytes] | None = None
    ) -> None:
        self.upstream = upstream
        self.tamper = tamper or (lambda method, status, body: body)
        self.seen: list[tuple[str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self, method: str) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n) if n else b""
                r = httpx.request(
                    method, proxy.upstream + self.path, content=body or None, timeout=30
                )
                out = proxy.tamper(method, r.status_code, r.content)
                proxy.seen.append((method, self.path, r.status_code))
                self.send_response(r.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def do_POST(self) -> None:
                self._relay("POST")

            def do_GET(self) -> None:
                self._relay("GET")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def invoke(command: click.Command, *args: str | PathLike[str], input: str | None = None) -> Result:
    """Run a CLI command in-process; paths are passed as the shell would pass them (strings)."""
    return CliRunner().invoke(command, [str(a) for a in args], input=input)


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.output
