"""Every check in the order a technician fixes things, and ``fieldproof gateway doctor``."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click
from cryptography import x509

from fieldproof.errors import ConfigError
from fieldproof.tls import common_name
from gateway.config import GatewayConfig, load_gateway_config
from gateway.doctor.broker import check_broker, check_registration
from gateway.doctor.identity import (
    check_cert_validity,
    check_clock,
    check_enrolled,
    check_key,
    check_tls_key,
)
from gateway.doctor.report import SOURCE_SPOOL, SOURCE_STATUS, Check, Probe, Report, render
from gateway.doctor.sensors import check_sensors
from gateway.doctor.service import ServiceStatus, check_service, live_status, spool_facts
from gateway.doctor.spool import check_disk, check_spool, check_spool_write
from gateway.identity import tls_paths

NO_TLS = Check(
    "tls",
    "warn",
    "connects without TLS (the config has no [mqtt.tls]): the broker cannot tell this "
    "gateway from anyone on the network",
    "fine on a closed lab network; in the field enroll it: fieldproof gateway enroll",
)


def run_doctor(cfg: GatewayConfig, probe: Probe | None = None) -> Report:
    """Every check, in the order a technician fixes things."""
    probe = probe or Probe()
    checks: list[Check] = []
    key_check, gw = check_key(cfg)
    checks.append(key_check)
    cert = None
    tls = cfg.mqtt.tls is not None
    if not tls:  # judged by its own config: no TLS key or certificate is expected
        checks.append(NO_TLS)
    elif gw is None:
        checks.append(check_tls_key(cfg))
        checks.append(Check("enrolled", "skip", "needs the gateway key"))
    else:
        checks.append(check_tls_key(cfg))
        enrolled, cert = check_enrolled(cfg, gw)
        checks.append(enrolled)
    spool = spool_facts(cfg)
    clock = check_clock(probe, cert, spool)
    checks.append(clock)
    if cert is not None:
        checks.append(check_cert_validity(probe, cert))
    service = ServiceStatus(None, "the broker check failed")
    if not probe.broker:
        checks.append(Check("broker", "skip", "not checked (--no-broker)"))
        service.why_not = "--no-broker"
    elif gw is None or (tls and cert is None):
        checks.append(Check("broker", "skip", "needs the key and the certificate"))
        service.why_not = "no key or certificate to log in with"
    else:
        checks.append(check_broker(cfg, gw, probe.timeout_s, service))
    now = probe.clock()
    checks.append(check_service(cfg, service, now))
    live = live_status(service, cfg, now)
    if gw is not None and cert is not None and probe.broker and cfg.enrollment_url:
        checks.append(check_registration(cfg, gw, cert, probe.timeout_s))
    if probe.sensors:
        checks.extend(check_sensors(cfg, probe.clock()))
    else:
        checks.append(Check("sensors", "skip", "not read (--no-sensors)"))
    checks.extend(check_spool(cfg, spool, probe.clock(), live))
    checks.append(check_spool_write(cfg, spool, live))
    checks.append(check_disk(cfg))
    if gw is None:
        cert_cn = None
        with contextlib.suppress(OSError, ValueError):
            cert_cn = common_name(
                x509.load_pem_x509_certificate(tls_paths(cfg).cert_file.read_bytes()).subject
            )
        gw = f"{cert_cn} (per its certificate)" if cert_cn else "(unknown: no usable key)"
    return Report(gw, cfg.farm, cfg.field, checks, SOURCE_STATUS if live else SOURCE_SPOOL)


@click.command("doctor")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--no-sensors", is_flag=True, help="do not read sensors (service holds them)")
@click.option("--no-broker", is_flag=True, help="do not connect to the broker")
@click.option("--timeout", default=10.0, show_default=True, help="seconds for the broker")
def doctor_command(
    config_path: Path, as_json: bool, no_sensors: bool, no_broker: bool, timeout: float
) -> None:
    """Check this gateway end to end and say in plain words what to fix."""
    try:
        cfg = load_gateway_config(config_path)
    except ConfigError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(exc)}))
            raise SystemExit(1) from None
        raise click.ClickException(str(exc)) from None
    report = run_doctor(cfg, Probe(timeout_s=timeout, sensors=not no_sensors, broker=not no_broker))
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
    else:
        click.echo(render(report, color=sys.stdout.isatty()))
    raise SystemExit(0 if report.ok else 1)
