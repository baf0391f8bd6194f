"""The broker check: a real TLS handshake with this gateway's certificate and, when the
service is not connected, an MQTT login (fieldproof/mqtt_packets.py) that reads its retained
status; and the collector's registration through the enrollment endpoint."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import time
from typing import Any

from cryptography import x509

from fieldproof.formats.status import StatusRejected, parse_status
from fieldproof.mqtt import status_topic
from fieldproof.mqtt_packets import (
    DISCONNECT,
    PINGREQ,
    PINGRESP,
    PUBLISH,
    SUBACK,
    Packet,
    connack_reason,
    connect_packet,
    packet,
    parse_publish,
    read_packet,
    suback_codes,
    subscribe_packet,
)
from gateway.config import GatewayConfig
from gateway.doctor.report import Check
from gateway.doctor.service import ServiceStatus, stale_after
from gateway.identity import tls_paths
from gateway.local_status import read_local_status

#: largest MQTT packet the doctor reads (a status message is a few hundred bytes)
MAX_PACKET_BYTES = 1024 * 1024


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError("the broker closed the connection")
        buf += chunk
    return bytes(buf)


def _read_packet(s: socket.socket) -> Packet:
    """One MQTT packet. Raises EOFError when the broker hangs up."""
    return read_packet(lambda n: _recv_exact(s, n), MAX_PACKET_BYTES)


def _read_retained(s: socket.socket, topic: str, timeout: float) -> bytes | None:
    """SUBSCRIBE to ``topic`` (QoS 0) and return the retained message, None when there is
    none. A PINGREQ follows the SUBSCRIBE: the broker sends retained messages as it handles
    the SUBSCRIBE, so its PINGRESP says "that was all" without waiting on a timer."""
    s.sendall(subscribe_packet(1, topic, qos=0) + packet(PINGREQ, b""))
    deadline = time.monotonic() + timeout
    found: bytes | None = None
    while True:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        p = _read_packet(s)
        if p.kind == SUBACK:
            codes = suback_codes(p)
            if not codes or codes[0] >= 0x80:
                code = f"{codes[0]:#x}" if codes else "none"
                raise PermissionError(f"the broker refused to let us read it (reason {code})")
        elif p.kind == PUBLISH:
            name, _, payload = parse_publish(p)
            if name == topic:
                found = payload
        elif p.kind == PINGRESP:
            return found
        elif p.kind == DISCONNECT:
            raise EOFError("the broker closed the connection")


def read_service_status(
    s: socket.socket, cfg: GatewayConfig, gw: str, timeout: float
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


def tls_context(cfg: GatewayConfig) -> ssl.SSLContext:
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


def check_broker(
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
        local if local is not None and local.connected and local.running(stale_after(cfg)) else None
    )
    where = f"{host}:{port}"
    details: dict[str, Any] = {"host": host, "port": port, "tls": cfg.mqtt.tls is not None}
    ctx: ssl.SSLContext | None = None
    if cfg.mqtt.tls is not None:
        try:
            ctx = tls_context(cfg)
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
        with ctx.wrap_socket(raw, server_hostname=host) if ctx else raw as s:
            s.settimeout(timeout)
            if agent is not None:  # with TLS, the handshake is the broker accepting our cert
                if service is not None:
                    service.status, service.why_not, service.asked = agent.status, "", True
                age = max(0.0, time.time() - agent.written_at)
                details["via"] = "running service"
                return Check(
                    "broker",
                    "ok",
                    f"{where} {'accepts this certificate' if ctx else 'answers'}; the "
                    f"running service is connected (pid {agent.pid}, said so {age:.0f} s ago)",
                    "",
                    details,
                )
            # clean start: the service keeps no session on the broker (its spool is its memory).
            # Without a certificate the broker does not tie the id to one: use our own.
            s.sendall(connect_packet(gw if ctx else f"{gw}-doctor", keepalive=10))
            try:
                reason = connack_reason(_read_packet(s))
            except (EOFError, ValueError):
                return Check("broker", "fail", REFUSED_CERT, REFUSED_FIX, details)
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
    login = "TLS and MQTT login" if ctx else "MQTT login (no TLS)"
    return Check("broker", "ok", f"{where}: {login} accepted", "", details)


def check_registration(
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
