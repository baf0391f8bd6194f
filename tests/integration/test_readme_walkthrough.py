"""The README's "Using it" section as a tested walkthrough: every marked command block of
README.md runs verbatim, through bash, in README order, against a real stack started for it —
Mosquitto with the shipped TLS/ACL config and its CA, InfluxDB, a ``thor solo`` node, the
collector's config with enrollment and anchoring, and a Pi's gateway config with a simulated
sensor as ``deploy/pi/install-gateway.sh`` writes it. The test sets only the shell variables
the README's settings blocks name (:meth:`Site.settings_for`), hands the operator's printed token
to the technician, and moves the dev chain forward where a real chain moves by itself.

What each user must reach (issue 16, "Done when"): the technician a gateway enrolled over TLS,
delivering, doctor not ``NOT READY``; the operator a running collector and anchors final on
the chain; the agronomist the provisioning files in Grafana's folders whose datasource and
dashboard queries answer from the InfluxDB the collector filled; the inspector a verified
bundle and report, and a next audit that proves the log grew from the last one.

The blocks the walkthrough cannot run here (root, systemd, containers, several collectors,
a published log) are checked against the CLI instead: every ``fieldproof`` command in the
README, docs/deploy.md and docs/enrollment.md must name subcommands and options that exist."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
import yaml

from anchor.chain import AnchorRow, AnchorState
from anchor.service import anchor_views
from collector.broker import SecureMosquitto, provision_broker_certs
from collector.ca import CertificateAuthority
from collector.security_cli import ca_collector_cert_command
from collector.store import CollectorStore
from demo.thor import drive_to_finality, write_anchor_key
from fieldproof.cli import cli
from fieldproof.config import load_collector_config
from fieldproof.datadir import open_db
from fieldproof.services import InfluxDB, ThorSolo, free_port
from tests.support.enrollment import collector_toml_head, invoke, ok
from tests.support.stack import PROJECT_ROOT, wait_until
from tests.support.walkthrough import (
    Block,
    documented_fieldproof_commands,
    parse_problems,
    walkthrough_blocks,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

README = PROJECT_ROOT / "README.md"
USERS = ("operator", "technician", "agronomist", "inspector")
FARM, FIELD = "north-farm", "field-a"
#: What each user must have done for the walkthrough to be whole: a README that drops one of
#: these steps fails here.
REQUIRED_STEPS = {
    ("collector", "run"),
    ("collector", "enroll-server"),
    ("anchor", "run"),
    ("collector", "devices", "token", "create"),
    ("gateway", "init"),
    ("gateway", "sensors", "test"),
    ("gateway", "enroll"),
    ("gateway", "run"),
    ("gateway", "doctor"),
    ("collector", "status"),
    ("anchor", "status"),
    ("export",),
    ("verify",),
    ("cp",),
}
#: Steps that run until stopped: started in the background, stopped at the end.
LONG_RUNNING = {
    ("collector", "run"),
    ("collector", "enroll-server"),
    ("anchor", "run"),
    ("gateway", "run"),
}


# --------------------------------------------------------------------------------------------
# the stack: what docs/deploy.md and install-gateway.sh set up before the README's steps
# --------------------------------------------------------------------------------------------


@dataclass
class Site:
    root: Path
    collector_config: Path
    gateway_config: Path
    gateway_dir: Path
    enroll_url: str
    influx: InfluxDB
    thor: ThorSolo
    homes: dict[str, Path]
    grafana: Path
    handed_on: dict[str, str] = field(default_factory=dict)  # what one user gives another
    background: list[tuple[tuple[str, ...], subprocess.Popen[bytes], Path]] = field(
        default_factory=list
    )
    settled_size: int = 0  # the next settled anchor must pass this size (last final or saved)

    def settings_for(self, user: str) -> dict[str, str]:
        """The values of the README's shell variables on this stack: the small map a person
        fills with their own paths and hosts."""
        season_start = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
        values = {
            "operator": {"COLLECTOR": str(self.collector_config)},
            "technician": {
                "GW": str(self.gateway_config),
                "ENROLL_URL": self.enroll_url,
                "TOKEN": self.handed_on.get("TOKEN", ""),
            },
            "agronomist": {
                "GRAFANA_PROVISIONING": str(self.grafana / "provisioning"),
                "GRAFANA_DASHBOARDS": str(self.grafana / "dashboards" / "fieldproof"),
            },
            # the operator runs the export for the inspector: the operator's settings too
            "inspector": {
                "SEASON_START": season_start,
                "NODE": self.thor.url,
                "LOG_KEY": self.handed_on.get("LOG_KEY", ""),
            },
        }
        return values[user]

    def env_for(self, user: str) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        if user == "inspector":
            env.update(self.settings_for("operator"))
        env.update(self.settings_for(user))
        return env


def write_collector_config(
    root: Path, mqtt_port: int, enroll_port: int, influx: InfluxDB, thor: ThorSolo
) -> Path:
    """deploy/examples/collector.toml's sections, with this stack's paths and ports and the
    short intervals an operator may set to see anchors within seconds."""
    cdir = root / "server"
    cdir.mkdir(parents=True)
    key = write_anchor_key(root / "anchor" / "anchor.key")
    path = cdir / "collector.toml"
    influx_lines = f'api = "v1"\nurl = "{influx.url}"\ndatabase = "fieldproof"'
    path.write_text(collector_toml_head(cdir, mqtt_port, influx_lines) + f"""
[log]
origin_base = "walkthrough.fieldproof.example"
checkpoint_interval_s = 1

[anchor]
chain = "thor"
url = "{thor.url}"
key_file = "{key}"
interval_s = 1

[enrollment]
ca_dir = "{cdir}/ca"
crl_copy = "{root}/broker/certs/crl.pem"
listen_host = "127.0.0.1"
listen_port = {enroll_port}
tls_cert_file = "{root}/enroll-tls/server.pem"
tls_key_file = "{root}/enroll-tls/server.key"
broker_host = "127.0.0.1"
broker_port = {mqtt_port}
""")
    return path


def write_gateway_config(gdir: Path, mqtt_port: int, enroll_url: str, ca_pem: bytes) -> Path:
    """What install-gateway.sh writes (``--farm --field --broker --ca-file --enroll-url``),
    with a simulated sensor and a short interval instead of probes and 60 s."""
    (gdir / "tls").mkdir(parents=True)
    (gdir / "tls" / "ca.pem").write_bytes(ca_pem)
    path = gdir / "gateway.toml"
    path.write_text(f"""key_file = "{gdir}/gateway.key"
data_dir = "{gdir}"
farm = "{FARM}"
field = "{FIELD}"
interval_s = 0.5
status_interval_s = 2
enrollment_url = "{enroll_url}"

[mqtt]
host = "127.0.0.1"
port = {mqtt_port}

[mqtt.tls]
ca_file = "{gdir}/tls/ca.pem"
cert_file = "{gdir}/tls/client.pem"
key_file = "{gdir}/tls/client.key"

[[sensors]]
kind = "simulated"
name = "station"
seed = 7
""")
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("walkthrough")
    influx = InfluxDB(root / "influxdb")
    thor = ThorSolo(root / "thor")
    broker: SecureMosquitto | None = None
    influx.start()
    walk: Site | None = None
    try:
        thor.start()
        mqtt_port, enroll_port = free_port(), free_port()
        collector_config = write_collector_config(root, mqtt_port, enroll_port, influx, thor)
        cfg = load_collector_config(collector_config)
        ca = CertificateAuthority.create(cfg.data_dir / "ca")
        provision_broker_certs(ca, root / "broker" / "certs", ["127.0.0.1", "localhost"])
        provision_broker_certs(ca, root / "enroll-tls", ["127.0.0.1"])
        ok(invoke(ca_collector_cert_command, "--config", str(collector_config)))
        broker = SecureMosquitto(root / "mosquitto", root / "broker", ["collector-1"], mqtt_port)
        broker.start()
        enroll_url = f"https://127.0.0.1:{enroll_port}"
        gdir = root / "pi" / "var-lib-fieldproof"
        gateway_config = write_gateway_config(gdir, mqtt_port, enroll_url, ca.cert_pem)
        homes = {u: root / "home" / u for u in USERS}
        for home in homes.values():
            home.mkdir(parents=True)
        homes["agronomist"] = PROJECT_ROOT  # "in a fieldproof checkout"; it only copies from it
        grafana = root / "grafana"
        (grafana / "provisioning").mkdir(parents=True)  # Grafana's package made it
        walk = Site(
            root, collector_config, gateway_config, gdir, enroll_url, influx, thor, homes, grafana
        )
        yield walk
    finally:
        if walk is not None:
            stop_background(walk)
        if broker is not None:
            broker.stop()
        thor.stop()
        influx.stop()


def stop_background(walk: Site) -> None:
    for _, proc, _ in reversed(walk.background):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    walk.background.clear()


# --------------------------------------------------------------------------------------------
# running a block's commands as written
# --------------------------------------------------------------------------------------------


def step_of(command: str) -> tuple[str, ...]:
    """``("gateway", "enroll")`` for a fieldproof command, ``("cp",)`` for any other."""
    words = shlex.split(command, comments=True)
    if words[0] != "fieldproof":
        return (words[0],)
    step: list[str] = []
    for word in words[1:]:
        if word.startswith("-") or (step and step[0] in ("export", "verify")):
            break
        step.append(word)
    return tuple(step)


@dataclass(frozen=True)
class Ran:
    command: str
    step: tuple[str, ...]
    returncode: int
    output: str

    def ok(self) -> str:
        assert self.returncode == 0, f"exit {self.returncode}: {self.command}\n{self.output}"
        return self.output


def run(walk: Site, user: str, command: str) -> Ran:
    proc = subprocess.run(
        ["bash", "-u", "-o", "pipefail", "-c", command],
        cwd=walk.homes[user],
        env=walk.env_for(user),
        capture_output=True,
        text=True,
        timeout=180,
    )
    ran = Ran(command, step_of(command), proc.returncode, proc.stdout + proc.stderr)
    with (walk.root / "transcript.txt").open("a") as transcript:  # what a person would see
        transcript.write(f"{user}$ {command}\n{ran.output}[exit {ran.returncode}]\n\n")
    return ran


def start(walk: Site, user: str, command: str) -> Path:
    step = step_of(command)
    log = walk.root / "logs" / ("-".join(step) + ".log")
    log.parent.mkdir(exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["bash", "-u", "-c", "exec " + command],
            cwd=walk.homes[user],
            env=walk.env_for(user),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    walk.background.append((step, proc, log))
    return log


def alive(walk: Site, step: tuple[str, ...]) -> bool:
    return any(s == step and p.poll() is None for s, p, _ in walk.background)


def log_of(walk: Site, step: tuple[str, ...]) -> str:
    return next(
        (lg.read_text(errors="replace")[-3000:] for s, _, lg in walk.background if s == step), ""
    )


# ---------------------------------------------------------------- what each step must show


def collector_holds_its_lock(walk: Site) -> bool:
    """The running collector holds an exclusive flock on <data_dir>/collector.lock."""
    lock = load_collector_config(walk.collector_config).data_dir / "collector.lock"
    if not lock.exists():
        return False
    with lock.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def port_open(url: str) -> bool:
    host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def accepted(walk: Site) -> tuple[int, int]:
    """(messages, readings) the collector accepted."""
    store = CollectorStore(open_db(load_collector_config(walk.collector_config).db_path))
    try:
        return store.accepted_count()
    finally:
        store.db.close()


def confirmed_messages(walk: Site) -> int:
    """Messages the gateway's spool counts as confirmed by a collector's receipt."""
    spool = walk.gateway_dir / "spool.sqlite"
    if not spool.exists():
        return 0
    db = sqlite3.connect(f"file:{spool}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT value FROM meta WHERE key = 'confirmed_messages'").fetchone()
    finally:
        db.close()
    return int(row[0]) if row else 0


def wait_started(walk: Site, step: tuple[str, ...]) -> None:
    """A service the README starts is up when its effect can be seen."""
    effects: dict[tuple[str, ...], tuple[Callable[[], bool], str]] = {
        ("collector", "run"): (lambda: collector_holds_its_lock(walk), "the collector running"),
        ("collector", "enroll-server"): (
            lambda: port_open(walk.enroll_url),
            "the enrollment endpoint listening",
        ),
        # its effect, anchors, is awaited where the README looks at them (settle_anchors)
        ("anchor", "run"): (lambda: True, "the anchorer started"),
        # delivering: the collector verified the gateway's messages and its receipts reached
        # the gateway (what the doctor reports as "delivery: N message(s) confirmed")
        ("gateway", "run"): (
            lambda: accepted(walk)[0] >= 5 and confirmed_messages(walk) >= 5,
            "the gateway's messages accepted by the collector and confirmed to the gateway",
        ),
    }
    predicate, what = effects[step]

    def up() -> bool:
        assert alive(walk, step), f"{' '.join(step)} exited:\n{log_of(walk, step)}"
        return predicate()

    try:
        wait_until(up, 60, what, step=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{' '.join(step)} said:\n{log_of(walk, step)}") from None


def settle_anchors(walk: Site) -> None:
    """Wait for an anchor of a checkpoint newer than the last one settled, then move the dev
    chain forward until it is final (a real chain does this by itself in minutes)."""
    cfg = load_collector_config(walk.collector_config)

    def newer_included() -> list[AnchorRow]:
        return [
            v
            for v in anchor_views(cfg)
            if v.tree_size > walk.settled_size
            and v.state in (AnchorState.INCLUDED, AnchorState.FINALIZED)
            and v.block_number is not None
        ]

    wait_until(
        lambda: bool(newer_included()),
        60,
        f"an anchor newer than size {walk.settled_size}: {log_of(walk, ('anchor', 'run'))}",
    )
    target = max(v.block_number or 0 for v in newer_included())
    assert drive_to_finality(walk.thor.url, target).final
    wait_until(
        lambda: any(v.state is AnchorState.FINALIZED for v in newer_included()),
        60,
        f"the anchorer to see an anchor final: {log_of(walk, ('anchor', 'run'))}",
    )
    walk.settled_size = max(
        v.tree_size for v in newer_included() if v.state is AnchorState.FINALIZED
    )


def check(walk: Site, user: str, ran: Ran) -> None:
    """What the README says each step shows, on this stack."""
    out = ran.ok()
    match ran.step:
        case ("collector", "devices", "token", "create"):
            token = out.strip().splitlines()[0]
            assert re.fullmatch(r"fpe1\.[0-9a-f]{8}\.[a-z2-7]{32}", token), out
            walk.handed_on["TOKEN"] = token  # the operator gives it to the technician
        case ("gateway", "init"):
            m = re.search(r"gateway id:\s+(gw-[0-9a-f]{16})", out)
            assert m, out
            walk.handed_on["GATEWAY_ID"] = m.group(1)
            assert (walk.gateway_dir / "gateway.key").stat().st_mode & 0o077 == 0
        case ("gateway", "sensors", "test"):
            assert "station" in out and "all sensors OK" in out, out
        case ("gateway", "enroll"):
            assert "approved" in out, out
            assert (walk.gateway_dir / "tls" / "client.pem").exists()
        case ("gateway", "doctor"):
            verdict = out.strip().splitlines()[-1]
            assert verdict.startswith(("ALL GOOD", "WORKING")), out
            assert "NOT READY" not in out and "FAIL" not in out, out
            assert re.search(r"delivery: [1-9]\d* message\(s\) confirmed", out), out
        case ("collector", "status"):
            assert re.search(r"collector: running", out), out
            m = re.search(r"accepted: (\d+) messages, (\d+) readings", out)
            assert m and int(m.group(1)) >= 5 and int(m.group(2)) > int(m.group(1)), out
        case ("anchor", "status"):
            assert "finalized" in out, out
        case ("export",):
            bundle = walk.homes[user] / shlex.split(ran.command)[-1]
            assert bundle.stat().st_size > 0
            m = re.search(r"log key \(publish it[^)]*\): (\S+)", out)
            assert m, out
            walk.handed_on["LOG_KEY"] = m.group(1)  # published by the operator
        case ("verify",):
            words = shlex.split(ran.command, comments=True)
            assert re.search(r"\bPASS\b", out) and "FAIL" not in out, out
            assert "known_checkpoint_unlinked" not in out, out
            assert "log_key_not_pinned" not in out, out  # the published key was used
            report = walk.homes[user] / words[words.index("--report") + 1]
            assert "PASS" in report.read_text()
            assert report.with_suffix(".pdf").stat().st_size > 0
            saved = walk.homes[user] / words[words.index("--save-checkpoint") + 1]
            assert saved.read_text().startswith("walkthrough.fieldproof.example/log/")
            # the next audit needs an anchor past this one (settle_anchors waits for it)
            walk.settled_size = max(walk.settled_size, int(saved.read_text().splitlines()[1]))
            if "--known-checkpoint" in words:
                known = walk.homes[user] / words[words.index("--known-checkpoint") + 1]
                assert re.search(r"known checkpoint #1 size \d+: LINKED", out), out
                # the next audit's checkpoint extends the last one's: a larger tree
                assert int(saved.read_text().splitlines()[1]) > int(
                    known.read_text().splitlines()[1]
                ), (known.read_text(), saved.read_text())
        case _:
            pass


def run_block(walk: Site, block: Block, done: list[tuple[str, ...]]) -> None:
    steps = [step_of(c) for c in block.commands()]
    if ("anchor", "status") in steps or ("export",) in steps:
        settle_anchors(walk)
    for command in block.commands():
        step = step_of(command)
        if step in LONG_RUNNING:
            start(walk, block.user, command)
            wait_started(walk, step)
        else:
            check(walk, block.user, run(walk, block.user, command))
        done.append(step)


# --------------------------------------------------------------------------------------------
# the tests
# --------------------------------------------------------------------------------------------


def test_every_variable_the_readme_uses_is_set_and_nothing_else(site: Site) -> None:
    """The settings blocks name exactly what the test sets: a new variable in the README (or
    one the test sets that no reader would) fails here."""
    blocks = walkthrough_blocks(README)
    for user in USERS:
        named = [b.setting_names() for b in blocks if b.user == user and b.settings]
        assert len(named) == 1, f"{user}: one settings block expected, found {len(named)}"
        assert set(named[0]) == set(site.settings_for(user)), (user, named[0])
    used = {
        v
        for b in blocks
        if not b.settings
        for c in b.commands()
        for v in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", c)
    }
    set_somewhere = {n for u in USERS for n in site.settings_for(u)}
    assert used <= set_somewhere, used - set_somewhere


def test_the_walkthrough_runs_as_written(site: Site) -> None:
    """Every marked block, in README order: the server started, a token made, the gateway
    initialised, tested, enrolled over TLS, delivering, its doctor content; the collector's
    status and final anchors; Grafana's files in place; two audits verified."""
    blocks = [b for b in walkthrough_blocks(README) if not b.settings]
    assert {b.user for b in blocks} == set(USERS)
    done: list[tuple[str, ...]] = []
    for block in blocks:
        run_block(site, block, done)
        if block.user == "agronomist":
            check_grafana_files(site)
    assert set(done) >= REQUIRED_STEPS, REQUIRED_STEPS - set(done)
    # nothing the README started died on the way
    for step, proc, _ in site.background:
        assert proc.poll() is None, f"{' '.join(step)} exited:\n{log_of(site, step)}"


def check_grafana_files(walk: Site) -> None:
    """The agronomist's copy is what Grafana reads: the datasource (pointed at this stack's
    InfluxDB the way Grafana expands its variables) answers the dashboards' variable queries
    with the farm, field and gateway the technician installed."""
    settings = walk.settings_for("agronomist")
    prov = Path(settings["GRAFANA_PROVISIONING"])
    for kind in ("datasources", "dashboards", "alerting"):
        assert list((prov / kind).glob("*.yaml")), kind
    dashboards = sorted(Path(settings["GRAFANA_DASHBOARDS"]).glob("*.json"))
    assert len(dashboards) == 4, dashboards
    (source,) = yaml.safe_load((prov / "datasources" / "fieldproof-influxdb.yaml").read_text())[
        "datasources"
    ]
    grafana_env = {"FIELDPROOF_INFLUX_URL": walk.influx.url, "FIELDPROOF_INFLUX_DB": "fieldproof"}
    url = re.sub(r"\$\{(\w+)\}", lambda m: grafana_env[m.group(1)], source["url"])
    database = re.sub(
        r"\$\{(\w+)\}", lambda m: grafana_env[m.group(1)], source["jsonData"]["dbName"]
    )
    assert url == walk.influx.url and database == "fieldproof"
    overview = next(
        json.loads(p.read_text())
        for p in dashboards
        if json.loads(p.read_text())["uid"] == "fieldproof-field-overview"
    )
    picked: dict[str, str] = {}
    for var in overview["templating"]["list"]:
        query = var["query"]
        for name, value in picked.items():
            query = query.replace(f"${name}", re.escape(value))
        values = {row[1] for row in rows_of(walk.influx.query(query, db=database))}
        want = {"farm": FARM, "field": FIELD, "gateway": walk.handed_on["GATEWAY_ID"]}.get(
            var["name"]
        )
        assert values, (var["name"], query)
        if want is not None:
            assert want in values, (var["name"], values)
        picked[var["name"]] = want or sorted(values)[0]
    # each panel over what a gateway measures answers for the technician's gateway
    stored = {row[0] for row in rows_of(walk.influx.query("SHOW MEASUREMENTS", db=database))}
    answered = 0
    for target in (t for p in all_panels(overview) for t in p.get("targets", [])):
        if not set(re.findall(r'FROM "([a-z_]+)"', target["query"])) <= stored:
            continue  # a derived series this short run does not make (fields.toml)
        query = target["query"].replace("$timeFilter", "time > now() - 1h")
        query = query.replace("$__interval", "10s")
        for name, value in picked.items():
            query = query.replace(f"${name}", re.escape(value))
        series = walk.influx.query(query, db=database)
        assert series, f"no data for the panel query {query}"
        answered += 1
    assert answered >= 5, answered  # the five quantities of the simulated station


def rows_of(series: list[dict[str, object]]) -> list[list[Any]]:
    """The value rows of InfluxDB's series, as lists."""
    return [row for s in series for row in cast(list[list[Any]], s.get("values", []))]


def all_panels(dashboard: dict[str, object]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):  # type: ignore[attr-defined]
        yield panel
        yield from all_panels(panel)


@pytest.mark.parametrize("doc", ["README.md", "docs/deploy.md", "docs/enrollment.md"])
def test_every_documented_command_exists_in_the_cli(doc: str) -> None:
    """Blocks the walkthrough cannot run here (root, systemd, containers, several collectors)
    still name subcommands and options the CLI has."""
    commands = documented_fieldproof_commands(PROJECT_ROOT / doc)
    assert commands
    problems = [
        f"{doc} block at line {line}: {cmd}: {p}"
        for line, cmd in commands
        for p in parse_problems(cli, cmd)
    ]
    assert problems == []


def test_the_cli_check_finds_a_wrong_option_or_subcommand() -> None:
    assert parse_problems(cli, "fieldproof verify farm.fpb --node x --since-checkpoint c")
    assert parse_problems(cli, "fieldproof collector devise add --config c")
    assert not parse_problems(cli, "fieldproof export --config c --farm F --from 1 -o b")
