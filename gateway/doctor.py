"""``fieldproof gateway doctor``: is this gateway working and secure? One screen, plain words.

The technician runs it before leaving the field. Every check says what it found and, when it
is not fine, what to do. Exit code 0 when nothing failed (warnings allowed), 1 otherwise;
``--json`` gives the same for tools. Checks:

key · TLS key · enrolled (certificate for this gateway and key, from the CA) · clock (not before
the build date or the certificate, NTP synchronised) · certificate validity · broker (a real
TLS + MQTT connect with this gateway's certificate) · service (the running agent's retained
status, read over that same connection) · registration (when ``enrollment_url`` is set: the
collector still lists this gateway and certificate) · each sensor reads a plausible value ·
spool depth and drops · spool write (disk full: messages held in memory) · disk space ·
delivery (published, confirmed).

Which messages the broker has PUBACKed lives only in the running agent's memory (the spool no
longer writes it, see gateway.spool), and so does the time of the last publish. The agent
publishes them in its retained status; the doctor reads that status when it reaches the broker
and falls back to what the spool file can tell (depth, oldest message, counters) when it cannot.
Every delivery check says which source it used (``source`` in ``--json``).

Reading sensors needs the hardware the running service uses; with the service running, a
serial port may be busy: ``--no-sensors`` skips them."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sqlite3
import ssl
import struct
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import click
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fieldproof.errors import ConfigError
from fieldproof.formats.status import StatusRejected, parse_status
from fieldproof.keys import KeyFileError, load_key_file
from fieldproof.mqtt import status_topic
from fieldproof.tls import CAError, common_name, load_private_key
from gateway.config import GatewayConfig, load_gateway_config
from gateway.identity import gateway_identity, tls_paths
from gateway.local_status import read_local_status
from gateway.sensors.base import build_sensor, plausible
from gateway.status import CLOCK_FLOOR, kernel_clock_synced

Status = Literal["ok", "warn", "fail", "skip"]
WIDTH = 60
CERT_WARN_DAYS = 30
DISK_FAIL_BYTES = 50 * 1024 * 1024
DISK_WARN_BYTES = 500 * 1024 * 1024
#: largest MQTT packet the doctor reads (a status message is a few hundred bytes)
MAX_PACKET_BYTES = 1024 * 1024
SOURCE_STATUS = "service status"
SOURCE_SPOOL = "spool file"


@dataclass
class Check:
    name: str
    status: Status
    summary: str
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    gateway: str
    farm: str
    field: str
    checks: list[Check]
    #: where spool, delivery and spool-write facts came from: SOURCE_STATUS or SOURCE_SPOOL
    delivery_source: str = SOURCE_SPOOL

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "gateway": self.gateway,
            "farm": self.farm,
            "field": self.field,
            "ok": self.ok,
            "checks": [asdict(c) for c in self.checks],
            "delivery_source": self.delivery_source,
        }


@dataclass
class Probe:
    """What the doctor looks at that a test may replace: the clock and its sync state."""

    clock: Callable[[], float] = time.time
    clock_synced: Callable[[], bool | None] = kernel_clock_synced
    timeout_s: float = 10.0
    sensors: bool = True
    broker: bool = True


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


# --------------------------------------------------------------------------------------------
# individual checks
# --------------------------------------------------------------------------------------------


def _check_key(cfg: GatewayConfig) -> tuple[Check, str | None]:
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


def _check_tls_key(cfg: GatewayConfig) -> Check:
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


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _check_enrolled(cfg: GatewayConfig, gw: str) -> tuple[Check, x509.Certificate | None]:
    paths = tls_paths(cfg)
    cert = _load_cert(paths.cert_file)
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
    ca = _load_cert(paths.ca_file)
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


def _spool_facts(cfg: GatewayConfig) -> dict[str, Any] | None:
    """What the spool file alone can tell: depth, oldest and newest message, the meta counters.
    Which messages were published is not in it (memory only in the agent): those keys stay
    for ``--json`` readers and are None until the service's status fills them in."""
    if not cfg.spool_path.exists():
        return None
    db = sqlite3.connect(f"file:{cfg.spool_path}?mode=ro", uri=True, timeout=5)
    try:
        meta = {str(k): int(v) for k, v in db.execute("SELECT key, value FROM meta")}
        row = db.execute("SELECT count(*), min(created), max(created) FROM outbox").fetchone()
    except sqlite3.Error:
        return None
    finally:
        db.close()
    depth, oldest, newest = row
    return {
        "depth": int(depth),
        "unsent": None,
        "unconfirmed": None,
        "oldest_unsent": None,
        "oldest_unconfirmed_publish": None,
        "last_published": None,
        "oldest_message": oldest,
        "newest_message": newest,
        **meta,
    }


@dataclass
class ServiceStatus:
    """The running agent's own account of itself (its retained status on the broker), or why
    the doctor has none."""

    status: dict[str, Any] | None = None
    #: why there is no usable status, in words for the technician
    why_not: str = ""
    #: the broker answered, so "no status" means the service has not published one
    asked: bool = False


def _live(svc: ServiceStatus, cfg: GatewayConfig, now: float) -> dict[str, Any] | None:
    """The status to judge delivery by: only one the service published while running and
    recently enough (a stale one describes a spool that has changed since)."""
    st = svc.status
    if st is None or st.get("online") is not True:
        return None
    return st if _status_age(st, now) <= _stale_after(cfg) else None


def _status_age(status: dict[str, Any], now: float) -> float:
    clock = status.get("clock")
    return max(0.0, now - float(clock)) if isinstance(clock, int | float) else float("inf")


def _stale_after(cfg: GatewayConfig) -> float:
    """A running agent republishes its status every ``status_interval_s``; the broker publishes
    its Last Will 1.5 keepalives after the uplink dies. Older than this and still "online",
    the agent is hung (or its clock jumped)."""
    return 3 * cfg.status_interval_s + 1.5 * cfg.mqtt.keepalive_s


def _check_clock(
    probe: Probe, cert: x509.Certificate | None, spool: dict[str, Any] | None
) -> Check:
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
            f"clock says {_utc(now)}, earlier than {what} ({_utc(latest)}). Readings would "
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
            f"clock {_utc(now)} is not confirmed by NTP: it may be stale",
            "check network and 'timedatectl status'; enable systemd-timesyncd",
            details,
        )
    state = "NTP synchronised" if synced else "sync state unknown"
    return Check("clock", "ok", f"{_utc(now)}, {state}", details=details)


def _check_cert_validity(probe: Probe, cert: x509.Certificate) -> Check:
    now = probe.clock()
    start = cert.not_valid_before_utc.timestamp()
    end = cert.not_valid_after_utc.timestamp()
    days = (end - now) / 86400
    details = {"not_before": start, "not_after": end, "days_left": round(days, 1)}
    if now < start:
        return Check(
            "certificate",
            "fail",
            f"certificate valid only from {_utc(start)}",
            "fix the clock first",
            details,
        )
    if now >= end:
        return Check(
            "certificate",
            "fail",
            f"certificate expired {_utc(end)}",
            "renew it: fieldproof gateway enroll (the operator approves)",
            details,
        )
    if days < CERT_WARN_DAYS:
        return Check(
            "certificate",
            "warn",
            f"certificate expires in {days:.0f} days ({_utc(end)})",
            "renew it soon: fieldproof gateway enroll",
            details,
        )
    return Check(
        "certificate", "ok", f"valid until {_utc(end)[:10]} ({days:.0f} days)", "", details
    )


def _mqtt_connect_packet(client_id: str, keepalive: int = 10) -> bytes:
    """A minimal MQTT 5 CONNECT: clean start, no will, no credentials (the certificate is).
    The service keeps no session on the broker (its spool is its memory), so a clean start
    takes nothing from it."""
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x05\x02" + struct.pack(">H", keepalive) + b"\x00"
    payload = struct.pack(">H", len(cid)) + cid
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _recv_exact(s: ssl.SSLSocket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("the broker closed the connection")
        buf += chunk
    return bytes(buf)


def _read_packet(s: ssl.SSLSocket) -> tuple[int, bytes]:
    """One MQTT packet: (first byte, rest). Raises EOFError when the broker hangs up."""
    first = _recv_exact(s, 1)[0]
    length = 0
    for shift in range(0, 28, 7):
        byte = _recv_exact(s, 1)[0]
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    else:
        raise ValueError("malformed MQTT packet length")
    if length > MAX_PACKET_BYTES:
        raise ValueError(f"MQTT packet of {length} bytes; a status is far smaller")
    return first, _recv_exact(s, length)


def _varint_at(data: bytes, i: int) -> tuple[int, int]:
    """An MQTT variable byte integer at ``data[i]``: (value, index after it)."""
    n = 0
    for shift in range(0, 28, 7):
        byte = data[i]
        i += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, i
    raise ValueError("malformed MQTT variable byte integer")


def _read_retained(s: ssl.SSLSocket, topic: str, timeout: float) -> bytes | None:
    """SUBSCRIBE to ``topic`` (QoS 0) and return the retained message, None when there is
    none. A PINGREQ follows the SUBSCRIBE: the broker sends retained messages as it handles
    the SUBSCRIBE, so its PINGRESP says "that was all" without waiting on a timer."""
    t = topic.encode()
    body = struct.pack(">H", 1) + b"\x00" + struct.pack(">H", len(t)) + t + b"\x00"
    s.sendall(b"\x82" + _varint(len(body)) + body + b"\xc0\x00")
    deadline = time.monotonic() + timeout
    found: bytes | None = None
    while True:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        first, body = _read_packet(s)
        kind = first >> 4
        if kind == 9:  # SUBACK: packet id, properties, one reason code
            props, i = _varint_at(body, 2)
            codes = body[i + props :]
            if not codes or codes[0] >= 0x80:
                code = f"{codes[0]:#x}" if codes else "none"
                raise PermissionError(f"the broker refused to let us read it (reason {code})")
        elif kind == 3:  # PUBLISH
            (tlen,) = struct.unpack_from(">H", body)
            name = body[2 : 2 + tlen].decode()
            i = 2 + tlen + (2 if first & 0x06 else 0)  # packet id only for QoS > 0
            props, i = _varint_at(body, i)
            if name == topic:
                found = body[i + props :]
        elif kind == 13:  # PINGRESP
            return found
        elif kind == 14:  # DISCONNECT
            raise EOFError("the broker closed the connection")


def read_service_status(
    s: ssl.SSLSocket, cfg: GatewayConfig, gw: str, timeout: float
) -> ServiceStatus:
    """The service's retained status, over the doctor's own logged-in connection."""
    topic = status_topic(cfg.mqtt.topic_prefix, gw)
    try:
        raw = _read_retained(s, topic, timeout)
    except PermissionError as exc:
        return ServiceStatus(None, f"cannot read {topic}: {exc}")
    except (OSError, EOFError, ValueError, IndexError, struct.error) as exc:
        return ServiceStatus(None, f"reading {topic} failed: {exc}")
    if raw is None:
        return ServiceStatus(None, f"the broker holds no status on {topic}", asked=True)
    try:
        parse_status(raw)  # the rules every collector reads a status by
        status = json.loads(raw)
    except (StatusRejected, ValueError) as exc:
        return ServiceStatus(None, f"the status on {topic} is not usable: {exc}", asked=True)
    if not isinstance(status, dict):  # an empty retained message: the status was cleared
        return ServiceStatus(None, f"the broker holds no status on {topic}", asked=True)
    return ServiceStatus(status, asked=True)


_CONNACK_REASONS = {
    0x80: "unspecified error",
    0x84: "protocol version not supported",
    0x85: "client id refused",
    0x86: "bad user name or password",
    0x87: "not authorised",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
}


def _tls_context(cfg: GatewayConfig) -> ssl.SSLContext:
    paths = tls_paths(cfg)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(paths.ca_file))
    ctx.load_cert_chain(str(paths.cert_file), str(paths.key_file))
    tls = cfg.mqtt.tls
    if tls is not None and tls.insecure_skip_hostname_check:
        ctx.check_hostname = False
    return ctx


REFUSED_CERT = (
    "the broker refused this gateway's certificate during the TLS handshake; it looks valid "
    "here, so the operator has most likely REVOKED it (or it is from another collector's CA)"
)
REFUSED_FIX = (
    "ask the operator ('fieldproof collector ca list'); a revoked gateway must be "
    "re-initialised with a new key and enrolled again"
)


def _check_broker(
    cfg: GatewayConfig, gw: str, timeout: float, service: ServiceStatus | None = None
) -> Check:
    """A real connection: TCP, TLS with our certificate (the broker checks it against its CA
    and CRL), MQTT CONNECT → CONNACK, then the service's retained status over the same
    connection, written into ``service``.

    The broker makes the certificate's CN the client id, so a login here would take over the
    running service's own connection. While the service runs and is connected, the doctor
    stops after the TLS handshake and takes the service's status from its local file
    (gateway/local_status.py)."""
    host, port = cfg.mqtt.host, cfg.mqtt.port
    local = read_local_status(cfg.data_dir)
    agent = (
        local
        if local is not None and local.connected and local.running(_stale_after(cfg))
        else None
    )
    where = f"{host}:{port}"
    details: dict[str, Any] = {"host": host, "port": port}
    if cfg.mqtt.tls is None:
        return Check(
            "broker",
            "fail",
            "MQTT is configured without TLS",
            "add [mqtt.tls] to the config (enroll-install prints it)",
            details,
        )
    try:
        ctx = _tls_context(cfg)
    except (OSError, ssl.SSLError) as exc:
        return Check("broker", "fail", f"cannot load TLS files: {exc}", "enroll again", details)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror:
        return Check(
            "broker",
            "fail",
            f"cannot resolve {host}",
            "check [mqtt] host and the Pi's DNS/uplink",
            details,
        )
    except ConnectionRefusedError:
        return Check(
            "broker",
            "fail",
            f"{where} refuses connections: broker down or wrong port",
            "check [mqtt] port (8883) and that the broker runs",
            details,
        )
    except OSError as exc:
        return Check(
            "broker",
            "fail",
            f"cannot reach {where}: {exc.strerror or exc}",
            "check the uplink (LTE/Wi-Fi) and firewall",
            details,
        )
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.settimeout(timeout)
            if agent is not None:  # the handshake above is the broker accepting our cert
                if service is not None:
                    service.status, service.why_not, service.asked = agent.status, "", True
                age = max(0.0, time.time() - agent.written_at)
                details["via"] = "running service"
                return Check(
                    "broker",
                    "ok",
                    f"{where} accepts this certificate; the running service is connected "
                    f"(pid {agent.pid}, said so {age:.0f} s ago)",
                    "",
                    details,
                )
            s.sendall(_mqtt_connect_packet(gw))
            try:
                first, connack = _read_packet(s)
            except (EOFError, ValueError):
                first, connack = 0, b""
            if first != 0x20 or len(connack) < 2:
                return Check("broker", "fail", REFUSED_CERT, REFUSED_FIX, details)
            reason = connack[1]
            if reason != 0:
                text = _CONNACK_REASONS.get(reason, f"reason {reason:#x}")
                return Check(
                    "broker",
                    "fail",
                    f"broker refused the login: {text}",
                    "ask the operator to check this gateway's certificate and the ACL",
                    details,
                )
            read = read_service_status(s, cfg, gw, timeout)
            if service is not None:
                service.status, service.why_not, service.asked = (
                    read.status,
                    read.why_not,
                    read.asked,
                )
            with contextlib.suppress(OSError):
                s.sendall(b"\xe0\x00")  # DISCONNECT
    except ssl.SSLCertVerificationError as exc:
        msg = exc.verify_message or str(exc)
        fix = "check [mqtt.tls] ca_file is the collector's CA"
        if "not yet valid" in msg or "expired" in msg:
            fix = "check the clock (see 'clock' above)"
        elif "hostname" in msg.lower() or "IP address mismatch" in msg:
            fix = f"[mqtt] host must be a name in the broker's certificate, not {host!r}"
        return Check("broker", "fail", f"broker's certificate not trusted: {msg}", fix, details)
    except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError):
        # Mosquitto closes the handshake without an alert when it rejects a client certificate
        return Check("broker", "fail", REFUSED_CERT, REFUSED_FIX, details)
    except ssl.SSLError as exc:
        why = str(exc.reason or exc).lower()
        if "revoked" in why:
            summary, fix = (
                "the broker says this gateway's certificate is REVOKED",
                "ask the operator; a revoked gateway must be re-initialised and enrolled",
            )
        elif "expired" in why:
            summary, fix = "the broker says our certificate expired", "renew: gateway enroll"
        elif "unknown ca" in why or "bad certificate" in why:
            summary, fix = (
                "the broker does not accept our certificate (another CA?)",
                "enroll again against this collector",
            )
        else:
            summary, fix = f"TLS failed: {exc.reason or exc}", "see the broker's log"
        return Check("broker", "fail", summary, fix, details)
    except (OSError, TimeoutError) as exc:
        return Check(
            "broker",
            "fail",
            f"{where} dropped the connection: {exc}",
            "check the uplink; if it persists, ask the operator to check the broker log",
            details,
        )
    return Check("broker", "ok", f"{where}: TLS and MQTT login accepted", "", details)


def _check_registration(
    cfg: GatewayConfig, gw: str, cert: x509.Certificate, timeout: float
) -> Check:
    """Ask the collector's enrollment endpoint what it issued to this gateway."""
    from fieldproof.formats.enrollment import EnrollmentError, parse_response
    from gateway.enroll import fetch_response

    url = cfg.enrollment_url
    try:
        status, body = fetch_response(cfg, url, gw, timeout)
        if status == 200:
            issued = x509.load_pem_x509_certificate(parse_response(body)["cert"].encode())
    except (EnrollmentError, ValueError) as exc:
        return Check("registration", "warn", f"cannot ask the collector: {exc}", "check the uplink")
    if status == 202:
        return Check(
            "registration",
            "warn",
            "the enrollment still waits for an operator",
            "ask the operator to approve it",
        )
    if status != 200:
        return Check(
            "registration",
            "warn",
            "the collector has no enrollment for this gateway (revoked, or registered by hand)",
            "ask the operator ('fieldproof collector devices list')",
        )
    if issued.serial_number != cert.serial_number:
        return Check(
            "registration",
            "warn",
            "the collector issued a newer certificate than the one installed",
            f"fieldproof gateway enroll-install --config … --url {url}",
        )
    return Check("registration", "ok", "the collector lists this gateway and certificate")


def _check_sensors(cfg: GatewayConfig, now: float) -> list[Check]:
    if not cfg.sensors:
        return [Check("sensors", "fail", "no [[sensors]] configured", "add them to the config")]
    out = []
    for sc in cfg.sensors:
        name = f"sensor {sc.name}"
        try:
            driver = build_sensor(sc)
        except Exception as exc:  # a driver that cannot start must be reported, not crash us
            out.append(Check(name, "fail", f"cannot start: {exc}", "check wiring and the port"))
            continue
        try:
            readings = driver.read(now)
        except Exception as exc:
            out.append(Check(name, "fail", f"read failed: {exc}", "check wiring"))
            continue
        finally:
            with contextlib.suppress(Exception):  # closing must not hide the result
                driver.close()
        missing = [r for r in readings if r.value is None]
        odd = [r for r in readings if plausible(r.quantity, r.value) is False]
        values = ", ".join(
            f"{r.quantity} {r.value:g}{'' if r.unit == '/' else ' ' + r.unit}"
            for r in readings
            if r.value is not None
        )
        details = {"readings": [[r.quantity, r.value, r.unit] for r in readings]}
        if not readings or missing:
            why = ", ".join(f"{r.quantity}: {r.missing_reason}" for r in missing) or "nothing"
            out.append(
                Check(name, "fail", f"no value ({why})", "check wiring, power, address", details)
            )
        elif odd:
            out.append(
                Check(
                    name,
                    "warn",
                    f"implausible: {values}",
                    "is the probe in the soil / calibrated?",
                    details,
                )
            )
        else:
            out.append(Check(name, "ok", values, "", details))
    return out


def _check_service(cfg: GatewayConfig, svc: ServiceStatus, now: float) -> Check:
    """Is the agent running, by its own retained status? Says which source the delivery
    checks below use."""
    st = svc.status
    if st is None:
        if svc.asked:
            return Check(
                "service",
                "warn",
                "the broker has no status from the gateway service: it has not run "
                "since the broker started, or cannot reach it; delivery below is judged "
                "from the spool file",
                "sudo systemctl start fieldproof-gateway; if it is running, see "
                "journalctl -u fieldproof-gateway -n 50, or ask the operator whether "
                "the broker's ACL lets a gateway read its own status topic",
                {"source": SOURCE_SPOOL, "why": svc.why_not},
            )
        return Check(
            "service",
            "skip",
            f"status not read ({svc.why_not}); delivery below is judged from the spool file",
            "",
            {"source": SOURCE_SPOOL, "why": svc.why_not},
        )
    details: dict[str, Any] = {"source": SOURCE_STATUS, "status": st}
    if st.get("online") is not True:
        return Check(
            "service",
            "warn",
            "the gateway service is OFFLINE per the broker (stopped, crashed or lost the "
            "uplink); delivery below is judged from the spool file",
            "sudo systemctl status fieldproof-gateway; journalctl -u fieldproof-gateway -n 50",
            {**details, "source": SOURCE_SPOOL},
        )
    age = _status_age(st, now)
    if age > _stale_after(cfg):
        when = _utc(float(st["clock"])) if age != float("inf") else "an unknown time"
        return Check(
            "service",
            "warn",
            f"the service's last status is from {when}, though it should come every "
            f"{cfg.status_interval_s:g} s: it may hang; delivery below is judged from the "
            "spool file",
            "sudo systemctl restart fieldproof-gateway; if it recurs, keep "
            "journalctl -u fieldproof-gateway for the operator",
            {**details, "source": SOURCE_SPOOL, "age_s": round(age, 1)},
        )
    up = float(st.get("uptime_s") or 0.0)
    uptime = f"{up / 3600:.1f} h" if up >= 3600 else f"{up / 60:.0f} min"
    return Check(
        "service",
        "ok",
        f"running (boot {st.get('boot', '?')}, up {uptime}); delivery below is per its status",
        "",
        {**details, "age_s": round(age, 1)},
    )


def _mount_of(cfg: GatewayConfig) -> Path:
    from gateway.agent import mount_point

    return mount_point(cfg.spool_path)


def _check_spool_write(
    cfg: GatewayConfig, spool: dict[str, Any] | None, live: dict[str, Any] | None
) -> Check:
    """A full (or failing) SD card: the agent keeps sampling into memory. Only the running
    agent knows it is happening; readings it had to drop are also counted in the spool."""
    lost = max(
        int((live or {}).get("unspooled_dropped_readings") or 0),
        int((spool or {}).get("unspooled_dropped_readings") or 0),
    )
    details: dict[str, Any] = {
        "source": SOURCE_STATUS if live else SOURCE_SPOOL,
        "unspooled_dropped_readings": lost,
    }
    if live is not None:
        for key in ("spool_writable", "held_in_memory", "spool_errors", "spool_error"):
            if key in live:
                details[key] = live[key]
    held = int(details.get("held_in_memory") or 0)
    if details.get("spool_writable") is False:
        mount = _mount_of(cfg)
        why = details.get("spool_error") or "write failed"
        return Check(
            "spool write",
            "fail",
            f"the service cannot write its spool ({why}); {held} message(s) wait in memory "
            "and are LOST if the power goes",
            f"free space on {mount} now: df -h {mount}; journalctl --vacuum-size=50M; remove "
            "old files (never the spool). The service catches up by itself. If space is "
            "free, the SD card may be failing: dmesg | grep -i mmc",
            details,
        )
    if held:
        return Check(
            "spool write",
            "warn",
            f"{held} message(s) still wait in memory: the spool is catching up after "
            f"{details.get('spool_errors', 0)} failed write(s)",
            f"watch free space: df -h {_mount_of(cfg)}",
            details,
        )
    if lost:
        return Check(
            "spool write",
            "warn",
            f"{lost} reading(s) were LOST because the spool could not be written (disk full)",
            f"keep space free on {_mount_of(cfg)} (df -h); lost readings cannot be recovered",
            details,
        )
    if live is None:
        return Check(
            "spool write",
            "skip",
            "known only to the running service (no status read)",
            "",
            details,
        )
    errors = int(details.get("spool_errors") or 0)
    note = f" ({errors} failed write(s) since start, recovered)" if errors else ""
    return Check("spool write", "ok", f"the service writes its spool{note}", "", details)


def _delivery_facts(
    spool: dict[str, Any], live: dict[str, Any] | None, now: float
) -> dict[str, Any]:
    """The spool file's facts, overlaid with the running service's (its memory is the truth
    about what is published, and about depth while deletes wait)."""
    facts = {k: v for k, v in spool.items() if not k.startswith("_")}
    oldest = facts.get("oldest_message")
    facts["oldest_age_s"] = max(0.0, now - float(oldest)) if oldest else 0.0
    facts["source"] = SOURCE_SPOOL
    if live is None:
        return facts
    facts["source"] = SOURCE_STATUS
    depth = int(live.get("spool_depth", facts["depth"]))
    facts["depth"] = depth
    if isinstance(live.get("unconfirmed"), int):
        facts["unconfirmed"] = live["unconfirmed"]
        facts["unsent"] = max(0, depth - live["unconfirmed"])
    if isinstance(live.get("dropped_messages"), int):
        facts["dropped_messages"] = max(live["dropped_messages"], facts.get("dropped_messages", 0))
    last = live.get("last_publish")
    facts["last_published"] = float(last) if isinstance(last, int | float) and last > 0 else None
    age = live.get("spool_oldest_age_s")
    if depth == 0:
        facts["oldest_age_s"] = 0.0
    elif isinstance(age, int | float):
        facts["oldest_age_s"] = float(age) + _status_age(live, now)
    return facts


def _check_spool(
    cfg: GatewayConfig,
    spool: dict[str, Any] | None,
    now: float,
    live: dict[str, Any] | None = None,
) -> list[Check]:
    if spool is None:
        return [
            Check(
                "spool",
                "warn",
                "no spool yet: the gateway has never run",
                "start it: sudo systemctl start fieldproof-gateway",
                {"source": SOURCE_SPOOL},
            ),
            Check("delivery", "skip", "nothing sent yet", "", {"source": SOURCE_SPOOL}),
        ]
    details = _delivery_facts(spool, live, now)
    checks = []
    depth, dropped = details["depth"], details.get("dropped_messages", 0)
    behind = details["oldest_age_s"]
    unconfirmed = details["unconfirmed"]
    if dropped:
        checks.append(
            Check(
                "spool",
                "warn",
                f"{depth} waiting; {dropped} oldest messages were DROPPED (spool full)",
                "restore the uplink; raise spool_max_messages if disk allows",
                details,
            )
        )
    elif behind > max(600.0, 10 * cfg.interval_s) and not unconfirmed:
        if unconfirmed == 0:  # the service says none of them is even published
            where, fix = "not published", "the gateway is not publishing: see 'broker'"
        else:
            where, fix = (
                "not delivered",
                "see 'broker' and 'service'; if both are fine, ask the operator whether "
                "the collector runs and knows this gateway",
            )
        checks.append(
            Check(
                "spool",
                "warn",
                f"{depth} {where}, oldest {behind / 60:.0f} min old",
                fix,
                details,
            )
        )
    else:
        checks.append(Check("spool", "ok", f"{depth} message(s) waiting", "", details))
    checks.append(_check_delivery(cfg, details))
    return checks


def _check_delivery(cfg: GatewayConfig, details: dict[str, Any]) -> Check:
    """Published (PUBACK, memory only: from the status) and confirmed (receipts, counted in
    the spool). From the spool file alone "published, waiting for a receipt" is not known."""
    confirmed = details.get("confirmed_messages", 0)
    last = details.get("last_published")
    unconfirmed = details["unconfirmed"]
    live = details["source"] == SOURCE_STATUS
    tag = "" if live else " (spool file only)"
    if unconfirmed and details["oldest_age_s"] > 2 * max(cfg.confirm_timeout_s, 60.0):
        return Check(
            "delivery",
            "warn",
            f"{unconfirmed} message(s) published but not confirmed by a collector; the "
            f"oldest waits {details['oldest_age_s'] / 60:.0f} min",
            "ask the operator whether the collector runs and knows this gateway",
            details,
        )
    if confirmed == 0 and not last and details.get("published_readings", 0) == 0:
        return Check(
            "delivery",
            "warn",
            f"nothing published yet{tag}",
            "start the service and run the doctor again in a minute",
            details,
        )
    if confirmed == 0:
        return Check(
            "delivery",
            "warn",
            f"published, no collector confirmation yet{tag}",
            "wait a minute; if it stays, the collector may not know this gateway",
            details,
        )
    if live:
        when = f", last publish {_utc(float(last))}" if last else ", none since the start"
    else:
        when = tag
    return Check("delivery", "ok", f"{confirmed} message(s) confirmed{when}", "", details)


def _check_disk(cfg: GatewayConfig) -> Check:
    path = cfg.data_dir if cfg.data_dir.exists() else Path("/")
    usage = shutil.disk_usage(path)
    free_mb = usage.free / 1024 / 1024
    details = {"free_bytes": usage.free, "total_bytes": usage.total}
    if usage.free < DISK_FAIL_BYTES:
        return Check(
            "disk",
            "fail",
            f"{free_mb:.0f} MB free on {path}",
            "free space (journalctl --vacuum-size=50M, old files)",
            details,
        )
    if usage.free < DISK_WARN_BYTES or usage.free < usage.total * 0.05:
        return Check("disk", "warn", f"only {free_mb:.0f} MB free", "free some space", details)
    return Check("disk", "ok", f"{free_mb:.0f} MB free", "", details)


# --------------------------------------------------------------------------------------------
# all together
# --------------------------------------------------------------------------------------------


def run_doctor(cfg: GatewayConfig, probe: Probe | None = None) -> Report:
    """Every check, in the order a technician fixes things."""
    probe = probe or Probe()
    checks: list[Check] = []
    key_check, gw = _check_key(cfg)
    checks.append(key_check)
    checks.append(_check_tls_key(cfg))
    cert = None
    if gw is None:
        checks.append(Check("enrolled", "skip", "needs the gateway key"))
    else:
        enrolled, cert = _check_enrolled(cfg, gw)
        checks.append(enrolled)
    spool = _spool_facts(cfg)
    clock = _check_clock(probe, cert, spool)
    checks.append(clock)
    if cert is not None:
        checks.append(_check_cert_validity(probe, cert))
    service = ServiceStatus(None, "the broker check failed")
    if not probe.broker:
        checks.append(Check("broker", "skip", "not checked (--no-broker)"))
        service.why_not = "--no-broker"
    elif gw is None or cert is None:
        checks.append(Check("broker", "skip", "needs the key and the certificate"))
        service.why_not = "no key or certificate to log in with"
    else:
        checks.append(_check_broker(cfg, gw, probe.timeout_s, service))
    now = probe.clock()
    checks.append(_check_service(cfg, service, now))
    live = _live(service, cfg, now)
    if gw is not None and cert is not None and probe.broker and cfg.enrollment_url:
        checks.append(_check_registration(cfg, gw, cert, probe.timeout_s))
    if probe.sensors:
        checks.extend(_check_sensors(cfg, probe.clock()))
    else:
        checks.append(Check("sensors", "skip", "not read (--no-sensors)"))
    checks.extend(_check_spool(cfg, spool, probe.clock(), live))
    checks.append(_check_spool_write(cfg, spool, live))
    checks.append(_check_disk(cfg))
    if gw is None:
        cert_cn = None
        with contextlib.suppress(OSError, ValueError):
            cert_cn = common_name(
                x509.load_pem_x509_certificate(tls_paths(cfg).cert_file.read_bytes()).subject
            )
        gw = f"{cert_cn} (per its certificate)" if cert_cn else "(unknown: no usable key)"
    return Report(gw, cfg.farm, cfg.field, checks, SOURCE_STATUS if live else SOURCE_SPOOL)


_MARK = {"ok": ("OK", "green"), "warn": ("WARN", "yellow"), "fail": ("FAIL", "red"),
         "skip": ("--", "bright_black")}  # fmt: skip


def _wrap(text: str) -> list[str]:
    """Wrap at spaces only: a path or command stays whole (copyable) even if it is long."""
    return textwrap.wrap(text, WIDTH - 5, break_on_hyphens=False, break_long_words=False)


def render(report: Report, color: bool = False) -> str:
    """≤ 60 columns: fits a phone's SSH terminal."""
    lines = [
        f"gateway {report.gateway}",
        f"farm {report.farm or '-'} / field {report.field or '-'}",
    ]
    indent = " " * 5
    for c in report.checks:
        mark, colour = _MARK[c.status]
        label = click.style(f"{mark:<4}", fg=colour, bold=True) if color else f"{mark:<4}"
        text = f"{c.name}: {c.summary}"
        wrapped = _wrap(text) or [""]
        lines.append(f"{label} {wrapped[0]}")
        lines.extend(indent + w for w in wrapped[1:])
        if c.fix and c.status in ("warn", "fail"):
            fix = _wrap("→ " + c.fix)
            lines.extend(indent + w for w in fix)
    fails = sum(c.status == "fail" for c in report.checks)
    warns = sum(c.status == "warn" for c in report.checks)
    if fails:
        verdict = f"NOT READY: {fails} problem(s) to fix" + (
            f", {warns} warning(s)" if warns else ""
        )
    elif warns:
        verdict = f"WORKING, {warns} warning(s) to look at"
    else:
        verdict = "ALL GOOD: this gateway works and is secure"
    lines.append(click.style(verdict, bold=True) if color else verdict)
    return "\n".join(lines)


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
