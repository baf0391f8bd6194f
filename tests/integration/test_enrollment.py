"""Enrollment from the gateway's first key to readings accepted over TLS, and back out again
(revocation), with tokens, renewal and key rotation. The CA, broker and processes are real;
the CLI commands run in-process through click's runner."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.broker import SecureMosquitto, provision_broker_certs
from collector.ca import CertificateAuthority, load_crl
from collector.enrollment import (
    PendingApproval,
    TokenStore,
    start_enrollment_server,
    token_store,
    verify_with_key_history,
)
from collector.security_cli import (
    approve_command,
    ca_collector_cert_command,
    pending_command,
    revoke_command,
    rotate_command,
    token_create_command,
)
from collector.store import CollectorStore
from demo import spool_counts
from fieldproof import wire
from fieldproof.datadir import open_db
from fieldproof.formats.enrollment import (
    EnrollmentError,
    build_request,
    parse_request,
    parse_token,
)
from fieldproof.keys import load_key_file
from fieldproof.services import InfluxDB
from fieldproof.tls import CAError, fingerprint, make_csr, new_tls_key
from gateway.config import GatewayConfig
from gateway.enroll import (
    enroll_command,
    enroll_install_command,
    gateway_identity,
    install_response,
    make_request,
    rotate_key_command,
    tls_paths,
)
from tests.support.enrollment import (
    FARM,
    FIELD,
    Site,
    enroll_by_file,
    invoke,
    make_gateway,
    make_site,
    ok,
    start_site_broker,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------
# a site: collector (CA, registry, evidence log) and gateways, as files on disk
# --------------------------------------------------------------------------------------------














@pytest.fixture
def site(tmp_path: Path) -> Site:
    return make_site(tmp_path)


# --------------------------------------------------------------------------------------------
# the request
# --------------------------------------------------------------------------------------------


def test_request_is_a_signed_cose_document_with_everything_the_log_needs(
    site: Site, tmp_path: Path
) -> None:
    _path, cfg = make_gateway(tmp_path, "g1")
    raw, gw = make_request(cfg, installer="Ana", location="45.1,7.6", now=1.8e9)
    assert raw[0] == 0xD2  # tagged COSE_Sign1
    req = parse_request(raw)
    assert (req.gateway, req.farm, req.field, req.location, req.installer) == (
        gw, FARM, FIELD, "45.1,7.6", "Ana"
    )  # fmt: skip
    assert req.public_key == wire.public_key_bytes(load_key_file(cfg.key_file))
    assert req.sensors[0]["name"] == "station" and req.sensors[0]["kind"] == "simulated"
    assert req.csr.subject.rfc4514_string() == f"CN={gw}"
    # the TLS key was made on the device, owner-only
    mode = stat.S_IMODE(tls_paths(cfg).key_file.stat().st_mode)
    assert mode == 0o600
    wire.decode_deterministic(raw)  # one exact encoding


def test_tampered_or_foreign_requests_are_refused(site: Site, tmp_path: Path) -> None:
    _, cfg = make_gateway(tmp_path, "g1")
    raw, gw = make_request(cfg, installer="Ana")
    tampered = raw.replace(FARM.encode(), b"farm-b")
    with pytest.raises(EnrollmentError, match="signature"):
        parse_request(tampered)
    # a key that is not the gateway's signs a request naming the gateway
    other = Ed25519PrivateKey.generate()
    key = new_tls_key()
    forged = build_request(
        other, make_csr(key, gw), farm=FARM, field=FIELD, location="", installer="x",
        sensors=[], now=time.time(),
    )  # fmt: skip
    with pytest.raises(EnrollmentError):
        site.enroller().approve(forged, operator="op")
    assert site.registry().get(gw) is None


# --------------------------------------------------------------------------------------------
# approval: operator, token, pending
# --------------------------------------------------------------------------------------------


def test_operator_approval_registers_logs_and_issues_a_certificate(
    site: Site, tmp_path: Path
) -> None:
    path, cfg = make_gateway(tmp_path, "g1")
    gw = enroll_by_file(site, path)
    device = site.registry().get(gw)
    assert device is not None and device.active and (device.farm, device.field) == (FARM, FIELD)
    events = site.log_events()
    assert [e["event"] for e in events] == ["enroll"]
    ev = events[0]
    assert ev["gw"] == gw and ev["installer"] == "Ana (tech 7)" and ev["location"] == "45.1,7.6"
    assert ev["approved"] == "operator:op"
    raw_request = ev["request"]
    assert isinstance(raw_request, bytes)
    request = parse_request(raw_request)
    assert request.gateway == gw  # the gateway's own signature over its enrollment
    cert = x509.load_pem_x509_certificate(tls_paths(cfg).cert_file.read_bytes())
    assert cert.subject.rfc4514_string() == f"CN={gw}"
    cert.verify_directly_issued_by(site.ca.cert)
    assert [(r.cn, r.kind) for r in site.ca.issued() if r.kind == "gateway"] == [(gw, "gateway")]
    assert stat.S_IMODE((site.cfg.data_dir / "ca" / "ca.key").stat().st_mode) == 0o600


def test_token_enrollment_is_automatic_and_single_use(site: Site, tmp_path: Path) -> None:
    token = ok(invoke(token_create_command, "--config", site.collector_config,
                      "--farm", FARM, "--field", FIELD)).splitlines()[0]  # fmt: skip
    _, cfg1 = make_gateway(tmp_path, "g1")
    raw, gw = make_request(cfg1, installer="Ana", token=token)
    approval = site.enroller().approve(raw)  # no operator
    assert site.registry().get(gw) is not None
    result = install_response(cfg1, approval.response)
    assert result.authenticated_by == "token"
    assert site.log_events()[0]["approved"] == f"token:{token.split('.')[1]}"
    # the same token cannot enroll a second gateway
    _, cfg2 = make_gateway(tmp_path, "g2")
    raw2, gw2 = make_request(cfg2, installer="Ana", token=token)
    with pytest.raises(EnrollmentError, match="already used"):
        site.enroller().approve(raw2)
    assert site.registry().get(gw2) is None
    # a retry by the same gateway (lost response) is fine
    site.enroller().approve(raw)


def test_token_is_bound_to_its_farm_and_field_and_expiry(site: Site, tmp_path: Path) -> None:
    db = open_db(site.cfg.db_path)
    token, _ = token_store(site.cfg, db).create(FARM, "south", 3600)
    _, cfg = make_gateway(tmp_path, "g1")
    raw, gw = make_request(cfg, installer="Ana", token=token)
    with pytest.raises(EnrollmentError, match="south"):
        site.enroller().approve(raw)
    seal_key = token_store(site.cfg, db).seal_key_file
    past = TokenStore(db, seal_key, clock=lambda: time.time() - 7200)
    expired, _ = past.create(FARM, FIELD, 3600)
    raw, gw = make_request(cfg, installer="Ana", token=expired)
    with pytest.raises(EnrollmentError, match="expired"):
        site.enroller().approve(raw)
    guessed = "fpe1." + expired.split(".")[1] + "." + "a" * 32
    raw, gw = make_request(cfg, installer="Ana", token=guessed)
    with pytest.raises(EnrollmentError, match="unknown or does not match"):
        site.enroller().approve(raw)
    assert site.registry().get(gw) is None


def _database_bytes(site: Site) -> bytes:
    db = open_db(site.cfg.db_path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    files = [site.cfg.db_path, *site.cfg.db_path.parent.glob("collector.sqlite-*")]
    return b"".join(f.read_bytes() for f in files)


def test_the_database_holds_no_usable_token_key(site: Site, tmp_path: Path) -> None:
    """A token's MAC key K makes token-approved requests and seals answers. A reader of
    collector.sqlite (a backup, the anchorer, an export) must not find it: it is sealed under
    a key file beside the CA, outside the database."""
    token = ok(invoke(token_create_command, "--config", site.collector_config,
                      "--farm", FARM, "--field", FIELD)).splitlines()[0]  # fmt: skip
    token_id, mac_key = parse_token(token)
    assert mac_key not in _database_bytes(site)
    seal_key = site.cfg.data_dir / "enrollment" / "token-seal.key"
    assert stat.S_IMODE(seal_key.stat().st_mode) == 0o600
    # the collector still checks tokens with it
    _, cfg = make_gateway(tmp_path, "g1")
    raw, gw = make_request(cfg, installer="Ana", token=token)
    assert site.enroller().approve(raw).device.gateway == gw
    # a copy of the database under another seal key opens no token
    other = TokenStore(open_db(site.cfg.db_path), tmp_path / "other-seal.key")
    assert other.get(token_id) is None
    # rows from before the seal held K in the clear: sealed and erased on first use
    legacy_key = bytes(range(32))
    db = open_db(site.cfg.db_path)
    with db:
        db.execute(
            "INSERT INTO enrollment_tokens (id, mac_key, farm, field, created_at, expires_at)"
            " VALUES ('0badc0de', ?, ?, ?, ?, ?)",
            (legacy_key, FARM, FIELD, time.time(), time.time() + 3600),
        )
    db.close()
    assert legacy_key in _database_bytes(site)
    store = token_store(site.cfg)
    found = store.get("0badc0de")
    assert found is not None and found[1] == legacy_key
    store.db.close()
    assert legacy_key not in _database_bytes(site)


def test_without_token_the_request_waits_for_an_operator(site: Site, tmp_path: Path) -> None:
    _, cfg = make_gateway(tmp_path, "g1")
    raw, gw = make_request(cfg, installer="Ana")
    with pytest.raises(PendingApproval):
        site.enroller().approve(raw)
    assert site.registry().get(gw) is None
    assert gw in ok(invoke(pending_command, "--config", site.collector_config))
    ok(invoke(approve_command, "--config", site.collector_config, "--pending", gw, "--yes",
              "--out", tmp_path / "resp.json"))  # fmt: skip
    assert site.registry().get(gw) is not None
    install_response(cfg, (tmp_path / "resp.json").read_bytes(), fingerprint(site.ca.cert))


def test_operator_can_decline(site: Site, tmp_path: Path) -> None:
    _path, cfg = make_gateway(tmp_path, "g1")
    raw, gw = make_request(cfg, installer="Ana")
    (tmp_path / "r.cose").write_bytes(raw)
    result = invoke(approve_command, "--config", site.collector_config, tmp_path / "r.cose",
                    input="n\n")  # fmt: skip
    assert result.exit_code != 0 and "not approved" in result.output
    assert site.registry().get(gw) is None


# --------------------------------------------------------------------------------------------
# the response, on the gateway
# --------------------------------------------------------------------------------------------


def test_gateway_refuses_a_changed_or_foreign_response(site: Site, tmp_path: Path) -> None:
    token, _ = token_store(site.cfg).create(FARM, FIELD, 3600)
    _, cfg = make_gateway(tmp_path, "g1")
    raw, _gw = make_request(cfg, installer="Ana", token=token)
    response = site.enroller().approve(raw).response
    changed = json.loads(response)
    changed["broker"] = {"host": "evil.example", "port": 8883}
    with pytest.raises(EnrollmentError, match="seal"):
        install_response(cfg, json.dumps(changed).encode())
    _, other = make_gateway(tmp_path, "g2")
    with pytest.raises(EnrollmentError, match="this gateway is"):
        install_response(other, response)
    # a CA installed beforehand (by the install script) must match
    rogue = CertificateAuthority.create(tmp_path / "rogue")
    tls_paths(cfg).ca_file.parent.mkdir(parents=True, exist_ok=True)
    tls_paths(cfg).ca_file.write_bytes(rogue.cert_pem)
    with pytest.raises(EnrollmentError, match="another collector"):
        install_response(cfg, response)
    assert not tls_paths(cfg).cert_file.exists()


def test_certificate_renewal_keeps_one_registration(site: Site, tmp_path: Path) -> None:
    path, cfg = make_gateway(tmp_path, "g1")
    gw = enroll_by_file(site, path)
    first = x509.load_pem_x509_certificate(tls_paths(cfg).cert_file.read_bytes())
    raw, _ = make_request(cfg, installer="Ana")
    approval = site.enroller().approve(raw, operator="op")
    assert approval.renewed and approval.cert.serial_number != first.serial_number
    install_response(cfg, approval.response)
    assert [e["event"] for e in site.log_events()] == ["enroll"]
    assert len(site.registry().all()) == 1 and site.registry().get(gw) is not None


# --------------------------------------------------------------------------------------------
# revocation and rotation
# --------------------------------------------------------------------------------------------


def test_revoke_updates_registry_log_and_crl(site: Site, tmp_path: Path) -> None:
    path, cfg = make_gateway(tmp_path, "g1")
    gw = enroll_by_file(site, path)
    serial = x509.load_pem_x509_certificate(tls_paths(cfg).cert_file.read_bytes()).serial_number
    out = ok(invoke(revoke_command, "--config", site.collector_config, gw))
    assert "1 certificate(s)" in out
    device = site.registry().get(gw)
    assert device is not None and not device.active
    assert [e["event"] for e in site.log_events()] == ["enroll", "revoke"]
    for crl_path in (site.ca.crl_path, site.broker_certs / "crl.pem"):
        crl = load_crl(crl_path)
        assert crl.get_revoked_certificate_by_serial_number(serial) is not None
        ca_key = site.ca.cert.public_key()
        assert isinstance(ca_key, ec.EllipticCurvePublicKey)
        assert crl.is_signature_valid(ca_key)
    # the same key cannot come back
    raw, _ = make_request(cfg, installer="Ana")
    with pytest.raises(EnrollmentError, match="revoked"):
        site.enroller().approve(raw, operator="op")


def test_key_rotation_keeps_the_old_key_for_what_it_signed(site: Site, tmp_path: Path) -> None:
    path, cfg = make_gateway(tmp_path, "g1")
    gw = enroll_by_file(site, path)
    old_key = load_key_file(cfg.key_file)

    def message(key: Ed25519PrivateKey, seq: int) -> bytes:
        reading = wire.Reading("station", "soil_moisture", "/", 0.3, time.time())
        return wire.encode_message(wire.Payload(gw, seq, 1, (reading,)), key)

    out = ok(invoke(rotate_key_command, "--config", path))
    assert "from seq 1" in out  # the spool is empty: the new key signs everything
    new_key = load_key_file(cfg.key_file)
    assert wire.public_key_bytes(new_key) != wire.public_key_bytes(old_key)
    assert gateway_identity(cfg, new_key) == gw  # the id survives the rotation
    assert stat.S_IMODE(cfg.key_file.stat().st_mode) == 0o600
    ok(
        invoke(
            rotate_command,
            "--config",
            site.collector_config,
            cfg.data_dir / "enroll" / "rotate.cose",
        )
    )
    reg = site.registry()
    device = reg.get(gw)
    assert device is not None and device.public_key == wire.public_key_bytes(new_key)
    events = site.log_events()
    assert [e["event"] for e in events] == ["enroll", "rotate"]
    assert events[1]["pk"] == device.public_key and events[1]["from_seq"] == 1
    assert events[1]["prev_pk"] == wire.public_key_bytes(old_key)
    # the new key verifies from seq 1; the old key verifies nothing after the rotation
    assert wire.decode_message(message(new_key, 5), device.public_key).seq == 5
    assert verify_with_key_history(reg, message(old_key, 5), gw) is None
    # replaying the rotation is refused (the old key is no longer current)
    with pytest.raises(EnrollmentError):
        site.enroller().rotate((cfg.data_dir / "enroll" / "rotate.cose").read_bytes())


def test_rotation_mid_stream_old_key_still_verifies_earlier_seqs(
    site: Site, tmp_path: Path
) -> None:
    from gateway.spool import Spool

    path, cfg = make_gateway(tmp_path, "g1")
    gw = enroll_by_file(site, path)
    old_key = load_key_file(cfg.key_file)
    spool = Spool(cfg.spool_path)
    for _ in range(3):  # seqs 1..3 signed by the old key, still spooled
        spool.add(lambda seq: (b"x", 1))
    spool.close()
    ok(invoke(rotate_key_command, "--config", path))
    ok(
        invoke(
            rotate_command,
            "--config",
            site.collector_config,
            cfg.data_dir / "enroll" / "rotate.cose",
        )
    )
    reg = site.registry()
    assert [h[3] for h in reg.key_history(gw)] == [0, 4]
    reading = wire.Reading("station", "soil_moisture", "/", 0.3, time.time())
    before = wire.encode_message(wire.Payload(gw, 3, 1, (reading,)), old_key)
    after = wire.encode_message(wire.Payload(gw, 4, 1, (reading,)), old_key)
    payload = verify_with_key_history(reg, before, gw)
    assert payload is not None and payload.seq == 3
    assert verify_with_key_history(reg, after, gw) is None
    assert reg.key_for_seq(gw, 3) == wire.public_key_bytes(old_key)


# --------------------------------------------------------------------------------------------
# the CA refuses what it must
# --------------------------------------------------------------------------------------------


def test_ca_refuses_wrong_names_and_open_keys(site: Site) -> None:
    key = new_tls_key()
    with pytest.raises(CAError, match="expected CN"):
        site.ca.issue_client(make_csr(key, "gw-0000000000000001"), "gw-0000000000000002", "gateway")
    with pytest.raises(CAError, match="collector id"):
        site.ca.issue_client(
            make_csr(key, "gw-0000000000000001"), "gw-0000000000000001", "collector"
        )
    with pytest.raises(CAError, match="already holds a CA"):
        CertificateAuthority.create(site.ca.directory)
    os.chmod(site.ca.directory / "ca.key", 0o644)
    with pytest.raises(CAError, match="readable by others"):
        CertificateAuthority.open(site.ca.directory)


# --------------------------------------------------------------------------------------------
# the HTTP endpoint
# --------------------------------------------------------------------------------------------


def test_enroll_over_http_with_a_token(site: Site, tmp_path: Path) -> None:
    server = start_enrollment_server(site.enroller(), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        token = ok(invoke(token_create_command, "--config", site.collector_config,
                          "--farm", FARM, "--field", FIELD)).splitlines()[0]  # fmt: skip
        path, cfg = make_gateway(tmp_path, "g1")
        out = ok(invoke(enroll_command, "--config", path, "--installer", "Ana",
                        "--token", token, "--url", url))  # fmt: skip
        assert "approved" in out and "CA checked by: token" in out
        assert tls_paths(cfg).cert_file.exists()
        # without a token: pending, then fetched once the operator approved
        path2, cfg2 = make_gateway(tmp_path, "g2")
        out = ok(invoke(enroll_command, "--config", path2, "--installer", "Bo", "--url", url))
        assert "operator must approve" in out
        result = invoke(enroll_install_command, "--config", path2, "--url", url)
        assert result.exit_code != 0 and "not approved yet" in result.output
        gw2 = gateway_identity(cfg2, load_key_file(cfg2.key_file))
        ok(invoke(approve_command, "--config", site.collector_config, "--pending", gw2, "--yes",
                  "--out", tmp_path / "r2.json"))  # fmt: skip
        # nothing vouches for the CA fetched over plain http: refused without the fingerprint
        result = invoke(enroll_install_command, "--config", path2, "--url", url)
        assert result.exit_code != 0 and "nothing vouches for the CA" in result.output
        assert not tls_paths(cfg2).ca_file.exists()
        ok(invoke(enroll_install_command, "--config", path2, "--url", url,
                  "--ca-fingerprint", fingerprint(site.ca.cert)))  # fmt: skip
        assert tls_paths(cfg2).cert_file.exists()
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------------------------
# end to end over the real broker
# --------------------------------------------------------------------------------------------


def _tls_probe(cfg: GatewayConfig, port: int) -> bool:
    """Can this gateway's certificate log in (TLS + MQTT CONNACK success)?"""
    from gateway.doctor import check_broker

    return check_broker(cfg, gateway_identity(cfg, load_key_file(cfg.key_file)), 20).status == "ok"


def _wait(pred: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _retained_presence(cfg: GatewayConfig, port: int, collector: str) -> bool:
    """Read the collector's retained presence as the gateway would (over TLS)."""
    from fieldproof.mqtt import make_client

    seen: list[bytes] = []
    client = make_client(cfg.mqtt, "presence-probe")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(
        f"fieldproof/v1/_collector/{collector}/status", 1
    )
    client.on_message = lambda c, u, m: seen.append(bytes(m.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(b'"online": true' in p for p in seen):
                return True
            time.sleep(0.1)
        return False
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[tuple[Site, SecureMosquitto, InfluxDB]]:
    influx = InfluxDB(tmp_path / "influxdb")
    influx.start()
    site, broker = start_site_broker(tmp_path, influx.url)
    try:
        yield site, broker, influx
    finally:
        broker.stop()
        influx.stop()


@pytest.mark.integration
def test_enroll_publish_over_tls_then_revoke(
    services: tuple[Site, SecureMosquitto, InfluxDB], tmp_path: Path
) -> None:
    """gateway enroll → operator approves → certificate → gateway publishes over TLS with the
    shipped ACL → collector accepts and confirms; then revoked → the broker refuses it."""
    site, broker, _influx = services
    ok(invoke(ca_collector_cert_command, "--config", site.collector_config))
    path, cfg = make_gateway(tmp_path, "field-gw", mqtt_port=broker.port)
    gw = enroll_by_file(site, path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = tmp_path / "logs"
    logs.mkdir()

    def spawn(args: list[str], name: str) -> subprocess.Popen[bytes]:
        with (logs / name).open("ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "fieldproof", *args], stdout=out,
                stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT,
            )  # fmt: skip

    collector = spawn(["collector", "run", "--config", str(site.collector_config)], "c.log")
    gateway = None
    try:
        assert _retained_presence(cfg, broker.port, "collector-1"), (logs / "c.log").read_text()
        gateway = spawn(["gateway", "run", "--config", str(path)], "g.log")
        store = CollectorStore(open_db(site.cfg.db_path))
        _wait(lambda: store.accepted_count()[1] >= 20, "20 readings accepted over TLS")
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(60) == 0, (logs / "g.log").read_text()
        gateway = None
        published, spooled, _ = spool_counts(cfg.spool_path)
        _wait(lambda: store.accepted_count()[1] >= published, "all published readings")
        assert store.accepted_count()[1] == published
        assert spooled == 0  # every message confirmed by the collector's receipts
        assert store.quarantine_by_reason() == {}
        store.db.close()
        # revoke: registry, CRL; the restarted broker no longer lets the gateway in
        assert _tls_probe(cfg, broker.port)
        ok(invoke(revoke_command, "--config", site.collector_config, gw))
        broker.stop()
        broker.start()
        assert not _tls_probe(cfg, broker.port)
    finally:
        for proc in (gateway, collector):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_no_secret_in_cli_output_or_files_made_public(site: Site, tmp_path: Path) -> None:
    path, cfg = make_gateway(tmp_path, "g1")
    enroll_by_file(site, path)
    secret_files = [cfg.key_file, tls_paths(cfg).key_file, site.cfg.data_dir / "ca" / "ca.key"]
    for f in secret_files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    key_pem = tls_paths(cfg).key_file.read_text().splitlines()[1]
    for f in (cfg.data_dir / "enroll").iterdir():
        assert key_pem.encode() not in f.read_bytes()
    for f in tmp_path.rglob("*.response.json"):
        assert b"PRIVATE KEY" not in f.read_bytes()


def test_enroll_over_https_with_the_preinstalled_ca(site: Site, tmp_path: Path) -> None:
    """The install script puts the collector's CA on the Pi; the endpoint's HTTPS certificate
    comes from that CA, so the gateway verifies the endpoint before sending anything."""
    tls = tmp_path / "enroll-tls"
    provision_broker_certs(site.ca, tls, ["127.0.0.1"])
    server = start_enrollment_server(
        site.enroller(), "127.0.0.1", 0, tls / "server.pem", tls / "server.key"
    )
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        token = ok(invoke(token_create_command, "--config", site.collector_config,
                          "--farm", FARM, "--field", FIELD)).splitlines()[0]  # fmt: skip
        path, cfg = make_gateway(tmp_path, "g1")
        # without the CA installed the endpoint is not trusted: nothing is sent
        result = invoke(enroll_command, "--config", path, "--installer", "Ana", "--token", token,
                        "--url", url)  # fmt: skip
        assert result.exit_code != 0 and "cannot reach" in result.output
        tls_paths(cfg).ca_file.parent.mkdir(parents=True, exist_ok=True)
        tls_paths(cfg).ca_file.write_bytes(site.ca.cert_pem)
        out = ok(invoke(enroll_command, "--config", path, "--installer", "Ana", "--token", token,
                        "--url", url))  # fmt: skip
        assert "CA checked by: token" in out
    finally:
        server.shutdown()
        server.server_close()
