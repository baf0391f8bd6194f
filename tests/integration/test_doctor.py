"""``fieldproof gateway doctor`` against a working gateway and against each way a field
install goes wrong: key permissions, no key, a Pi clock at 1970, no broker, an expired or
revoked certificate, the wrong CA, a dead sensor, a spool that dropped messages, a full disk,
messages the collector never confirms, a service that stopped or hangs. The broker is the real
Mosquitto with the shipped TLS/ACL configuration, plus one rule: a gateway may read its own
status topic (the doctor reads the running service's retained status with the gateway's
certificate; see ``broker_templates``). The service's status comes from a real agent, or is
published as that gateway (with its certificate) where a test needs figures an agent reaches
only after many minutes or on a full disk."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from collector.broker import TEMPLATE_DIR, SecureMosquitto
from collector.ca import CertificateAuthority
from collector.enrollment import Enroller
from fieldproof.keys import load_key_file
from fieldproof.mqtt import make_client, status_topic
from gateway.agent import GatewayAgent
from gateway.config import GatewayConfig, load_gateway_config
from gateway.doctor import WIDTH, Probe, Report, doctor_command, render, run_doctor
from gateway.enroll import gateway_identity, install_response, make_request, tls_paths
from gateway.spool import Spool
from tests.support.enrollment import Site, enroll_by_file, make_gateway, start_site_broker
from tests.support.stack import wait_until

pytestmark = pytest.mark.integration

SYNCED = Probe(clock_synced=lambda: True, timeout_s=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, SecureMosquitto]]:
    root = tmp_path_factory.mktemp("doctor")
    site, broker = start_site_broker(root, template_dir=broker_templates(root / "templates"))
    try:
        yield site, broker
    finally:
        broker.stop()


OWN_STATUS_WRITE = "pattern write fieldproof/v1/%u/status\n"
OWN_STATUS_READWRITE = "pattern readwrite fieldproof/v1/%u/status\n"


def broker_templates(where: Path) -> Path:
    """The shipped broker templates, with a gateway allowed to read its own status topic
    (what the doctor needs; a no-op once deploy/mosquitto/acl.conf says so itself)."""
    shutil.copytree(TEMPLATE_DIR, where)
    acl = (where / "acl.conf").read_text()
    if OWN_STATUS_READWRITE not in acl:
        assert OWN_STATUS_WRITE in acl, "the shipped ACL changed: update this test"
        (where / "acl.conf").write_text(acl.replace(OWN_STATUS_WRITE, OWN_STATUS_READWRITE))
    return where


def gateway_of(cfg: GatewayConfig) -> str:
    return gateway_identity(cfg, load_key_file(cfg.key_file))


def publish_status(cfg: GatewayConfig, status: dict[str, Any]) -> None:
    """Publish ``status`` retained on the gateway's status topic, logged in as the gateway
    (its certificate), as its service does."""
    gw = gateway_of(cfg)
    client = make_client(cfg.mqtt, f"{gw}-test")
    client.connect(cfg.mqtt.host, cfg.mqtt.port)
    client.loop_start()
    try:
        info = client.publish(
            status_topic(cfg.mqtt.topic_prefix, gw), json.dumps(status), qos=1, retain=True
        )
        info.wait_for_publish(30)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def running_status(cfg: GatewayConfig, **fields: Any) -> dict[str, Any]:
    """A status as a running, healthy agent publishes it (gateway.agent ``_status``)."""
    status: dict[str, Any] = {
        "gateway": gateway_of(cfg),
        "online": True,
        "version": "test",
        "boot": 1,
        "uptime_s": 120.0,
        "last_publish": time.time() - 5,
        "clock": time.time(),
        "clock_state": {"plausible": True, "synced": True},
        "spool_errors": 0,
        "spool_writable": True,
        "held_in_memory": 0,
        "unspooled_dropped_readings": 0,
        "sensors": {"station": {"errors": 0, "last_error": ""}},
        "spool_depth": 0,
        "unconfirmed": 0,
        "spool_oldest_age_s": 0.0,
        "dropped_messages": 0,
        "next_seq": 4,
    }
    status.update(fields)
    return status


def check(report: Report, name: str) -> Any:
    return next(c for c in report.checks if c.name == name)


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
    publish_status(cfg, running_status(cfg))
    report = run_doctor(cfg, SYNCED)
    statuses = by_name(report)
    assert set(statuses.values()) == {"ok"}, render(report)
    assert set(statuses) >= {"key", "tls key", "enrolled", "clock", "certificate", "broker",
                             "service", "sensor station", "spool", "delivery", "spool write",
                             "disk"}  # fmt: skip
    assert report.ok
    assert report.delivery_source == "service status"
    assert "last publish" in check(report, "delivery").summary
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
    # without the broker the service's status is out of reach: the spool file is the source
    assert by_name(report)["service"] == "skip"
    assert report.delivery_source == "spool file"
    assert check(report, "delivery").details["source"] == "spool file"


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


# -------------------------------------------------------------------------------------------
# the running service's status: which messages are published lives only in its memory


OLD_SPOOL_KEYS = {"depth", "unsent", "unconfirmed", "oldest_unsent", "oldest_unconfirmed_publish",
                  "last_published", "newest_message", "confirmed_messages", "next_seq"}  # fmt: skip


def test_a_real_agent_status_is_read_and_named_as_the_source(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    """A real agent, no collector: it publishes and the broker PUBACKs, but no receipt ever
    comes. Only the agent's status can say so; once it stops, its offline status says that."""
    _, cfg = enrolled(world, tmp_path)
    agent = GatewayAgent(cfg)
    runner = threading.Thread(target=agent.run, kwargs={"drain_timeout": 0.5}, daemon=True)
    runner.start()
    probe = Probe(clock_synced=lambda: True, sensors=False, timeout_s=20)
    try:
        wait_until(lambda: agent.spool.unconfirmed > 0, 60, "the broker PUBACKs a reading")
        agent.publish_status()

        def seen() -> bool:
            details = check(run_doctor(cfg, probe), "service").details
            return bool(details.get("status", {}).get("unconfirmed"))

        wait_until(seen, 60, "the doctor reads a status with published messages")
        report = run_doctor(cfg, probe)
        assert report.delivery_source == "service status", render(report)
        assert check(report, "service").status == "ok"
        delivery = check(report, "delivery")
        assert delivery.status == "warn", render(report)
        assert "published, no collector confirmation yet" in delivery.summary
        assert delivery.details["source"] == "service status"
        assert delivery.details["unconfirmed"] > 0
        assert delivery.details["last_published"] is not None
        assert delivery.details["last_published"] <= agent.last_publish
        assert set(delivery.details) >= OLD_SPOOL_KEYS
        assert check(report, "spool write").status == "ok"
        assert report.ok
    finally:
        agent.stop()
        runner.join(30)
    assert not runner.is_alive()
    report = run_doctor(cfg, probe)  # the agent said "offline" as it stopped
    service = check(report, "service")
    assert service.status == "warn" and "OFFLINE" in service.summary
    assert "systemctl status fieldproof-gateway" in service.fix
    assert report.delivery_source == "spool file"
    assert "(spool file only)" in check(report, "delivery").summary
    assert_fits_a_phone(report)


def test_published_but_never_confirmed_for_long(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    spool = Spool(cfg.spool_path)
    for _ in range(4):
        spool.add(lambda seq: (b"m", 1))
    spool.close()
    publish_status(cfg, running_status(cfg, spool_depth=4, unconfirmed=4,
                                       spool_oldest_age_s=1800.0))  # fmt: skip
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, sensors=False, timeout_s=20))
    delivery = check(report, "delivery")
    assert delivery.status == "warn", render(report)
    assert "published but not confirmed by a collector" in delivery.summary
    assert "oldest waits 30 min" in delivery.summary
    assert "collector runs" in delivery.fix
    assert check(report, "spool").status == "ok"  # it is published: delivery says what is wrong


def test_full_disk_on_a_running_gateway_fails_and_says_what_to_do(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    publish_status(cfg, running_status(cfg, spool_writable=False, held_in_memory=12,
                                       spool_errors=40,
                                       spool_error="database or disk is full"))  # fmt: skip
    path = tmp_path / "gw" / "gateway.toml"
    result = CliRunner().invoke(doctor_command, ["--config", str(path), "--no-sensors"])
    assert result.exit_code == 1, result.output
    flat = " ".join(result.output.split())
    assert "FAIL spool write" in flat and "(database or disk is full)" in flat
    assert "12 message(s) wait in memory" in flat
    assert "LOST if the power goes" in flat and "df -h" in flat
    assert "never the spool" in flat
    data = json.loads(
        CliRunner().invoke(doctor_command, ["--config", str(path), "--no-sensors", "--json"]).output
    )
    assert data["ok"] is False and data["delivery_source"] == "service status"
    write = next(c for c in data["checks"] if c["name"] == "spool write")
    assert write["status"] == "fail" and write["details"]["held_in_memory"] == 12


def test_spool_catching_up_warns(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    publish_status(cfg, running_status(cfg, held_in_memory=3, spool_errors=7))
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, sensors=False, timeout_s=20))
    write = check(report, "spool write")
    assert write.status == "warn" and "3 message(s) still wait in memory" in write.summary
    assert report.ok


def test_readings_lost_to_a_full_disk_show_from_the_spool_file(
    world: tuple[Site, SecureMosquitto], tmp_path: Path
) -> None:
    """Without the broker the spool's own counter still tells of readings lost earlier."""
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    spool = Spool(cfg.spool_path)
    spool.note_unspooled_dropped(7)
    spool.add(lambda seq: (b"m", 1))
    spool.close()
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, broker=False, sensors=False))
    write = check(report, "spool write")
    assert write.status == "warn" and "7 reading(s) were LOST" in write.summary
    assert write.details["source"] == "spool file"
    assert by_name(report)["service"] == "skip"
    assert "--no-broker" in check(report, "service").summary


def test_a_hung_service_is_not_trusted(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    """An "online" status from an hour ago: the figures in it are stale, the spool file is
    used instead, and the technician is told the service may hang."""
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    hour_ago = time.time() - 3600
    publish_status(cfg, running_status(cfg, clock=hour_ago, spool_writable=False))
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, sensors=False, timeout_s=20))
    service = check(report, "service")
    assert service.status == "warn" and "may hang" in service.summary
    assert "systemctl restart" in service.fix
    assert report.delivery_source == "spool file"
    assert by_name(report)["spool write"] == "skip"  # an hour-old "not writable" is not news


def test_no_status_on_the_broker(world: tuple[Site, SecureMosquitto], tmp_path: Path) -> None:
    _, cfg = enrolled(world, tmp_path)
    confirmed_spool(cfg)
    report = run_doctor(cfg, Probe(clock_synced=lambda: True, sensors=False, timeout_s=20))
    service = check(report, "service")
    assert service.status == "warn" and "no status" in service.summary
    assert "systemctl start fieldproof-gateway" in service.fix
    assert report.delivery_source == "spool file"
    assert by_name(report)["delivery"] == "ok"  # confirmed messages are counted in the spool
