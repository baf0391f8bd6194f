"""What the technician and operator type: `gateway init`, `collector devices add/list/revoke`,
and what the registry's changes do to ingest (a revoked gateway's messages are quarantined)."""

from __future__ import annotations

import re
import shlex
import stat
import time
from pathlib import Path

from click.testing import CliRunner

from anchor.evidence import EvidenceLog
from collector.influx import V1Writer
from collector.ingest import Incoming, Ingestor
from collector.registry import Registry
from collector.store import CollectorStore
from fieldproof import wire
from fieldproof.cli import cli
from fieldproof.config import InfluxConfig, load_collector_config
from fieldproof.datadir import open_db
from fieldproof.formats.registry_event import parse_registry_event
from fieldproof.keys import load_key_file
from fieldproof.services import InfluxDB


def _init(runner: CliRunner, key: Path) -> tuple[str, str]:
    result = runner.invoke(cli, ["gateway", "init", "--key", str(key)])
    assert result.exit_code == 0, result.output
    gw = re.search(r"gateway id:\s+(gw-[0-9a-f]{16})", result.output)
    pub = re.search(r"public key:\s+([0-9a-f]{64})", result.output)
    assert gw and pub
    return gw.group(1), pub.group(1)


def test_init_add_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    key = tmp_path / "gw" / "gateway.key"
    gw, pub = _init(runner, key)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert pub not in key.read_text()  # the file holds the private key, PEM; never printed
    # never overwrite a device's identity
    again = runner.invoke(cli, ["gateway", "init", "--key", str(key)])
    assert again.exit_code != 0 and "refusing to overwrite" in again.output

    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "c"}"\n')
    base = ["collector", "devices"]
    _, other_pub = _init(runner, tmp_path / "other.key")
    wrong = runner.invoke(
        cli,
        [
            *base,
            "add",
            "--config",
            str(cfg),
            "--id",
            gw,
            "--public-key",
            other_pub,
            "--farm",
            "f",
            "--field",
            "x",
        ],
    )
    assert wrong.exit_code != 0 and "does not belong to this public key" in wrong.output
    ok = runner.invoke(
        cli,
        [
            *base,
            "add",
            "--config",
            str(cfg),
            "--id",
            gw,
            "--public-key",
            pub,
            "--farm",
            "north",
            "--field",
            "a",
            "--sensor-tag",
            "soil1:depth_cm=20",
        ],
    )
    assert ok.exit_code == 0, ok.output
    listed = runner.invoke(cli, [*base, "list", "--config", str(cfg)])
    assert gw in listed.output and "active" in listed.output
    revoked = runner.invoke(cli, [*base, "revoke", "--config", str(cfg), gw])
    assert revoked.exit_code == 0, revoked.output
    twice = runner.invoke(cli, [*base, "revoke", "--config", str(cfg), gw])
    assert twice.exit_code != 0 and "not an active" in twice.output

    # both changes are evidence: log entries in order
    c = load_collector_config(cfg)
    db = open_db(c.db_path)
    ev = EvidenceLog.open(db, c.log_origin, None)
    events = [parse_registry_event(ev.log.entry(i)) for i in range(ev.log.size())]
    assert [(e["event"], e["gw"]) for e in events if e] == [("enroll", gw), ("revoke", gw)]
    assert events[0] is not None and events[0]["pk"] == bytes.fromhex(pub)
    db.close()


def test_revoked_gateway_is_quarantined(tmp_path: Path) -> None:
    runner = CliRunner()
    gw, pub = _init(runner, tmp_path / "gateway.key")
    key = load_key_file(tmp_path / "gateway.key")
    influx = InfluxDB(tmp_path / "influx")  # __enter__ is typed ManagedProcess
    with influx:
        db = open_db(tmp_path / "c.sqlite")
        registry = Registry(db)
        registry.add(gw, bytes.fromhex(pub), "f", "x")
        store = CollectorStore(db)
        ingestor = Ingestor(store, registry, V1Writer(InfluxConfig(url=influx.url)))

        def message(seq: int) -> Incoming:
            payload = wire.Payload(
                gw, seq, 1, (wire.Reading("s", "soil_moisture", "/", 0.3, time.time()),)
            )
            return Incoming(f"fieldproof/v1/{gw}/readings", wire.encode_message(payload, key))

        assert ingestor.process([message(1)]).accepted == 1
        registry.revoke(gw)
        ingestor.devices.reload()
        result = ingestor.process([message(2)])
        assert result.accepted == 0 and result.quarantined == {"revoked": 1}
        assert store.quarantine_by_reason() == {"revoked": 1}
        db.close()


def test_identical_resend_is_replay_and_reused_seq_is_conflict(tmp_path: Path) -> None:
    """An identical resend carries no new claim ('replay', acknowledged so the gateway stops
    resending); a second, different message under a sequence number already held is a signed
    contradiction ('seq_conflict'), kept for investigation. Neither reaches InfluxDB twice."""
    runner = CliRunner()
    gw, pub = _init(runner, tmp_path / "gateway.key")
    key = load_key_file(tmp_path / "gateway.key")
    influx = InfluxDB(tmp_path / "influx")  # __enter__ is typed ManagedProcess
    with influx:
        db = open_db(tmp_path / "c.sqlite")
        registry = Registry(db)
        registry.add(gw, bytes.fromhex(pub), "f", "x")
        store = CollectorStore(db)
        ingestor = Ingestor(store, registry, V1Writer(InfluxConfig(url=influx.url)))

        def message(seq: int, value: float) -> Incoming:
            payload = wire.Payload(
                gw, seq, 1, (wire.Reading("s", "soil_moisture", "/", value, 1.7e9 + seq),)
            )
            return Incoming(f"fieldproof/v1/{gw}/readings", wire.encode_message(payload, key))

        first = message(5, 0.30)
        result = ingestor.process([first, message(6, 0.31)])
        assert result.accepted == 2 and result.confirmed == {gw: [5, 6]}
        result = ingestor.process([first, message(6, 0.99)])
        assert result.accepted == 0
        assert result.quarantined == {"replay": 1, "seq_conflict": 1}
        assert result.confirmed == {gw: [5, 6]}  # both receipted: the gateway must stop sending
        values = influx.query('SELECT "value" FROM "soil_moisture"')[0]["values"]
        assert isinstance(values, list)
        assert [v[1] for v in values] == [0.30, 0.31]
        db.close()


def test_init_hint_is_a_complete_command_and_placeholders_are_refused(tmp_path: Path) -> None:
    """Issue 16: the hint `gateway init` prints runs as printed (only the collector's config
    path is the operator's), carries the gateway's own farm and field, and a hint's
    placeholder is refused instead of being registered as a farm called FARM."""
    runner = CliRunner()
    gw_cfg = tmp_path / "gateway.toml"
    gw_cfg.write_text(
        f'key_file = "{tmp_path}/gw/gateway.key"\ndata_dir = "{tmp_path}/gw"\n'
        'farm = "north farm"\nfield = "block 7"\n'
    )
    init = runner.invoke(cli, ["gateway", "init", "--config", str(gw_cfg)])
    assert init.exit_code == 0, init.output
    (hint,) = [line for line in init.output.splitlines() if "devices add" in line]
    args = shlex.split(hint)
    assert args[:4] == ["fieldproof", "collector", "devices", "add"]
    assert args[args.index("--config") + 1] == "/etc/fieldproof/collector.toml"
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "c"}"\n')
    args[args.index("--config") + 1] = str(cfg)
    added = runner.invoke(cli, args[1:])
    assert added.exit_code == 0, added.output
    assert "for farm north farm, field block 7 in" in added.output
    assert str(tmp_path / "c" / "collector.sqlite") in added.output

    # a gateway with no farm in its config: the hint has placeholders, and they are refused
    bare = tmp_path / "bare.toml"
    bare.write_text(f'key_file = "{tmp_path}/bare/gateway.key"\ndata_dir = "{tmp_path}/bare"\n')
    init = runner.invoke(cli, ["gateway", "init", "--config", str(bare)])
    (hint,) = [line for line in init.output.splitlines() if "devices add" in line]
    args = shlex.split(hint)
    args[args.index("--config") + 1] = str(cfg)
    refused = runner.invoke(cli, args[1:])
    assert refused.exit_code != 0 and "placeholder" in refused.output, refused.output
    for value in ("FARM", "<farm>", "farm…", "TODO"):
        args[args.index("--farm") + 1] = value
        assert runner.invoke(cli, args[1:]).exit_code != 0, value
    registry = Registry(open_db(tmp_path / "c" / "collector.sqlite"))
    assert [d.farm for d in registry.all()] == ["north farm"]


def test_without_config_the_command_says_it_used_the_built_in_defaults(tmp_path: Path) -> None:
    runner = CliRunner(env={"FIELDPROOF_COLLECTOR__DATA_DIR": str(tmp_path / "d")})
    gw, pub = _init(runner, tmp_path / "k.key")
    added = runner.invoke(
        cli,
        ["collector", "devices", "add", "--id", gw, "--public-key", pub, "--farm", "f1",
         "--field", "x1"],
    )  # fmt: skip
    assert added.exit_code == 0, added.output
    assert "(no --config given: built-in defaults)" in added.output
    assert str(tmp_path / "d" / "collector.sqlite") in added.output


def test_status_names_the_database_and_whether_a_collector_runs_on_it(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = tmp_path / "collector.toml"
    cfg.write_text(f'data_dir = "{tmp_path / "c"}"\n')
    missing = runner.invoke(cli, ["collector", "status", "--config", str(cfg)])
    assert missing.exit_code != 0 and "no collector database at" in missing.output
    open_db(tmp_path / "c" / "collector.sqlite").close()
    idle = runner.invoke(cli, ["collector", "status", "--config", str(cfg)])
    assert idle.exit_code == 0, idle.output
    assert f"database: {tmp_path / 'c' / 'collector.sqlite'}" in idle.output
    assert "collector: NOT running" in idle.output
    held = open_db(tmp_path / "c" / "collector.sqlite", lock=True)  # as a running collector
    try:
        busy = runner.invoke(cli, ["collector", "status", "--config", str(cfg)])
    finally:
        held.close()
    assert "collector: running (pid " in busy.output, busy.output
