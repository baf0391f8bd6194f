"""``fieldproof gateway enroll``, ``enroll-install`` and ``rotate-key``: the gateway's side of
enrollment (collector/enrollment.py has the formats and the collector's side).

Everything secret is made here and stays here: the Ed25519 signing key (``gateway init``) and
the MQTT TLS key (P-256, made by ``enroll``), both mode 0600. What leaves the device is a
request signed by the gateway key that carries its public key, where it is, who installed it,
its sensors and a CSR; what comes back is a certificate with CN = the gateway id.

The running agent imports this module (it used to hold ``gateway_identity``, now in
gateway.identity and re-exported here), so the CA and enrollment code from ``collector`` is
imported inside the functions that use it: ``gateway run`` never loads it."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding

from fieldproof.errors import ConfigError
from fieldproof.keys import KeyFileError, create_key_file, load_key_file, write_private_file
from fieldproof.wire import public_key_bytes
from gateway.config import GatewayConfig, load_gateway_config

# re-exported: these lived here before gateway.identity
from gateway.identity import TlsPaths as TlsPaths
from gateway.identity import gateway_identity as gateway_identity
from gateway.identity import identity_file as identity_file
from gateway.identity import tls_paths as tls_paths


def pending_file(cfg: GatewayConfig) -> Path:
    return cfg.data_dir / "enroll" / "pending.json"


def _write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# Making the request
# --------------------------------------------------------------------------------------------


def sensor_inventory(cfg: GatewayConfig) -> list[dict[str, Any]]:
    """What is wired to this gateway, as configured (goes into the signed request)."""
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "config": s.model_dump(mode="json", exclude={"name", "kind"}, exclude_none=True),
        }
        for s in cfg.sensors
    ]


def make_request(
    cfg: GatewayConfig,
    *,
    installer: str,
    farm: str | None = None,
    field: str | None = None,
    location: str = "",
    token: str | None = None,
    now: float | None = None,
) -> tuple[bytes, str]:
    """Create the TLS key (first time only) and CSR, sign the request, remember what is
    needed to check the answer. Returns (request bytes, gateway id)."""
    from fieldproof.formats.enrollment import EnrollmentError, build_request, parse_token
    from fieldproof.tls import load_private_key, make_csr, new_tls_key, write_private_key

    key = load_key_file(cfg.key_file)
    gw = gateway_identity(cfg, key)
    farm = farm if farm is not None else cfg.farm
    field = field if field is not None else cfg.field
    if not farm or not field:
        raise EnrollmentError(
            "farm and field are needed: set farm/field in the gateway config or give "
            "--farm and --field"
        )
    if not installer.strip():
        raise EnrollmentError("--installer: say who installed this gateway (name or id)")
    paths = tls_paths(cfg)
    if paths.key_file.exists():
        tls_key = load_private_key(paths.key_file)
    else:
        tls_key = new_tls_key()
        write_private_key(paths.key_file, tls_key)
    raw = build_request(
        key,
        make_csr(tls_key, gw),
        farm=farm,
        field=field,
        location=location,
        installer=installer.strip(),
        sensors=sensor_inventory(cfg),
        now=time.time() if now is None else now,
        token=token,
    )
    pending: dict[str, Any] = {"gateway": gw}
    if token is not None:
        token_id, mac_key = parse_token(token)
        pending.update(token=token_id, mac_key=mac_key.hex())
    write_private_file(pending_file(cfg), json.dumps(pending).encode())
    return raw, gw


# --------------------------------------------------------------------------------------------
# Installing the response
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installed:
    gateway: str
    cert_file: Path
    ca_file: Path
    not_after: float
    #: how the CA was authenticated: "token", "fingerprint", "pre-installed CA" or "" (not)
    authenticated_by: str
    ca_fingerprint: str
    broker: tuple[str, int] | None
    config_hint: str


def install_response(
    cfg: GatewayConfig,
    data: bytes,
    ca_fingerprint: str | None = None,
    trust_unverified_ca: bool = False,
) -> Installed:
    """Check a response belongs to this gateway and its TLS key, and that something vouches
    for its CA, then install the certificate (and the CA certificate, when none is installed
    yet). What vouches: the seal of the token this gateway enrolled with (required whenever it
    enrolled with one: a response without it was stripped on the way), ``ca_fingerprint``
    (told by the operator), or a CA installed beforehand. With none of them the CA is refused
    unless ``trust_unverified_ca``: an on-path attacker could have swapped it (and the broker)
    and would then confirm readings the collector never got, emptying the spool."""
    from cryptography import x509

    from fieldproof.formats.enrollment import (
        EnrollmentError,
        check_response_mac,
        parse_response,
        printable,
    )
    from fieldproof.tls import CAError, common_name, fingerprint, load_private_key

    resp = parse_response(data)
    key = load_key_file(cfg.key_file)
    gw = gateway_identity(cfg, key)
    if resp["gw"] != gw:
        raise EnrollmentError(f"this response is for {resp['gw']}; this gateway is {gw}")
    # (parse_response checked resp["gw"] is a gateway id: no stranger's text is echoed)
    try:
        cert = x509.load_pem_x509_certificate(resp["cert"].encode())
        ca = x509.load_pem_x509_certificate(resp["ca"].encode())
    except ValueError:
        raise EnrollmentError("the response's certificates are not PEM") from None
    paths = tls_paths(cfg)
    try:
        tls_key = load_private_key(paths.key_file)
    except CAError as exc:
        raise EnrollmentError(
            f"{exc}; the TLS key made by 'fieldproof gateway enroll' is gone: enroll again"
        ) from None
    if cert.public_key() != tls_key.public_key():
        raise EnrollmentError(
            f"the certificate is for another TLS key than {paths.key_file}; the key changed "
            "after this request was made: enroll again"
        )
    if common_name(cert.subject) != gw:
        raise EnrollmentError(f"the certificate is not for {gw}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise EnrollmentError(f"the certificate was not issued by the enclosed CA: {exc}") from None
    ca_fp = fingerprint(ca)
    authenticated_by = ""
    try:
        pending = json.loads(pending_file(cfg).read_text())
    except (OSError, ValueError):
        pending = {}
    if not isinstance(pending, dict):
        pending = {}
    mac_key = pending.get("mac_key")
    if pending.get("gateway") == gw and isinstance(mac_key, str):
        # this gateway enrolled with a token: only a response sealed with it is the collector's
        try:
            sealed = check_response_mac(resp, bytes.fromhex(mac_key))
        except ValueError:
            sealed = False
        if not sealed:
            raise EnrollmentError(
                "the response does not carry the enrollment token's seal"
                + (" (it has none)" if "mac" not in resp else "")
                + ": it was changed or stripped on the way, or comes from another collector."
                " Do not install it; enroll again over a trusted link (https with the"
                " collector's CA installed)."
            )
        authenticated_by = "token"
    if ca_fingerprint is not None:
        if ca_fingerprint.replace(":", "").lower() != ca_fp:
            raise EnrollmentError(
                f"the CA's fingerprint is {ca_fp}, not the {printable(ca_fingerprint, 100)} "
                "you were given"
            )
        authenticated_by = authenticated_by or "fingerprint"
    if paths.ca_file.exists():
        try:
            have = x509.load_pem_x509_certificate(paths.ca_file.read_bytes())
        except ValueError:
            raise EnrollmentError(f"{paths.ca_file} is not a PEM certificate") from None
        if fingerprint(have) != ca_fp:
            raise EnrollmentError(
                f"the response's CA differs from the one installed at {paths.ca_file}; it "
                "comes from another collector. Ask the operator which CA is right."
            )
        authenticated_by = authenticated_by or "pre-installed CA"
    elif not authenticated_by and not trust_unverified_ca:
        raise EnrollmentError(
            f"nothing vouches for the CA in this response (fingerprint {ca_fp}): no token, "
            "no --ca-fingerprint, no CA installed before. Ask the operator for the CA's "
            "fingerprint and give it with --ca-fingerprint (or install the CA with "
            "install-gateway.sh --ca-file). Only if you compared the fingerprint yourself: "
            "--trust-unverified-ca."
        )
    if not paths.ca_file.exists():
        _write_public(paths.ca_file, ca.public_bytes(Encoding.PEM))
    _write_public(paths.cert_file, cert.public_bytes(Encoding.PEM))
    if pending:
        installed = json.dumps({"gateway": gw, "installed": True}).encode()
        write_private_file(pending_file(cfg), installed)
    broker = resp.get("broker")
    broker_t = (
        (str(broker["host"]), int(broker["port"]))
        if isinstance(broker, dict) and "host" in broker and "port" in broker
        else None
    )
    hint = ""
    if not paths.configured or (
        broker_t is not None and (cfg.mqtt.host, cfg.mqtt.port) != broker_t
    ):
        host, port = broker_t or (cfg.mqtt.host, cfg.mqtt.port)
        hint = (
            "put this in the gateway config:\n"
            f'[mqtt]\nhost = "{host}"\nport = {port}\n'
            f'[mqtt.tls]\nca_file = "{paths.ca_file}"\ncert_file = "{paths.cert_file}"\n'
            f'key_file = "{paths.key_file}"'
        )
    return Installed(
        gw,
        paths.cert_file,
        paths.ca_file,
        cert.not_valid_after_utc.timestamp(),
        authenticated_by,
        ca_fp,
        broker_t,
        hint,
    )


# --------------------------------------------------------------------------------------------
# Talking to the enrollment endpoint
# --------------------------------------------------------------------------------------------


def _http_verify(cfg: GatewayConfig) -> ssl.SSLContext | bool:
    """Trust the collector's CA when it is installed (install-gateway.sh --ca-file), else the
    system's roots (an endpoint behind a public TLS proxy)."""
    ca = tls_paths(cfg).ca_file
    return ssl.create_default_context(cafile=str(ca)) if ca.exists() else True


def post_request(cfg: GatewayConfig, url: str, raw: bytes) -> tuple[int, bytes]:
    import httpx

    from fieldproof.formats.enrollment import EnrollmentError

    try:
        r = httpx.post(
            url.rstrip("/") + "/v1/enroll",
            content=raw,
            headers={"Content-Type": "application/cose"},
            timeout=30,
            verify=_http_verify(cfg),
        )
    except httpx.HTTPError as exc:
        raise EnrollmentError(
            f"cannot reach the enrollment endpoint {url}: {exc}; check the uplink, or send "
            "the request file to the operator instead"
        ) from None
    return r.status_code, r.content


def fetch_response(
    cfg: GatewayConfig, url: str, gateway: str, timeout: float = 30.0
) -> tuple[int, bytes]:
    import httpx

    from fieldproof.formats.enrollment import EnrollmentError

    try:
        r = httpx.get(
            url.rstrip("/") + f"/v1/enroll/{gateway}", timeout=timeout, verify=_http_verify(cfg)
        )
    except httpx.HTTPError as exc:
        raise EnrollmentError(f"cannot reach the enrollment endpoint {url}: {exc}") from None
    return r.status_code, r.content


def _error_text(body: bytes) -> str:
    """The endpoint's error message, escaped: it reaches the technician's terminal and may come
    from whoever sits between the gateway and the collector."""
    from fieldproof.formats.enrollment import printable

    try:
        return printable(str(json.loads(body)["error"]), 500)
    except (ValueError, KeyError, TypeError):
        return printable(body[:200].decode("utf-8", "replace"))


# --------------------------------------------------------------------------------------------
# Key rotation
# --------------------------------------------------------------------------------------------


def _spool_next_seq(cfg: GatewayConfig) -> int:
    import sqlite3

    if not cfg.spool_path.exists():
        return 1
    db = sqlite3.connect(f"file:{cfg.spool_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 1


def service_active(unit: str = "fieldproof-gateway.service") -> bool:
    """True when systemd says the gateway service runs (False when there is no systemd)."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return False
    try:
        return (
            subprocess.run(
                [systemctl, "is-active", "--quiet", unit], timeout=10, check=False
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def rotate_key(cfg: GatewayConfig, now: float | None = None) -> tuple[bytes, str, int, Path]:
    """Make a new signing key and switch to it. The gateway must be stopped: the new key signs
    from the spool's next sequence number on; everything before stays signed by the old key,
    which the collector keeps for exactly those. Returns (rotation request, gateway id,
    first seq of the new key, where the old key was moved)."""
    from fieldproof.formats.enrollment import EnrollmentError, build_rotation

    old = load_key_file(cfg.key_file)
    gw = gateway_identity(cfg, old)
    from_seq = _spool_next_seq(cfg)
    staged = cfg.key_file.with_name(cfg.key_file.name + ".new")
    if staged.exists():
        raise EnrollmentError(
            f"{staged} exists: an earlier rotation stopped half way. Move it away and retry."
        )
    new = create_key_file(staged)
    t = time.time() if now is None else now
    raw = build_rotation(old, new, gw, from_seq, t)
    retired = cfg.key_file.with_name(
        cfg.key_file.name + time.strftime(".retired-%Y%m%dT%H%M%SZ", time.gmtime(t))
    )
    os.replace(cfg.key_file, retired)
    os.replace(staged, cfg.key_file)
    write_private_file(
        identity_file(cfg),
        json.dumps({"gateway": gw, "public_key": public_key_bytes(new).hex()}).encode(),
    )
    return raw, gw, from_seq, retired


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def _load(config_path: Path) -> GatewayConfig:
    try:
        return load_gateway_config(config_path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _show_installed(result: Installed) -> None:
    click.echo(f"certificate installed: {result.cert_file}")
    click.echo(
        "valid until: " + time.strftime("%Y-%m-%d", time.gmtime(result.not_after)) + " (UTC)"
    )
    click.echo(f"CA: {result.ca_file}")
    click.echo(f"CA fingerprint: {result.ca_fingerprint}")
    if result.authenticated_by:
        click.echo(f"CA checked by: {result.authenticated_by}")
    else:
        click.echo(
            "WARNING: nothing vouched for this CA (no token, no --ca-fingerprint, no CA "
            "installed before); installed because of --trust-unverified-ca. Compare the "
            "fingerprint above with the operator's now."
        )
    if result.config_hint:
        click.echo(result.config_hint)
    click.echo("next: 'fieldproof gateway doctor --config …', then start the service")


TRUST_UNVERIFIED_CA = click.option(
    "--trust-unverified-ca",
    is_flag=True,
    help="install the CA even though nothing vouches for it (no token, no --ca-fingerprint, "
    "no CA installed before); only after comparing its fingerprint with the operator's",
)


@click.command("enroll")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--installer", required=True, help="who installs this gateway (name or staff id)")
@click.option("--farm", default=None, help="default: farm in the config")
@click.option("--field", default=None, help="default: field in the config")
@click.option("--location", default="", help="'lat,lon' or a description of the spot")
@click.option("--token", default=None, help="one-time enrollment token from the operator")
@click.option(
    "--url", default=None, help="the collector's enrollment endpoint (default: enrollment_url)"
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="write the request here (default: <data_dir>/enroll/request.cose)",
)
@click.option("--ca-fingerprint", default=None, help="SHA-256 of the CA the operator told you")
@TRUST_UNVERIFIED_CA
def enroll_command(
    config_path: Path,
    installer: str,
    farm: str | None,
    field: str | None,
    location: str,
    token: str | None,
    url: str | None,
    out: Path | None,
    ca_fingerprint: str | None,
    trust_unverified_ca: bool,
) -> None:
    """Ask the collector to enroll this gateway: signed request + certificate request.

    With a token and the endpoint reachable, the answer comes back at once and is installed.
    Otherwise give the request file to the operator ('fieldproof collector devices approve
    FILE') and install the answer with 'fieldproof gateway enroll-install'."""
    from fieldproof.formats.enrollment import EnrollmentError
    from fieldproof.tls import CAError

    cfg = _load(config_path)
    try:
        raw, gw = make_request(
            cfg, installer=installer, farm=farm, field=field, location=location, token=token
        )
    except (EnrollmentError, KeyFileError, CAError) as exc:
        raise click.ClickException(str(exc)) from None
    path = out or cfg.data_dir / "enroll" / "request.cose"
    _write_public(path, raw)
    click.echo(f"gateway id: {gw}")
    click.echo(f"request written to {path}")
    url = url or cfg.enrollment_url
    if not url:
        click.echo("give that file to the operator, who runs:")
        click.echo(f"  fieldproof collector devices approve {path.name}")
        click.echo(
            "then install the answer: fieldproof gateway enroll-install --config … "
            + ("" if tls_paths(cfg).ca_file.exists() else "--ca-fingerprint <the operator's> ")
            + "FILE"
        )
        return
    try:
        status, body = post_request(cfg, url, raw)
        if status == 202:
            click.echo("the collector has the request; an operator must approve it.")
            click.echo(
                "then: fieldproof gateway enroll-install --config … --url "
                + url
                + ("" if tls_paths(cfg).ca_file.exists() else " --ca-fingerprint <the operator's>")
            )
            return
        if status != 200:
            raise EnrollmentError(f"the collector refused the request: {_error_text(body)}")
        result = install_response(cfg, body, ca_fingerprint, trust_unverified_ca)
    except (EnrollmentError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("approved.")
    _show_installed(result)


@click.command("enroll-install")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--url", default=None, help="fetch the answer from the enrollment endpoint")
@click.option("--ca-fingerprint", default=None, help="SHA-256 of the CA the operator told you")
@TRUST_UNVERIFIED_CA
@click.argument("response", type=click.Path(path_type=Path), required=False)
def enroll_install_command(
    config_path: Path,
    url: str | None,
    ca_fingerprint: str | None,
    trust_unverified_ca: bool,
    response: Path | None,
) -> None:
    """Install the collector's answer (a file, or fetched with --url)."""
    from fieldproof.formats.enrollment import EnrollmentError

    cfg = _load(config_path)
    try:
        if response is not None:
            data = response.read_bytes()
        else:
            url = url or cfg.enrollment_url
            if not url:
                raise EnrollmentError("give the response FILE or --url")
            gw = gateway_identity(cfg, load_key_file(cfg.key_file))
            status, data = fetch_response(cfg, url, gw)
            if status == 202:
                raise EnrollmentError("not approved yet; ask the operator, then run this again")
            if status != 200:
                raise EnrollmentError(f"no answer for {gw}: {_error_text(data)}")
        result = install_response(cfg, data, ca_fingerprint, trust_unverified_ca)
    except OSError as exc:
        raise click.ClickException(f"cannot read {response}: {exc.strerror}") from None
    except (EnrollmentError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    _show_installed(result)


@click.command("rotate-key")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="write the rotation request here (default: <data_dir>/enroll/rotate.cose)",
)
def rotate_key_command(config_path: Path, out: Path | None) -> None:
    """Replace this gateway's signing key (stop the gateway service first).

    The old key is kept aside; the collector keeps verifying what it signed before. Give the
    request file to the operator: 'fieldproof collector devices rotate FILE'. Until then the
    collector quarantines new messages and the gateway resends them afterwards."""
    from fieldproof.formats.enrollment import EnrollmentError

    cfg = _load(config_path)
    if service_active():
        raise click.ClickException(
            "the gateway service is running; stop it first: sudo systemctl stop fieldproof-gateway"
        )
    try:
        raw, gw, from_seq, retired = rotate_key(cfg)
    except (EnrollmentError, KeyFileError) as exc:
        raise click.ClickException(str(exc)) from None
    path = out or cfg.data_dir / "enroll" / "rotate.cose"
    _write_public(path, raw)
    click.echo(f"{gw}: new key in {cfg.key_file}; messages from seq {from_seq} use it")
    click.echo(f"old key moved to {retired} (delete it once the operator has applied this)")
    click.echo(f"rotation request: {path}")
    click.echo(f"operator: fieldproof collector devices rotate {path.name}")


def mount(gateway_group: click.Group) -> None:
    """Add enroll, enroll-install, rotate-key and doctor to ``fieldproof gateway``."""
    from gateway.doctor import doctor_command

    for cmd in (enroll_command, enroll_install_command, rotate_key_command, doctor_command):
        gateway_group.add_command(cmd)
