"""The device's identity: signing key, TLS key, enrollment certificate, clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fieldproof.keys import KeyFileError, load_key_file
from fieldproof.tls import CAError, common_name, load_private_key
from gateway.config import GatewayConfig
from gateway.doctor.report import Check, Probe, utc
from gateway.identity import gateway_identity, tls_paths
from gateway.status import CLOCK_FLOOR

CERT_WARN_DAYS = 30


def check_key(cfg: GatewayConfig) -> tuple[Check, str | None]:
    try:
        key = load_key_file(cfg.key_file)
    except KeyFileError as exc:
        text = str(exc)
        if "no key at" in text:
            return (
                Check(
                    "key",
                    "fail",
                    f"no gateway key at {cfg.key_file}",
                    "create it on this device: fieldproof gateway init --config …",
                ),
                None,
            )
        if "readable by others" in text:
            return (
                Check(
                    "key",
                    "fail",
                    f"{cfg.key_file} can be read by other users",
                    f"chmod 600 {cfg.key_file}; if anyone may have copied it, ask the "
                    "operator to revoke this gateway and enroll it again",
                ),
                None,
            )
        return Check("key", "fail", text, "restore the key or enroll again"), None
    gw = gateway_identity(cfg, key)
    return Check("key", "ok", "signing key present, mode 600"), gw


def check_tls_key(cfg: GatewayConfig) -> Check:
    path = tls_paths(cfg).key_file
    if not path.exists():
        return Check(
            "tls key",
            "fail",
            f"no MQTT TLS key at {path}",
            "fieldproof gateway enroll makes it (then the operator approves)",
        )
    try:
        load_private_key(path)
    except CAError as exc:
        return Check("tls key", "fail", str(exc), f"chmod 600 {path}")
    return Check("tls key", "ok", "TLS key present, mode 600")


def load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def check_enrolled(cfg: GatewayConfig, gw: str) -> tuple[Check, x509.Certificate | None]:
    paths = tls_paths(cfg)
    cert = load_cert(paths.cert_file)
    if cert is None:
        return (
            Check(
                "enrolled",
                "fail",
                f"no certificate at {paths.cert_file}: not enrolled",
                "fieldproof gateway enroll --config … --installer NAME",
            ),
            None,
        )
    problems = []
    if common_name(cert.subject) != gw:
        problems.append(f"certificate is for {common_name(cert.subject)}, not {gw}")
    try:
        if cert.public_key() != load_private_key(paths.key_file).public_key():
            problems.append("certificate does not match the TLS key")
    except CAError:
        problems.append("TLS key unusable")
    ca = load_cert(paths.ca_file)
    if ca is None:
        problems.append(f"no CA certificate at {paths.ca_file}")
    else:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            problems.append("certificate not issued by the installed CA")
    if not paths.configured:
        problems.append("config has no [mqtt.tls] section")
    if problems:
        return (
            Check(
                "enrolled",
                "fail",
                "; ".join(problems),
                "enroll again (fieldproof gateway enroll) and install the answer",
            ),
            cert,
        )
    return Check("enrolled", "ok", "certificate from the collector's CA"), cert


def check_clock(probe: Probe, cert: x509.Certificate | None, spool: dict[str, Any] | None) -> Check:
    now = probe.clock()
    evidence = [(CLOCK_FLOOR, "this software's release")]
    if cert is not None:
        evidence.append((cert.not_valid_before_utc.timestamp(), "the certificate's start"))
    if spool and spool.get("newest_message"):
        evidence.append((float(spool["newest_message"]), "the newest spooled reading"))
    latest, what = max(evidence)
    details = {"now": now, "must_be_after": latest, "synced": None}
    if now < latest:
        return Check(
            "clock",
            "fail",
            f"clock says {utc(now)}, earlier than {what} ({utc(latest)}). Readings would "
            "carry a wrong time and TLS will refuse the broker.",
            "give the Pi network access and wait for NTP (timedatectl status); "
            "fit an RTC module if it often boots offline",
            details,
        )
    synced = probe.clock_synced()
    details["synced"] = synced
    if synced is False:
        return Check(
            "clock",
            "warn",
            f"clock {utc(now)} is not confirmed by NTP: it may be stale",
            "check network and 'timedatectl status'; enable systemd-timesyncd",
            details,
        )
    state = "NTP synchronised" if synced else "sync state unknown"
    return Check("clock", "ok", f"{utc(now)}, {state}", details=details)


def check_cert_validity(probe: Probe, cert: x509.Certificate) -> Check:
    now = probe.clock()
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    days = (end - now) / 86400
    details = {"not_before": start, "not_after": end, "days_left": round(days, 1)}
    if now < start:
        return Check(
            "certificate",
            "fail",
            f"certificate valid only from {utc(start)}",
            "fix the clock first",
            details,
        )
    if now >= end:
        return Check(
            "certificate",
            "fail",
            f"certificate expired {utc(end)}",
            "renew it: fieldproof gateway enroll (the operator approves)",
            details,
        )
    if days < CERT_WARN_DAYS:
        return Check(
            "certificate",
            "warn",
            f"certificate expires in {days:.0f} days ({utc(end)})",
            "renew it soon: fieldproof gateway enroll",
            details,
        )
    return Check("certificate", "ok", f"valid until {utc(end)[:10]} ({days:.0f} days)", "", details)
