"""The enrollment endpoint under attack (issue 13, findings 4 and 5), each attack performed
against a real endpoint on loopback (collector.enrollment.start_enrollment_server: its worker
pool, sockets and files; the real CA, registry and evidence log) by a client that owns its
sockets, or by a real on-path proxy between a real gateway CLI and the endpoint."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding

from collector.ca import CertificateAuthority
from collector.enrollment import (
    EndpointLimits,
    EnrollmentServer,
    PendingLimits,
    start_enrollment_server,
    token_store,
)
from collector.security_cli import approve_command, pending_command
from fieldproof.formats.enrollment import MAX_REQUEST_BYTES
from fieldproof.keys import load_key_file
from fieldproof.tls import fingerprint, new_tls_key
from fieldproof.wire import gateway_id_for, public_key_bytes
from gateway.config import GatewayConfig
from gateway.enroll import (
    enroll_command,
    enroll_install_command,
    gateway_identity,
    make_request,
    tls_paths,
)
from tests.support.enrollment import (
    FARM,
    FIELD,
    OnPathProxy,
    Site,
    forge_request,
    invoke,
    make_gateway,
    make_site,
    ok,
)

ESC = "\x1b"
HOSTILE = f"{ESC}]0;owned{chr(7)}{ESC}[2J{ESC}[31mAPPROVED{ESC}[0m\r\n"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


@contextmanager
def endpoint(
    site: Site,
    limits: EndpointLimits | None = None,
    pending: PendingLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[tuple[EnrollmentServer, str]]:
    enroller = site.enroller()
    if pending is not None:
        enroller.pending_limits = pending
    server = start_enrollment_server(enroller, "127.0.0.1", 0, limits=limits, clock=clock)
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def post(url: str, raw: bytes) -> httpx.Response:
    return httpx.post(url + "/v1/enroll", content=raw, timeout=60)


def fresh_request(**fields: object) -> tuple[bytes, str]:
    """A valid request of a new (attacker-made) gateway: its own key, its own id."""
    key = Ed25519PrivateKey.generate()
    raw = forge_request(key, new_tls_key(), gw=None, **fields)
    return raw, gateway_id_for(public_key_bytes(key))


def pending_dir(site: Site) -> Path:
    return site.cfg.data_dir / "enrollment" / "pending"


FROZEN: Callable[[], float] = lambda: 1000.0  # noqa: E731 (no refill, one log line per reason)


# --------------------------------------------------------------------------------------------
# finding 4: the pending slot of another gateway
# --------------------------------------------------------------------------------------------


def test_another_key_cannot_take_a_gateways_pending_slot(site: Site, tmp_path: Path) -> None:
    """The attack: a request naming the victim's id, signed by the attacker's key, with a CSR
    for the attacker's TLS key. Before the fix it replaced the victim's waiting request, so
    the operator approving "gw-victim" registered the attacker's key."""
    _, cfg = make_gateway(tmp_path, "victim")
    with endpoint(site) as (server, url):
        raw, victim = make_request(cfg, installer="Ana")
        # a squatter's file from before the fix (id not derived from its key) is replaced
        squat = forge_request(Ed25519PrivateKey.generate(), new_tls_key(), gw=victim)
        pending_dir(site).joinpath(f"{victim}.cose").write_bytes(squat)
        assert post(url, raw).status_code == 202
        slot = pending_dir(site) / f"{victim}.cose"
        assert slot.read_bytes() == raw

        attacker = Ed25519PrivateKey.generate()
        forged = forge_request(attacker, new_tls_key(), gw=victim, installer="Ana")
        r = post(url, forged)
        assert r.status_code == 403 and "derived from its key" in r.json()["error"]
        assert slot.read_bytes() == raw  # untouched
        # a replay of an older request of the victim does not replace the newer one either
        older, _ = make_request(cfg, installer="Ana", now=time.time() - 3600)
        r = post(url, older)
        assert r.status_code == 403 and "newer request" in r.json()["error"]
        assert slot.read_bytes() == raw
        assert server.refused["refused"] == 2

    ok(invoke(approve_command, "--config", site.collector_config, "--pending", victim, "--yes",
              "--out", tmp_path / "resp.json"))  # fmt: skip
    device = site.registry().get(victim)
    assert device is not None
    assert device.public_key == public_key_bytes(load_key_file(cfg.key_file))
    assert len(site.registry().all()) == 1


def test_a_registered_gateway_cannot_be_renewed_with_another_key(site: Site) -> None:
    """An id that is registered stays bound to its key, pending or not."""
    victim_key = Ed25519PrivateKey.generate()
    victim = gateway_id_for(public_key_bytes(victim_key))
    site.enroller().approve(forge_request(victim_key, new_tls_key()), operator="op")
    with endpoint(site) as (_server, url):
        r = post(url, forge_request(Ed25519PrivateKey.generate(), new_tls_key(), gw=victim))
        assert r.status_code == 403 and "registered with another key" in r.json()["error"]
    assert not (pending_dir(site) / f"{victim}.cose").exists()


# --------------------------------------------------------------------------------------------
# finding 4: flooding the data volume, the workers and the log
# --------------------------------------------------------------------------------------------


def test_pending_requests_are_bounded_in_number_and_bytes(site: Site) -> None:
    """Before: 300 pending files (9 MB) in 2 s from one client. Now the pending area holds at
    most ``max_count`` requests and ``max_bytes``; the rest is refused with 503."""
    limits = EndpointLimits(rate_burst=1000)
    with endpoint(site, limits, PendingLimits(max_count=5), FROZEN) as (server, url):
        codes = [post(url, fresh_request(installer="x" * 100)[0]).status_code for _ in range(30)]
        assert codes == [202] * 5 + [503] * 25
        assert len(list(pending_dir(site).iterdir())) == 5
        assert server.refused["pending_full"] == 25
    for f in pending_dir(site).iterdir():
        f.unlink()
    one = len(fresh_request()[0])
    # 1 KiB of sensor configuration per request: the byte bound is reached first
    big = [{"name": f"s{i}", "kind": "simulated", "config": {"note": "n" * 200}} for i in range(5)]
    size = len(fresh_request(sensors=big)[0])
    assert size > one + 1000
    bound = PendingLimits(max_count=100, max_bytes=3 * size + size // 2)
    with endpoint(site, limits, bound, FROZEN) as (server, url):
        codes = [post(url, fresh_request(sensors=big)[0]).status_code for _ in range(6)]
        assert codes == [202] * 3 + [503] * 3
    assert sum(f.stat().st_size for f in pending_dir(site).iterdir()) <= bound.max_bytes


def test_one_address_is_rate_limited_and_logged_once(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="fieldproof.enrollment")
    limits = EndpointLimits(rate_burst=5, rate_per_minute=1)
    with endpoint(site, limits, clock=FROZEN) as (server, url):
        answers = [post(url, fresh_request()[0]) for _ in range(20)]
        assert [a.status_code for a in answers] == [202] * 5 + [429] * 15
        assert answers[-1].headers["Retry-After"] == "60"
        assert httpx.get(url + "/v1/enroll/gw-0000000000000000").status_code == 429
        assert len(list(pending_dir(site).iterdir())) == 5
        assert server.refused["rate_limited"] == 16
    lines = [r.getMessage() for r in caplog.records if "rate_limited" in r.getMessage()]
    assert len(lines) == 1 and "127.0.0.1" in lines[0]


def _stalled(port: int, data: bytes = b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n") -> socket.socket:
    """A client that starts a request and never finishes it."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    s.settimeout(120)  # only a safety net: the server closes it long before
    return s


def _closed_by_server(s: socket.socket) -> bool:
    try:
        return s.recv(4096) == b""
    except ConnectionResetError:
        return True
    finally:
        s.close()


def _endpoint_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("enrollment-")]


def test_slow_clients_hold_no_thread_of_their_own_and_time_out(site: Site) -> None:
    """Before: a thread per connection, each waiting 30 s per read, so a client sending a
    byte every 29 s held its thread forever. Now a fixed pool serves; a connection past the
    pool and its queue is closed at once and one that is too slow in all is cut off."""
    limits = EndpointLimits(workers=2, queue=2, per_address=100, request_timeout_s=3,
                            rate_burst=1000)  # fmt: skip
    with endpoint(site, limits) as (server, url):
        port = server.server_address[1]
        threads = _endpoint_threads()
        assert len(threads) == limits.workers + 1  # the pool and the accept loop
        # a trickler: one byte at a time, each well inside any per-read timeout
        trickler = socket.create_connection(("127.0.0.1", port))
        stop = threading.Event()

        def trickle() -> None:
            try:
                for b in b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                    trickler.sendall(bytes([b]))
                    if stop.wait(0.2):
                        return
            except OSError:
                return  # the server cut it off

        t = threading.Thread(target=trickle, daemon=True)
        t.start()
        stalled = [_stalled(port) for _ in range(9)]
        assert _endpoint_threads() == threads  # ten open connections, no new thread
        assert all(_closed_by_server(s) for s in stalled)
        trickler.settimeout(120)
        assert _closed_by_server(trickler)
        stop.set()
        t.join()
        held = limits.workers + limits.queue
        assert server.refused["busy"] >= 10 - held
        assert server.refused["busy"] + server.refused["timeout"] == 10
        assert server.refused["timeout"] >= limits.workers
        # the endpoint still serves an honest gateway
        assert post(url, fresh_request()[0]).status_code == 202


def test_one_address_cannot_hold_every_worker(site: Site) -> None:
    limits = EndpointLimits(workers=4, queue=4, per_address=2, request_timeout_s=60,
                            rate_burst=1000)  # fmt: skip
    with endpoint(site, limits) as (server, _url):
        port = server.server_address[1]
        held = [_stalled(port) for _ in range(2)]
        refused = [_stalled(port) for _ in range(3)]
        assert all(_closed_by_server(s) for s in refused)
        assert server.refused["too_many_connections"] == 3
        for s in held:
            s.close()


def test_oversized_requests_are_cut_off(site: Site) -> None:
    limits = EndpointLimits(rate_burst=1000)
    with endpoint(site, limits) as (server, url):
        r = httpx.post(url + "/v1/enroll", content=b"x" * (MAX_REQUEST_BYTES + 1), timeout=60)
        assert r.status_code == 413
        # headers without end: cut off at the byte budget, not read forever
        s = _stalled(server.server_address[1], b"GET /v1/enroll/gw-0 HTTP/1.1\r\n")
        try:
            for _ in range(200):
                s.sendall(b"X-Pad: " + b"a" * 1000 + b"\r\n")
        except OSError:
            pass  # the server closed while we were still sending
        assert _closed_by_server(s)
        assert server.refused["too_large"] >= 2


# --------------------------------------------------------------------------------------------
# finding 4: terminal escape sequences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"installer": HOSTILE},
        {"location": "45.1,7.6" + HOSTILE},
        {"farm": FARM + ESC + "[2J"},
        {"sensors": [{"name": "soil" + HOSTILE, "kind": "simulated"}]},
        {"sensors": [{"name": "soil", "kind": "simulated", "config": {HOSTILE: 1}}]},
        {"sensors": [{"name": "s", "kind": "simulated", "config": {"p": ["/dev/x", HOSTILE]}}]},
        {"installer": "Ana\u202eevil"},  # a bidirectional override: reorders what is shown
    ],
    ids=["installer", "location", "farm", "sensor-name", "config-key", "nested-value", "bidi"],
)
def test_control_characters_are_refused_and_never_reach_a_terminal(
    site: Site, tmp_path: Path, fields: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    raw, gw = fresh_request(**fields)
    with endpoint(site) as (server, url):
        r = post(url, raw)
        assert r.status_code == 403 and "non-printable" in r.json()["error"]
        assert b"\x1b" not in r.content and b"\xe2\x80\xae" not in r.content
        assert server.refused["refused"] == 1
    assert not (pending_dir(site) / f"{gw}.cose").exists()
    # the offline path: the operator is shown an error, escaped, and nothing is approved
    (tmp_path / "r.cose").write_bytes(raw)
    result = invoke(approve_command, "--config", site.collector_config, tmp_path / "r.cose",
                    input="y\n")  # fmt: skip
    assert result.exit_code != 0 and "non-printable" in result.output
    assert ESC not in result.output and "\u202e" not in result.output
    # a file that came in before the fix is ignored by `devices pending`, not printed raw
    (pending_dir(site) / f"{gw}.cose").write_bytes(raw)
    out = ok(invoke(pending_command, "--config", site.collector_config))
    assert ESC not in out and "\u202e" not in out
    assert site.registry().get(gw) is None
    for record in caplog.records:
        assert ESC not in record.getMessage() and "\u202e" not in record.getMessage()


def test_printable_text_from_anywhere_is_shown_as_it_is(site: Site, tmp_path: Path) -> None:
    """The refusal is of control characters, not of non-ASCII text."""
    raw, gw = fresh_request(installer="Zoë Müller-Ørsted", location="45°04′N 7°41′E")
    (tmp_path / "r.cose").write_bytes(raw)
    out = ok(invoke(approve_command, "--config", site.collector_config, tmp_path / "r.cose",
                    "--yes", "--operator", "op"))  # fmt: skip
    assert "Zoë Müller-Ørsted" in out and "45°04′N 7°41′E" in out
    assert site.registry().get(gw) is not None


# --------------------------------------------------------------------------------------------
# finding 5: an on-path attacker strips the token's seal, swaps the CA and the broker
# --------------------------------------------------------------------------------------------


def _strip_mac(method: str, status: int, body: bytes) -> bytes:
    if status != 200:
        return body
    resp = json.loads(body)
    resp.pop("mac", None)
    return json.dumps(resp).encode()


def _swap_ca(rogue: CertificateAuthority) -> Callable[[str, int, bytes], bytes]:
    """The attacker's answer: the gateway's own TLS key certified by the attacker's CA, the
    attacker's broker, no seal (it cannot make one)."""

    def tamper(method: str, status: int, body: bytes) -> bytes:
        if status != 200:
            return body
        resp = json.loads(body)
        real = x509.load_pem_x509_certificate(resp["cert"].encode())
        now = real.not_valid_before_utc
        cert = (
            x509.CertificateBuilder()
            .subject_name(real.subject)
            .issuer_name(rogue.cert.subject)
            .public_key(real.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(real.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(rogue.key, hashes.SHA256())
        )
        resp.update(
            cert=cert.public_bytes(Encoding.PEM).decode(),
            ca=rogue.cert_pem.decode(),
            ca_sha256=fingerprint(rogue.cert),
            broker={"host": "broker.attacker.example", "port": 8883},
        )
        resp.pop("mac", None)
        return json.dumps(resp).encode()

    return tamper


def _token(site: Site) -> str:
    return token_store(site.cfg).create(FARM, FIELD, 3600)[0]


def _nothing_installed(cfg: GatewayConfig) -> bool:
    return not tls_paths(cfg).cert_file.exists() and not tls_paths(cfg).ca_file.exists()


def test_a_stripped_seal_is_refused(site: Site, tmp_path: Path) -> None:
    with endpoint(site) as (_server, url):
        # the proxy itself passes an honest answer: the gateway installs it
        honest = OnPathProxy(url)
        try:
            path, _ = make_gateway(tmp_path, "g0")
            out = ok(invoke(enroll_command, "--config", path, "--installer", "Ana",
                            "--token", _token(site), "--url", honest.url))  # fmt: skip
            assert "CA checked by: token" in out
        finally:
            honest.close()
        proxy = OnPathProxy(url, _strip_mac)
        try:
            path, cfg = make_gateway(tmp_path, "g1")
            result = invoke(enroll_command, "--config", path, "--installer", "Ana",
                            "--token", _token(site), "--url", proxy.url)  # fmt: skip
            assert result.exit_code != 0
            assert "does not carry the enrollment token's seal (it has none)" in result.output
            assert ("POST", "/v1/enroll", 200) in proxy.seen  # the collector did answer
            assert _nothing_installed(cfg)
            # fetched again later through the same attacker: still refused
            result = invoke(enroll_install_command, "--config", path, "--url", proxy.url)
            assert result.exit_code != 0 and "seal" in result.output
            assert _nothing_installed(cfg)
        finally:
            proxy.close()
        # over a trusted path the same gateway gets its sealed answer (a retry is allowed)
        ok(invoke(enroll_install_command, "--config", path, "--url", url))
        assert tls_paths(cfg).ca_file.read_bytes() == site.ca.cert_pem


def test_a_swapped_ca_and_broker_are_refused(site: Site, tmp_path: Path) -> None:
    rogue = CertificateAuthority.create(tmp_path / "rogue-ca")
    with endpoint(site) as (_server, url):
        proxy = OnPathProxy(url, _swap_ca(rogue))
        try:
            # with a token: the swapped answer carries no seal
            path, cfg = make_gateway(tmp_path, "g1")
            result = invoke(enroll_command, "--config", path, "--installer", "Ana",
                            "--token", _token(site), "--url", proxy.url)  # fmt: skip
            assert result.exit_code != 0 and "seal" in result.output
            assert _nothing_installed(cfg)
            # without a token, nothing vouches for the CA: refused unless told otherwise
            path, cfg = make_gateway(tmp_path, "g2")
            out = ok(invoke(enroll_command, "--config", path, "--installer", "Bo",
                            "--url", proxy.url))  # fmt: skip
            assert "operator must approve" in out
            gw = gateway_identity(cfg, load_key_file(cfg.key_file))
            ok(invoke(approve_command, "--config", site.collector_config, "--pending", gw,
                      "--yes", "--out", tmp_path / "r.json"))  # fmt: skip
            result = invoke(enroll_install_command, "--config", path, "--url", proxy.url)
            assert result.exit_code != 0 and "nothing vouches for the CA" in result.output
            assert _nothing_installed(cfg)
            # the fingerprint the operator gave does not match the attacker's CA
            result = invoke(enroll_install_command, "--config", path, "--url", proxy.url,
                            "--ca-fingerprint", fingerprint(site.ca.cert))  # fmt: skip
            assert result.exit_code != 0 and "not the" in result.output
            assert _nothing_installed(cfg)
            # only the explicit opt-in installs an unvouched CA, and says so
            out = ok(invoke(enroll_install_command, "--config", path, "--url", proxy.url,
                            "--trust-unverified-ca"))  # fmt: skip
            assert "WARNING: nothing vouched for this CA" in out
            assert fingerprint(rogue.cert) in out
        finally:
            proxy.close()


def test_a_response_holding_escape_sequences_is_refused_by_the_gateway(
    site: Site, tmp_path: Path
) -> None:
    """The gateway's terminal is as exposed as the operator's: what an on-path attacker puts
    in the answer is refused or shown escaped."""

    def hostile(method: str, status: int, body: bytes) -> bytes:
        if method == "POST":
            return json.dumps({"error": "denied" + HOSTILE}).encode()
        resp = json.loads(body)
        resp["broker"] = {"host": "evil" + HOSTILE, "port": 8883}
        return json.dumps(resp).encode()

    with endpoint(site) as (_server, url):
        proxy = OnPathProxy(url, hostile)
        try:
            path, _ = make_gateway(tmp_path, "g1")
            unknown = "fpe1.00000000." + "a" * 32  # the collector answers 403
            result = invoke(enroll_command, "--config", path, "--installer", "Ana",
                            "--token", unknown, "--url", proxy.url)  # fmt: skip
            assert result.exit_code != 0 and "denied" in result.output
            assert ESC not in result.output and "\\x1b" in result.output
            ok(invoke(enroll_command, "--config", path, "--installer", "Ana",
                      "--token", _token(site), "--url", url))  # fmt: skip
            result = invoke(enroll_install_command, "--config", path, "--url", proxy.url)
            assert result.exit_code != 0 and "broker is not a host name" in result.output
            assert ESC not in result.output
        finally:
            proxy.close()


def test_a_swapped_ca_is_refused_when_the_ca_was_installed_before(
    site: Site, tmp_path: Path
) -> None:
    """install-gateway.sh --ca-file: the CA installed beforehand vouches, and refuses any
    other, even with --trust-unverified-ca."""
    rogue = CertificateAuthority.create(tmp_path / "rogue-ca")
    with endpoint(site) as (_server, url):
        proxy = OnPathProxy(url, _swap_ca(rogue))
        try:
            path, cfg = make_gateway(tmp_path, "g1")
            tls_paths(cfg).ca_file.parent.mkdir(parents=True, exist_ok=True)
            tls_paths(cfg).ca_file.write_bytes(site.ca.cert_pem)
            ok(invoke(enroll_command, "--config", path, "--installer", "Ana", "--url", url))
            gw = gateway_identity(cfg, load_key_file(cfg.key_file))
            ok(invoke(approve_command, "--config", site.collector_config, "--pending", gw,
                      "--yes", "--out", tmp_path / "r.json"))  # fmt: skip
            result = invoke(enroll_install_command, "--config", path, "--url", proxy.url,
                            "--trust-unverified-ca")  # fmt: skip
            assert result.exit_code != 0 and "another collector" in result.output
            assert not tls_paths(cfg).cert_file.exists()
            assert tls_paths(cfg).ca_file.read_bytes() == site.ca.cert_pem
            out = ok(invoke(enroll_install_command, "--config", path, "--url", url))
            assert "CA checked by: pre-installed CA" in out
        finally:
            proxy.close()
