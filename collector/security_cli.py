"""Operator commands for the CA, enrollment, revocation and key rotation.

Mounted by collector/cli.py::

    fieldproof collector ca init | server-cert | collector-cert | crl | list
    fieldproof collector devices approve | pending | revoke | rotate | token
    fieldproof collector enroll-server

``devices revoke`` here replaces the registry-only one: it also revokes the gateway's
certificates and rewrites the CRL the broker reads."""

from __future__ import annotations

import getpass
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import click

from anchor.logstore import LogError
from collector.broker import issue_local_client, provision_broker_certs
from collector.ca import CertificateAuthority
from collector.cli_common import open_registry
from collector.enrollment import (
    EndpointLimits,
    Enroller,
    ca_dir,
    check_operator,
    start_enrollment_server,
    token_store,
)
from collector.registry import RegistryError
from fieldproof.cli_common import config_option, load_config_or_exit
from fieldproof.config import CollectorConfig
from fieldproof.formats.enrollment import EnrollmentError, parse_request, printable
from fieldproof.tls import CAError, fingerprint


def _enroller(cfg: CollectorConfig) -> Enroller:
    try:
        return Enroller.from_config(cfg, open_registry(cfg))
    except EnrollmentError as exc:
        raise click.ClickException(str(exc)) from None


def _ca(cfg: CollectorConfig) -> CertificateAuthority:
    try:
        return CertificateAuthority.open(ca_dir(cfg))
    except CAError as exc:
        raise click.ClickException(str(exc)) from None


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _write_cert(path: Path, pem: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pem)
    os.chmod(path, 0o644)


# --------------------------------------------------------------------------------------------
# ca
# --------------------------------------------------------------------------------------------


@click.group("ca")
def ca_group() -> None:
    """The collector's certificate authority for MQTT over TLS."""


@ca_group.command("init")
@config_option
@click.option("--name", default="fieldproof MQTT CA", show_default=True)
def ca_init_command(config_path: Path | None, name: str) -> None:
    """Create the CA (once per installation)."""
    cfg = load_config_or_exit(config_path)
    try:
        ca = CertificateAuthority.create(ca_dir(cfg), name=name)
    except CAError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"CA created in {ca.directory} (ca.key is mode 600: back it up offline)")
    click.echo(f"CA certificate: {ca.directory / 'ca.pem'}")
    click.echo(f"fingerprint (SHA-256): {fingerprint(ca.cert)}")
    click.echo("next: 'ca server-cert' for the broker, 'ca collector-cert' for this collector")


@ca_group.command("server-cert")
@config_option
@click.option(
    "--host", "hosts", multiple=True, required=True, help="name or IP gateways use (repeat)"
)
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path),
    required=True,
    help="the broker's certificate directory, e.g. /etc/fieldproof/mosquitto/certs",
)
@click.option("--days", default=825, show_default=True, type=click.IntRange(1, 3650))
def ca_server_cert_command(
    config_path: Path | None, hosts: tuple[str, ...], out_dir: Path, days: int
) -> None:
    """Make the broker's key and certificate; copy ca.pem and crl.pem beside them."""
    cfg = load_config_or_exit(config_path)
    try:
        provision_broker_certs(_ca(cfg), out_dir, list(hosts), days)
    except CAError as exc:
        raise click.ClickException(str(exc)) from None
    key_path = out_dir / "server.key"
    click.echo(f"broker certificate for {', '.join(hosts)} in {out_dir}")
    click.echo(f"make the key readable by the broker only: chown mosquitto {key_path}")


@ca_group.command("collector-cert")
@config_option
@click.option("--days", default=825, show_default=True, type=click.IntRange(1, 3650))
def ca_collector_cert_command(config_path: Path | None, days: int) -> None:
    """Give this collector its MQTT client certificate (CN = collector_id)."""
    cfg = load_config_or_exit(config_path)
    ca = _ca(cfg)
    tls = cfg.mqtt.tls
    d = cfg.data_dir / "tls"
    key_path = tls.key_file if tls and tls.key_file else d / "collector.key"
    cert_path = tls.cert_file if tls and tls.cert_file else d / "collector.pem"
    ca_path = tls.ca_file if tls else d / "ca.pem"
    try:
        issue_local_client(ca, cfg.collector_id, "collector", key_path, cert_path, ca_path, days)
    except CAError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{cfg.collector_id}: certificate {cert_path}, key {key_path}, CA {ca_path}")
    if tls is None:
        click.echo(
            "add to the collector config:\n[mqtt.tls]\n"
            f'ca_file = "{ca_path}"\ncert_file = "{cert_path}"\nkey_file = "{key_path}"'
        )
    click.echo(f"the broker's acl.conf needs a 'user {cfg.collector_id}' block")


@ca_group.command("crl")
@config_option
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650))
def ca_crl_command(config_path: Path | None, days: int) -> None:
    """Rewrite the CRL (the broker refuses every client once its CRL is out of date)."""
    cfg = load_config_or_exit(config_path)
    path = _ca(cfg).write_crl(days=days, copy_to=cfg.enrollment.crl_copy)
    click.echo(
        f"CRL written to {path}"
        + (f" and {cfg.enrollment.crl_copy}" if cfg.enrollment.crl_copy else "")
    )


@ca_group.command("list")
@config_option
def ca_list_command(config_path: Path | None) -> None:
    """Certificates issued, newest last."""
    for r in _ca(cfg=load_config_or_exit(config_path)).issued():
        state = f"revoked {_day(r.revoked_at)}" if r.revoked_at else "valid"
        click.echo(f"{r.serial:x}  {r.kind:9} {r.cn:24} until {_day(r.not_after)}  {state}")


# --------------------------------------------------------------------------------------------
# devices approve | pending | revoke | rotate | token
# --------------------------------------------------------------------------------------------


@click.command("approve")
@config_option
@click.option("--pending", "pending_gw", default=None, help="approve a request that came by HTTP")
@click.option(
    "--operator",
    default=None,
    help="your name for the record, 1 to 64 printable characters (default: login)",
)
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="write the response here (default: <gateway>.response.json beside FILE)",
)
@click.argument("request_file", type=click.Path(path_type=Path), required=False)
def approve_command(
    config_path: Path | None,
    pending_gw: str | None,
    operator: str | None,
    yes: bool,
    out: Path | None,
    request_file: Path | None,
) -> None:
    """Check a gateway's enrollment request, register it and issue its certificate."""
    cfg = load_config_or_exit(config_path)
    enroller = _enroller(cfg)
    if (request_file is None) == (pending_gw is None):
        raise click.UsageError("give either a request FILE or --pending GATEWAY")
    who = operator or os.environ.get("SUDO_USER") or getpass.getuser()
    try:  # before anything is asked: the name is recorded in the log
        check_operator(who)
    except EnrollmentError as exc:
        raise click.ClickException(str(exc)) from None
    if request_file is not None:
        try:
            raw = request_file.read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read {request_file}: {exc.strerror}") from None
    else:
        assert pending_gw is not None
        found = enroller.pending_request(pending_gw)
        if found is None:
            raise click.ClickException(f"no pending request from {pending_gw}")
        raw = found
    try:
        req = parse_request(raw, time.time())
    except EnrollmentError as exc:
        raise click.ClickException(str(exc)) from None
    for label, value in req.summary():
        click.echo(f"{label:>12}: {value}")
    if not yes and not click.confirm("approve this gateway?", default=False):
        raise click.ClickException("not approved")
    try:
        approval = enroller.approve(raw, operator=who)
    except (EnrollmentError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from None
    except LogError as exc:  # the enroller says it first; the log's own bound as the last word
        raise click.ClickException(f"{req.gateway} was not enrolled: {exc}") from None
    if out is None:
        base = request_file.parent if request_file is not None else Path.cwd()
        out = base / f"{req.gateway}.response.json"
    out.write_bytes(approval.response)
    verb = "renewed the certificate of" if approval.renewed else "enrolled"
    until = _day(approval.cert.not_valid_after_utc.timestamp())
    click.echo(f"{verb} {req.gateway}; certificate until {until}")
    click.echo(f"response: {out} (give it to the gateway: fieldproof gateway enroll-install)")


@click.command("pending")
@config_option
def pending_command(config_path: Path | None) -> None:
    """Enrollment requests waiting for an operator (came by HTTP without a token)."""
    reqs = _enroller(load_config_or_exit(config_path)).pending()
    if not reqs:
        click.echo("no pending requests")
    for req in reqs:  # text from the network: shown escaped, never raw
        click.echo(
            f"{req.gateway}  {printable(req.farm)}/{printable(req.field)}  "
            f"by {printable(req.installer)}  "
            f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(req.time))}"
        )


@click.command("revoke")
@config_option
@click.argument("gateway")
def revoke_command(config_path: Path | None, gateway: str) -> None:
    """Revoke a gateway (lost, stolen, replaced): registry and certificates."""
    cfg = load_config_or_exit(config_path)
    if not (ca_dir(cfg) / "ca.pem").exists():
        # no collector CA on this host (no mTLS broker): the registry is all there is to revoke
        try:
            open_registry(cfg).revoke(gateway)
        except RegistryError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"revoked {gateway}: its messages are now quarantined as 'revoked'")
        click.echo(f"(no CA in {ca_dir(cfg)}: no certificate to add to a CRL)")
        return
    try:
        _, n = _enroller(cfg).revoke(gateway)
    except (EnrollmentError, RegistryError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"revoked {gateway}: its messages are quarantined as 'revoked'")
    click.echo(f"{n} certificate(s) added to the CRL")
    click.echo(
        "restart the broker so it drops the connection and reads the CRL "
        "(systemd: done by fieldproof-crl-reload.path; compose: docker compose restart mosquitto)"
    )


@click.command("rotate")
@config_option
@click.argument("request_file", type=click.Path(path_type=Path))
def rotate_command(config_path: Path | None, request_file: Path) -> None:
    """Apply a gateway's key rotation request ('fieldproof gateway rotate-key')."""
    cfg = load_config_or_exit(config_path)
    try:
        device, rot = _enroller(cfg).rotate(request_file.read_bytes())
    except OSError as exc:
        raise click.ClickException(f"cannot read {request_file}: {exc.strerror}") from None
    except EnrollmentError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{device.gateway}: new key {rot.new_key.hex()} from seq {rot.from_seq}")
    click.echo("the old key still verifies the messages it signed before")


@click.group("token")
def token_group() -> None:
    """One-time enrollment tokens: enroll a gateway without waiting for an operator."""


@token_group.command("create")
@config_option
@click.option("--farm", required=True)
@click.option("--field", required=True)
@click.option("--hours", type=click.FloatRange(0.1, 24 * 90), default=None, help="default: 7 days")
def token_create_command(
    config_path: Path | None, farm: str, field: str, hours: float | None
) -> None:
    """Make a token for one gateway in FARM/FIELD; give it to the technician."""
    cfg = load_config_or_exit(config_path)
    ttl = hours * 3600 if hours is not None else cfg.enrollment.token_ttl_s
    try:
        text, info = token_store(cfg).create(farm, field, ttl)
    except EnrollmentError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(text)
    click.echo(
        f"for {farm}/{field}, one gateway, until "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(info.expires_at))}; "
        "it is shown only now",
        err=True,
    )


@token_group.command("list")
@config_option
def token_list_command(config_path: Path | None) -> None:
    """Tokens and what they were used for (the secrets are not kept)."""
    cfg = load_config_or_exit(config_path)
    now = time.time()
    for t in token_store(cfg).all():
        state = (
            f"used by {t.used_by}" if t.used_by else ("expired" if t.expires_at <= now else "open")
        )
        click.echo(
            f"{t.id}  {printable(t.farm)}/{printable(t.field)}  until {_day(t.expires_at)}  "
            f"{state}"
        )


@token_group.command("revoke")
@config_option
@click.argument("token_id")
def token_revoke_command(config_path: Path | None, token_id: str) -> None:
    """Make an unused token unusable."""
    cfg = load_config_or_exit(config_path)
    if not token_store(cfg).revoke(token_id):
        raise click.ClickException(f"no unused token {printable(token_id)}")
    click.echo(f"token {token_id} can no longer be used")


# --------------------------------------------------------------------------------------------
# enroll-server
# --------------------------------------------------------------------------------------------


@click.command("enroll-server")
@config_option
def enroll_server_command(config_path: Path | None) -> None:
    """Serve the enrollment endpoint ([enrollment] listen_host/listen_port) until stopped."""
    cfg = load_config_or_exit(config_path)
    e = cfg.enrollment
    if e.listen_port is None:
        raise click.ClickException("set [enrollment] listen_port in the collector config")
    server = start_enrollment_server(
        _enroller(cfg),
        e.listen_host,
        e.listen_port,
        e.tls_cert_file,
        e.tls_key_file,
        EndpointLimits.from_config(e),
    )
    stop = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    scheme = "https" if e.tls_cert_file else "http"
    click.echo(f"enrollment endpoint on {scheme}://{e.listen_host}:{server.server_address[1]}")
    stop.wait()
    server.shutdown()
    server.server_close()


def mount(collector_group: click.Group, devices_group: click.Group) -> None:
    """Add these commands to ``fieldproof collector`` and ``fieldproof collector devices``
    (replacing the registry-only ``devices revoke``)."""
    collector_group.add_command(ca_group)
    collector_group.add_command(enroll_server_command)
    for cmd in (approve_command, pending_command, revoke_command, rotate_command, token_group):
        devices_group.add_command(cmd)
