"""``fieldproof gateway doctor`` against a working gateway and against each way a field
install goes wrong: key permissions, no key, a Pi clock at 1970, no broker, an expired or
revoked certificate, the wrong CA, a dead sensor, a spool that dropped messages. The broker is
the real Mosquitto with the shipped TLS/ACL configuration."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from collector.broker import SecureMosquitto
from collector.ca import CertificateAuthority
from collector.enrollment import Enroller
from fieldproof.config import GatewayConfig, load_gateway_config
from fieldproof.keys import load_key_file
from gateway.doctor import WIDTH, Probe, Report, doctor_command, render, run_doctor
from gateway.enroll import gateway_identity, install_response, make_request, tls_paths
from gateway.spool import Spool
from tests.test_enrollment import Site, enroll_by_file, make_gateway, make_site

pytestmark = pytest.mark.integration

SYNCED = Probe(clock_synced=lambda: True, timeout_s=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, SecureMosquitto]]:
    from fieldproof.services import free_port

    root = tmp_path_factory.mktemp("doctor")
    port = free_port()
    site = make_site(root / "site", mqtt_port=port)
    broker = SecureMosquitto(root / "mosquitto", site.broker_certs.parent, ["collector-1"], port)
    broker.start()
    try:
        yield site, broker
    finally:
        broker.stop()


def enrolled(
    world: tuple[Site, SecureMosquitto], tmp_path: Path, **kw: float
) -> tuple[Path, GatewayConfig]:
    site, broker = world
    path, _ = make_gateway(tmp_path, "gw", mqtt_port=broker.port, **kw)  # type: ignore[arg-type]
    enroll_by_file(site, path)
    return path, load_gateway_config(path)


def confirmed_spool(cfg: GatewayConfig, dropped: bool = False) -> None:
    """A spool as a gateway that has been delivering leaves it."""
    spool = Spool(cfg.spool_path, max_messages=100)
    n = 105 if dropped else 3
    for _ in range(n):
        spool.add(lambda seq: (b"m", 1))
    seqs = [m.seq for m in spool.pending(0, 1000)]
    spool.mark_published(seqs)
    spool.confirm(seqs[:-1] if dropped else seqs)
    spool.close()


def by_name(report: Report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def assert_fits_a_phone(report: Report) -> None:
    for line in render(report).splitlines():
        # only an unbreakable word (a long temporary path) may stick out
        assert len(line) <= WIDTH or " " not in line.strip(), line


# --------------------------------------------------------------------------------------------


def test_working_gateway_is_all_good(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    report = run_doctor(cfg, SYNCED)
    statuses = by_name(report)
    assert set(statuses.values()) == {"ok"}, render(report)
    assert set(statuses) >= {"key", "tls key", "enrolled", "clock", "certificate", "broker",
                             "sensor station", "spool", "delivery", "disk"}  # fmt: skip
    assert report.ok
    assert "ALL GOOD" in render(report)
    assert_fits_a_phone(report)


def test_cli_json_and_exit_codes(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    path, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    result = CliRunner().invoke(doctor_command, ["--config", str(path), "--json"])
    data = json.loads(result.output)
    assert result.exit_code == 0 and data["ok"] is True, result.output
    assert {c["name"] for c in data["checks"]} >= {"broker", "clock", "key"}
    os.chmod(cfg.key_file, 0o644)
    result = CliRunner().invoke(doctor_command, ["--config", str(path)])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())
    assert "FAIL key" in flat and f"chmod 600 {cfg.key_file}" in flat


def test_key_readable_by_others(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path)
    os.chmod(cfg.key_file, 0o640)
    os.chmod(tls_paths(cfg).key_file, 0o644)
    report = run_doctor(cfg, SYNCED)
    statuses = by_name(report)
    assert statuses["key"] == "fail" and statuses["tls key"] == "fail"
    assert not report.ok


def test_no_key(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path)
    cfg.key_file.unlink()
    report = run_doctor(cfg, SYNCED)
    statuses = by_name(report)
    assert statuses["key"] == "fail" and statuses["enrolled"] == "skip"
    assert "gateway init" in next(c.fix for c in report.checks if c.name == "key")
    assert not report.ok


def test_not_enrolled(tmp_path: Path) -> None:
    _path, cfg = make_gateway(tmp_path, "gw")
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, sensors=False))
    assert by_name(report)["enrolled"] == "fail"
    assert by_name(report)["broker"] == "skip"
    assert not report.ok


def test_clock_at_1970_is_caught(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    """A Pi without RTC that booted offline: the clock is before the build and the cert."""
    _, cfg = enrolled(world, tmp_path)
    report = run_doctor(cfg, Probe(clock=lambda: 300.0, clock_synced=lambda: False, broker=False))
    clock = next(c for c in report.checks if c.name == "clock")
    assert clock.status == "fail" and "1970-01-01" in clock.summary
    assert by_name(report)["certificate"] == "fail"
    assert not report.ok
    assert_fits_a_phone(report)


def test_clock_behind_spooled_readings_is_caught(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    """fake-hwclock restored an old time: still after the build date, before what was spooled."""
    import time

    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    spool = Spool(cfg.spool_path)
    spool.add(lambda seq: (b"m", 1))
    spool.close()
    report = run_doctor(
        cfg, Probe(clock=lambda: time.time() - 3 * 86400, clock_synced=lambda: False, broker=False)
    )
    clock = next(c for c in report.checks if c.name == "clock")
    assert clock.status == "fail" and "spooled" in clock.summary


def test_clock_not_synchronised_is_a_warning(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    _, cfg = enrolled(world, tmp_path)
    report = run_doctor(cfg, Probe(clock_synced=lambda: False, broker=False, sensors=False))
    assert by_name(report)["clock"] == "warn"


def test_broker_unreachable(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path)
    with socket.socket() as s:  # a port we hold closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        cfg.mqtt.port = s.getsockname()[1]
        report = run_doctor(cfg, SYNCED)
    broker = next(c for c in report.checks if c.name == "broker")
    assert broker.status == "fail" and "refuses connections" in broker.summary
    assert not report.ok


def test_expired_certificate(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    import time

    site, _ = world
    _, cfg = enrolled(world, tmp_path)
    past = time.time() - 10 * 86400
    old_ca = CertificateAuthority.open(site.ca.directory, clock=lambda: past)
    enroller = Enroller.from_config(site.cfg, site.registry(), clock=lambda: past)
    enroller.ca, enroller.cert_days = old_ca, 2
    raw, _ = make_request(cfg, installer="Ana", now=past)
    install_response(cfg, enroller.approve(raw, operator="op").response)
    report = run_doctor(cfg, SYNCED)
    cert = next(c for c in report.checks if c.name == "certificate")
    assert cert.status == "fail" and "expired" in cert.summary
    assert by_name(report)["broker"] == "fail"  # the broker refuses it too
    assert not report.ok


def test_certificate_near_expiry_warns(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    site, _ = world
    _, cfg = enrolled(world, tmp_path)
    enroller = site.enroller()
    enroller.cert_days = 10
    raw, _ = make_request(cfg, installer="Ana")
    install_response(cfg, enroller.approve(raw, operator="op").response)
    report = run_doctor(cfg, SYNCED)
    assert by_name(report)["certificate"] == "warn"
    assert by_name(report)["broker"] == "ok"


def test_revoked_certificate(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    site, broker = world
    _, cfg = enrolled(world, tmp_path)
    assert by_name(run_doctor(cfg, SYNCED))["broker"] == "ok"
    gw = gateway_identity(cfg, load_key_file(cfg.key_file))
    site.enroller().revoke(gw)
    broker.stop()
    broker.start()
    report = run_doctor(cfg, SYNCED)
    check = next(c for c in report.checks if c.name == "broker")
    assert check.status == "fail" and "REVOKED" in check.summary
    assert by_name(report)["certificate"] == "ok"  # locally it looks fine: only the broker knows


def test_wrong_ca_installed(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path)
    rogue = CertificateAuthority.create(tmp_path / "rogue")
    tls_paths(cfg).ca_file.write_bytes(rogue.cert_pem)
    report = run_doctor(cfg, SYNCED)
    assert by_name(report)["enrolled"] == "fail"
    broker = next(c for c in report.checks if c.name == "broker")
    assert broker.status == "fail" and "not trusted" in broker.summary


def test_dead_sensor(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path, fault_rate=1.0)
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, broker=False))
    sensor = next(c for c in report.checks if c.name == "sensor station")
    assert sensor.status == "fail" and "no value" in sensor.summary
    assert not report.ok


def test_spool_that_dropped_messages_warns(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg, dropped=True)
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, broker=False, sensors=False))
    spool = next(c for c in report.checks if c.name == "spool")
    assert spool.status == "warn" and "DROPPED" in spool.summary
    assert_fits_a_phone(report)


def test_registration_is_asked_of_the_collector(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    from collector.enrollment import start_enrollment_server

    site, _ = world
    _, cfg = enrolled(world, tmp_path)
    server = start_enrollment_server(site.enroller(), "127.0.0.1", 0)
    try:
        cfg.enrollment_url = f"http://127.0.0.1:{server.server_address[1]}"
        probe = Probe(clock_synced=lambda: True, sensors=False)
        assert by_name(run_doctor(cfg, probe))["registration"] == "ok"
        site.enroller().revoke(gateway_identity(cfg, load_key_file(cfg.key_file)))
        check = next(c for c in run_doctor(cfg, probe).checks if c.name == "registration")
        assert check.status == "warn" and "revoked" in check.summary
    finally:
        server.shutdown()
        server.server_close()
