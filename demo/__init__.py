"""``fieldproof demo``: the whole path on one machine, checked end to end.

Starts Mosquitto and InfluxDB on free loopback ports (or uses the ones given), creates N
simulated gateways with keys of their own, registers them, runs them and a collector as
separate processes, then stops the gateways (they drain their spools), waits for the collector
to catch up and reads the result back from InfluxDB with InfluxQL. With a chain (``--chain
thor``, the default: a real ``thor solo`` node it starts; ``--chain evm``: anvil) the log's
checkpoints are anchored and every anchor must be final on that node (:mod:`demo.thor` says
how thor solo gets there). Exits non-zero if any reading a gateway saw acknowledged is missing
from InfluxDB, or an anchor is not final, or the exported evidence does not verify."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from collector.cli_common import open_registry
from collector.store import CollectorStore
from fieldproof.config import CollectorConfig, load_collector_config
from fieldproof.datadir import open_db
from fieldproof.keys import create_key_file
from fieldproof.mqtt import wait_for_retained
from fieldproof.services import InfluxDB, InfluxDB18, ManagedProcess, Mosquitto, ServiceError
from fieldproof.wire import gateway_id_for, public_key_bytes

if TYPE_CHECKING:  # web3 and friends load only when the demo anchors
    from anchor.service import AnchorView

READING_MEASUREMENTS = (
    "soil_moisture",
    "soil_temperature",
    "air_temperature",
    "air_humidity",
    "soil_ec",
)


@dataclass
class DemoGateway:
    gateway_id: str
    config_path: Path
    spool_path: Path
    farm: str
    field: str
    proc: subprocess.Popen[bytes] | None = None


def _python_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "fieldproof", *args]


def write_gateway(
    workdir: Path,
    index: int,
    mqtt_port: int,
    interval: float,
    farm: str,
    field: str,
    mqtt_host: str = "127.0.0.1",
    confirm_timeout: float = 10.0,
) -> DemoGateway:
    gdir = workdir / f"gateway-{index}"
    gdir.mkdir(parents=True, exist_ok=True)
    key = create_key_file(gdir / "gateway.key")
    gw = gateway_id_for(public_key_bytes(key))
    config = gdir / "gateway.toml"
    config.write_text(f"""# demo gateway {index}
key_file = "{gdir / "gateway.key"}"
data_dir = "{gdir}"
farm = "{farm}"
field = "{field}"
interval_s = {interval}
status_interval_s = 5
confirm_timeout_s = {confirm_timeout}

[mqtt]
host = "{mqtt_host}"
port = {mqtt_port}

[[sensors]]
kind = "simulated"
name = "station{index}"
seed = {index + 1}
""")
    return DemoGateway(gw, config, gdir / "spool.sqlite", farm, field)


#: the collector's environment variables the demo puts InfluxDB credentials in (never the TOML)
TOKEN_ENV = "FIELDPROOF_DEMO_INFLUX_TOKEN"  # noqa: S105 (a variable name, not a secret)
PASSWORD_ENV = "FIELDPROOF_DEMO_INFLUX_PASSWORD"  # noqa: S105


def influx_toml(
    influx_url: str, database: str, api: str = "v1", token: str | None = None
) -> str:
    """The ``[influx]`` section. v2: the bucket is ``database`` and the token comes from
    :data:`TOKEN_ENV`; v1 with a token ``user:password``: that user, the password from
    :data:`PASSWORD_ENV`."""
    lines = ["[influx]", f'api = "{api}"', f'url = "{influx_url}"']
    if api == "v2":
        lines += [f'bucket = "{database}"', f'database = "{database.split("/", 1)[0]}"']
        if token:
            lines.append(f'token_env = "{TOKEN_ENV}"')
    else:
        lines.append(f'database = "{database}"')
        if token:
            lines += [f'username = "{token.split(":", 1)[0]}"', f'password_env = "{PASSWORD_ENV}"']
    return "\n".join(lines) + "\n"


def influx_env(api: str, token: str | None) -> dict[str, str]:
    """The environment :func:`influx_toml`'s config reads its secret from."""
    if not token:
        return {}
    if api == "v2":
        return {TOKEN_ENV: token}
    return {PASSWORD_ENV: token.split(":", 1)[1] if ":" in token else ""}


def write_collector_config(
    workdir: Path,
    mqtt_host: str,
    mqtt_port: int,
    influx_url: str,
    database: str,
    anchor_toml: str = "",
    *,
    influx_api: str = "v1",
    influx_token: str | None = None,
) -> Path:
    cdir = workdir / "collector"
    cdir.mkdir(parents=True, exist_ok=True)
    path = cdir / "collector.toml"
    path.write_text(f"""collector_id = "demo-collector"
data_dir = "{cdir}"
stats_interval_s = 5

[mqtt]
host = "{mqtt_host}"
port = {mqtt_port}

{influx_toml(influx_url, database, influx_api, influx_token)}
[log]
origin_base = "demo.fieldproof.example"
checkpoint_interval_s = 5
{anchor_toml}""")
    return path


def spool_counts(path: Path) -> tuple[int, int, int]:
    """(published readings, messages still spooled, dropped messages) from a gateway's spool.
    Published = PUBACKed by the broker at least once."""
    if not path.exists():
        return 0, 0, 0  # the gateway never ran
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        depth = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
    finally:
        db.close()
    return int(meta.get("published_readings", 0)), depth, int(meta.get("dropped_messages", 0))


def influx_counts(
    influx_url: str, database: str, token: str | None = None, api: str = "v1"
) -> dict[str, int]:
    """Readings stored per gateway, counted by InfluxQL over the reading measurements.

    ``database`` may be ``db/rp`` (a v2 bucket on InfluxDB 1.8). ``token``: with ``api="v2"``
    sent as ``Authorization: Token …`` (1.8: ``user:password``; 2.x: an API token, with a DBRP
    mapping for the bucket); with v1, ``user:password`` as HTTP Basic authentication."""
    import httpx

    db, _, rp = database.partition("/")
    prefix = f'"{rp}".' if rp else ""
    measurements = ",".join(prefix + m for m in READING_MEASUREMENTS)  # constants, not input
    q = f'SELECT count("seq") FROM {measurements} GROUP BY "gateway"'  # noqa: S608
    headers: dict[str, str] = {}
    auth: httpx.BasicAuth | None = None
    if token and api == "v2":
        headers["Authorization"] = f"Token {token}"
    elif token:
        user, _, password = token.partition(":")
        auth = httpx.BasicAuth(user, password)
    r = httpx.post(
        f"{influx_url}/query", data={"db": db, "q": q}, headers=headers, auth=auth, timeout=30
    )
    r.raise_for_status()
    result = r.json()["results"][0]
    if "error" in result:
        if "database not found" in result["error"]:
            return {}
        raise RuntimeError(f"InfluxDB at {influx_url}: {result['error']}")
    counts: dict[str, int] = {}
    for series in result.get("series", []):
        gw = series["tags"]["gateway"]
        counts[gw] = counts.get(gw, 0) + int(series["values"][0][1])
    return counts


def _terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 20.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


#: how long the demo waits for every gateway's first reading to reach the collector
FIRST_READING_TIMEOUT_S = 120.0


def _wait_first_readings(
    fleet: list[DemoGateway],
    db_path: Path,
    collector_proc: subprocess.Popen[bytes],
    logs: Path,
    console: Console,
) -> None:
    """Wait until the collector holds a message of every gateway; a gateway or the collector
    that exits meanwhile, or a gateway silent for FIRST_READING_TIMEOUT_S, is an error naming
    its log."""
    deadline = time.monotonic() + FIRST_READING_TIMEOUT_S
    waiting = {g.gateway_id: g for g in fleet}
    with console.status(f"waiting for the first reading of {len(fleet)} gateway(s)…"):
        while waiting:
            for g in list(waiting.values()):
                if g.proc is not None and g.proc.poll() is not None:
                    raise click.ClickException(
                        f"gateway {g.gateway_id} exited early; see {logs / (g.gateway_id + '.log')}"
                    )
            if collector_proc.poll() is not None:
                raise click.ClickException(f"collector exited early; see {logs / 'collector.log'}")
            store = CollectorStore(open_db(db_path))
            try:
                held = {
                    str(gw)
                    for (gw,) in store.db.execute("SELECT DISTINCT gateway FROM received")
                }
            finally:
                store.db.close()
            for gw in held:
                waiting.pop(gw, None)
            if not waiting:
                return
            if time.monotonic() > deadline:
                gw = sorted(waiting)[0]
                raise click.ClickException(
                    f"no reading of gateway {gw} reached the collector within "
                    f"{FIRST_READING_TIMEOUT_S:.0f} s; see {logs / (gw + '.log')} and "
                    f"{logs / 'collector.log'}"
                )
            time.sleep(0.2)


@click.command("demo")
@click.option("--gateways", default=3, show_default=True, type=click.IntRange(1, 200))
@click.option(
    "--duration",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1, 86_400),
    help="seconds the gateways run",
)
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.01, 3600),
    help="seconds between a gateway's sampling rounds",
)
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="keep everything here (default: a temporary directory, removed after)",
)
@click.option("--mqtt-port", type=int, default=None, help="use a running broker on 127.0.0.1")
@click.option(
    "--influx-url",
    default=None,
    help="use a running InfluxDB (default: start one: Debian's 1.x for v1, the 1.8 peer "
    "built by scripts/peers for v2)",
)
@click.option(
    "--influx-api",
    type=click.Choice(["v1", "v2"]),
    default="v1",
    show_default=True,
    help="v1: POST /write (InfluxDB 1.x); v2: /api/v2/write (InfluxDB 1.8+, 2.x, 3.x, Cloud)",
)
@click.option(
    "--influx-token",
    default=None,
    envvar="FIELDPROOF_INFLUX_TOKEN",
    help="InfluxDB credentials: with v2 the API token (InfluxDB 1.8: user:password), with v1 "
    "user:password; also read from FIELDPROOF_INFLUX_TOKEN. Passed to the collector in its "
    "environment, never in a file",
)
@click.option(
    "--database",
    default="fieldproof",
    show_default=True,
    help="InfluxDB database; with --influx-api v2 the bucket (InfluxDB 1.8: database or "
    "database/retention-policy)",
)
@click.option(
    "--chain",
    type=click.Choice(["thor", "evm", "none"]),
    default="thor",
    show_default=True,
    help="anchor checkpoints on a VeChainThor solo node (thor) or a local EVM dev chain "
    "(anvil) the demo starts, and require every anchor final; none: no anchoring",
)
@click.option(
    "--report-dir",
    type=click.Path(path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="where the evidence bundles and inspector reports go",
)
@click.option(
    "--keep-running",
    is_flag=True,
    help="after the checks, keep the broker, InfluxDB and chain node running and print how to "
    "reach them and which configs to use, until Ctrl-C (needs --workdir)",
)
def demo_command(
    gateways: int,
    duration: float,
    interval: float,
    workdir: Path | None,
    mqtt_port: int | None,
    influx_url: str | None,
    influx_api: str,
    influx_token: str | None,
    database: str,
    chain: str,
    report_dir: Path,
    keep_running: bool,
) -> None:
    """Run simulated gateways → broker → collector → InfluxDB → evidence log → anchors, and
    check that nothing is lost and every anchor is final."""
    console = Console(stderr=True)
    tmp = None
    if keep_running and workdir is None:
        raise click.UsageError("--keep-running needs --workdir (where the configs stay)")
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fieldproof-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    if influx_api == "v1" and influx_token and ":" not in influx_token:
        raise click.UsageError("with --influx-api v1, --influx-token is user:password")
    services: list[ManagedProcess] = []
    collector_proc: subprocess.Popen[bytes] | None = None
    anchor_proc: subprocess.Popen[bytes] | None = None
    fleet: list[DemoGateway] = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **influx_env(influx_api, influx_token)}
    try:
        if mqtt_port is None:
            broker = Mosquitto(workdir / "mosquitto")
            broker.start()
            services.append(broker)
            mqtt_port = broker.port
        if influx_url is None:
            try:
                influx_dir = workdir / "influxdb"
                # Debian's InfluxDB 1.6 has no v2 API; the 1.8 peer (scripts/peers) has
                influx = InfluxDB18(influx_dir) if influx_api == "v2" else InfluxDB(influx_dir)
                influx.start()
            except ServiceError as exc:
                raise click.ClickException(str(exc)) from None
            services.append(influx)
            influx_url = influx.url
        console.print(
            f"broker 127.0.0.1:{mqtt_port} · InfluxDB {influx_url} ({influx_api} API) · "
            f"work dir {workdir}"
            + (" (removed at the end; --workdir keeps it)" if tmp is not None else "")
        )

        anchor_toml = ""
        chain_url = ""
        if chain != "none":
            from demo.chains import demo_chain

            try:
                started = demo_chain(chain).start(workdir)
            except ServiceError as exc:
                raise click.ClickException(str(exc)) from None
            services.append(started.service)
            chain_url, anchor_toml = started.url, started.anchor_toml
            console.print(started.banner)
        collector_config = write_collector_config(
            workdir,
            "127.0.0.1",
            mqtt_port,
            influx_url,
            database,
            anchor_toml,
            influx_api=influx_api,
            influx_token=influx_token,
        )
        cdir = collector_config.parent
        cfg = load_collector_config(collector_config)
        registry = open_registry(cfg)
        farms = [("north-farm", "field-a"), ("north-farm", "field-b"), ("river-farm", "orchard")]
        for i in range(gateways):
            farm, field = farms[i % len(farms)]
            g = write_gateway(workdir, i, mqtt_port, interval, farm, field)
            pub = bytes.fromhex(_public_key_hex(g))
            registry.add(
                g.gateway_id, pub, farm, field, sensor_meta={f"station{i}": {"depth_cm": "20"}}
            )
            fleet.append(g)
        registry.db.close()

        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        with (logs / "collector.log").open("ab") as out:
            collector_proc = subprocess.Popen(
                _python_cmd("collector", "run", "--config", str(collector_config)),
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if chain != "none":
            with (logs / "anchor.log").open("ab") as out:
                anchor_proc = subprocess.Popen(
                    _python_cmd("anchor", "run", "--config", str(collector_config)),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
        presence = "fieldproof/v1/_collector/demo-collector/status"
        if not wait_for_retained("127.0.0.1", mqtt_port, presence, b'"online": true', 60):
            raise click.ClickException(f"collector did not subscribe; see {logs / 'collector.log'}")
        for g in fleet:
            with (logs / f"{g.gateway_id}.log").open("ab") as out:
                g.proc = subprocess.Popen(
                    _python_cmd("gateway", "run", "--config", str(g.config_path)),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                )

        # the duration counts from every gateway delivering, not from spawning them: on a busy
        # machine a gateway can take seconds to start, and one stopped before its first
        # reading would leave its farm without data
        _wait_first_readings(fleet, cdir / "collector.sqlite", collector_proc, logs, console)
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task(f"{gateways} gateways running", total=duration)
            start = time.monotonic()
            while (elapsed := time.monotonic() - start) < duration:
                progress.update(task, completed=elapsed)
                for g in fleet:
                    if g.proc is not None and g.proc.poll() is not None:
                        raise click.ClickException(
                            f"gateway {g.gateway_id} exited early; "
                            f"see {logs / (g.gateway_id + '.log')}"
                        )
                if collector_proc.poll() is not None:
                    raise click.ClickException(
                        f"collector exited early; see {logs / 'collector.log'}"
                    )
                time.sleep(0.2)

        console.print("stopping gateways (they drain their spools)…")
        for g in fleet:
            if g.proc is not None:
                g.proc.send_signal(signal.SIGTERM)
        for g in fleet:
            _terminate(g.proc, 30)

        published = 0
        still_spooled = 0
        dropped = 0
        per_gateway: dict[str, int] = {}
        for g in fleet:
            acked, depth, drop = spool_counts(g.spool_path)
            per_gateway[g.gateway_id] = acked
            published += acked
            still_spooled += depth
            dropped += drop

        store = CollectorStore(open_db(cdir / "collector.sqlite"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and store.accepted_count()[1] < published:
            time.sleep(0.2)
        _terminate(collector_proc)  # it signs a final checkpoint on the way out
        collector_proc = None

        anchors = _log_and_anchor(cfg, chain, chain_url, console)
        _terminate(anchor_proc)
        anchor_proc = None
        node_url = chain_url if chain != "none" else None
        evidence_ok = _inspect(
            cfg, sorted({g.farm for g in fleet}), node_url, chain, report_dir, console
        )

        accepted_messages, accepted_readings = store.accepted_count()
        quarantined = sum(store.quarantine_by_reason().values())
        gaps = store.gaps()
        stored = influx_counts(influx_url, database, influx_token, influx_api)
        stored_total = sum(stored.get(g.gateway_id, 0) for g in fleet)

        per_gateway_log = _accepted_per_gateway(store)
        table = Table(
            Column("gateway", no_wrap=True),
            Column("farm\nfield", no_wrap=True),
            Column("messages\nverified", justify="right"),
            Column("readings\npublished", justify="right"),
            Column("readings\nverified", justify="right"),
            Column("readings\nstored", justify="right"),
            title="fieldproof demo: messages and readings per gateway",
            caption="a message is one signed sampling round; it carries one reading per "
            "quantity each sensor measures. stored = in InfluxDB",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        for g in fleet:
            messages_of, readings_of = per_gateway_log.get(g.gateway_id, (0, 0))
            table.add_row(
                g.gateway_id,
                f"{g.farm}\n{g.field}",
                str(messages_of),
                str(per_gateway[g.gateway_id]),
                str(readings_of),
                str(stored.get(g.gateway_id, 0)),
            )
        Console().print(table)
        missing = sum(
            max(0, per_gateway[g.gateway_id] - stored.get(g.gateway_id, 0)) for g in fleet
        )
        anchor_ok = chain == "none" or anchors.ok
        ok = (
            missing == 0
            and published > 0
            and accepted_readings >= published
            and anchor_ok
            and evidence_ok
        )
        for line in anchors.notes:
            console.print(line)
        console.print(
            _counts_in_words(
                gateways, published, accepted_messages, accepted_readings,
                _log_makeup(cfg.db_path, anchors.log_size),
            ),
            highlight=False,
        )
        verdict = "OK" if ok else "FAIL"
        anchor_part = (
            ""
            if chain == "none"
            else f" checkpoints={anchors.checkpoints} anchors={anchors.count}"
            f" final={anchors.final}"
            + ("" if anchors.all_final else f" ({anchors.not_final_reason})")
        )
        click.echo(
            f"demo {verdict}: gateways={gateways} published={published}"
            f" verified={accepted_readings}"
            f" stored={stored_total} missing={missing} quarantined={quarantined} gaps={len(gaps)}"
            f" still_spooled={still_spooled} dropped={dropped} messages={accepted_messages}"
            f" log_size={anchors.log_size}"
            f" anchored_size={anchors.anchored_size}{anchor_part}"
            f" influx={influx_api} chain={chain}"
        )
        if keep_running:
            _keep_running(
                console, mqtt_port, influx_url, influx_api, database, chain, chain_url,
                collector_config, fleet, report_dir,
            )  # fmt: skip
        if not ok:
            sys.exit(1)
    finally:
        for g in fleet:
            _terminate(g.proc, 5)
        _terminate(collector_proc, 10)
        _terminate(anchor_proc, 10)
        for s in reversed(services):
            s.stop()
        if tmp is not None:
            tmp.cleanup()


def _keep_running(
    console: Console,
    mqtt_port: int,
    influx_url: str,
    influx_api: str,
    database: str,
    chain: str,
    chain_url: str,
    collector_config: Path,
    fleet: list[DemoGateway],
    report_dir: Path,
) -> None:
    """Print where the demo's services are and which configs reach them, then wait for
    Ctrl-C or SIGTERM (the caller stops everything afterwards)."""
    chains = {"thor": "VeChainThor solo node", "evm": "EVM dev chain (anvil)"}
    lines = [
        "kept running; Ctrl-C stops everything:",
        f"  MQTT broker      127.0.0.1:{mqtt_port} (no TLS)",
        f"  InfluxDB         {influx_url} ({influx_api} API), database {database}",
    ]
    if chain != "none":
        lines.append(f"  {chains[chain]:<16} {chain_url}")
    lines += [
        f"  collector config {collector_config}",
        f"    fieldproof collector status --config {collector_config}",
        f"    fieldproof collector run --config {collector_config}",
        f"    fieldproof export --config {collector_config} --farm {fleet[0].farm} "
        "--from 2020-01-01 -o farm.fpb",
    ]
    for g in fleet:
        lines.append(f"  gateway {g.gateway_id}  {g.config_path}")
    lines += [
        f"    fieldproof gateway doctor --config {fleet[0].config_path}",
        f"    fieldproof gateway run --config {fleet[0].config_path}",
        f"  reports          {report_dir}",
    ]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _accepted_per_gateway(store: CollectorStore) -> dict[str, tuple[int, int]]:
    """gateway → (messages, readings) the collector verified and accepted."""
    rows = store.db.execute(
        "SELECT gateway, count(*), coalesce(sum(readings), 0) FROM received GROUP BY gateway"
    ).fetchall()
    return {str(gw): (int(n), int(r)) for gw, n, r in rows}


@dataclass(frozen=True)
class LogMakeup:
    """What the evidence log's entries are, counted entry by entry."""

    size: int
    messages: int = 0
    registry_events: int = 0
    seals: int = 0
    other: int = 0


def _log_makeup(db_path: Path, log_size: int) -> LogMakeup:
    """Count the entries inside the log's final checkpoint by kind: signed messages (tagged
    COSE_Sign1, first byte 0xd2), registry events and completeness seals (CBOR maps whose
    ``"t"`` says which: docs/evidence-log.md)."""
    import cbor2

    from fieldproof.formats.registry_event import REGISTRY_EVENT_TYPE
    from fieldproof.formats.seal import SEAL_TYPE

    db = open_db(db_path)
    try:
        messages = db.execute(
            "SELECT count(*) FROM fp_log_entries WHERE idx < ? AND substr(entry, 1, 1) = X'D2'",
            (log_size,),
        ).fetchone()[0]
        kinds: dict[str, int] = {}
        for (entry,) in db.execute(
            "SELECT entry FROM fp_log_entries WHERE idx < ? AND substr(entry, 1, 1) <> X'D2'",
            (log_size,),
        ):
            try:
                decoded = cbor2.loads(entry)
            except (cbor2.CBORDecodeError, ValueError):
                decoded = None
            kind = decoded.get("t") if isinstance(decoded, dict) else None
            kinds[str(kind)] = kinds.get(str(kind), 0) + 1
    finally:
        db.close()
    registry = kinds.pop(REGISTRY_EVENT_TYPE, 0)
    seals = kinds.pop(SEAL_TYPE, 0)
    return LogMakeup(log_size, int(messages), registry, seals, sum(kinds.values()))


def _counts_in_words(
    gateways: int, published: int, messages: int, readings: int, log: LogMakeup
) -> str:
    """The summary line's counts said plainly: which count readings, which messages, and
    why the log holds more entries than there are messages."""
    events = log.registry_events
    why = (
        f"the enrollment of each of the {gateways} gateways"
        if events == gateways
        else "enrollments, key changes and revocations of gateways"
    )
    seals = (
        f" + {log.seals} completeness seal(s) (one before each checkpoint: what the log held "
        "per farm and gateway)"
        if log.seals
        else ""
    )
    if log.other:
        seals += f" + {log.other} other entr(ies)"
    return (
        f"counts: published, verified and stored are readings ({published} published by the "
        f"gateways, {readings} verified); messages={messages} counts the signed messages "
        f"carrying them (one per sampling round); log_size={log.size} counts evidence-log "
        f"entries: {log.messages} messages + {events} registry event(s) ({why}){seals}"
    )


@dataclass
class AnchorOutcome:
    """The log's final size and what the chain holds of it."""

    log_size: int
    checkpoints: int = 0
    anchored_size: int = 0
    count: int = 0
    final: int = 0
    problems: list[str] | None = None
    notes: list[str] = dc_field(default_factory=list)
    not_final_reason: str = ""

    @property
    def all_final(self) -> bool:
        return self.count == self.final

    @property
    def ok(self) -> bool:
        return (
            self.count > 0
            and self.all_final
            and self.anchored_size == self.log_size
            and not self.problems
        )


def _log_size(cfg: CollectorConfig) -> tuple[int, int]:
    """(size of the newest checkpoint, number of checkpoints signed)."""
    from anchor.evidence import EvidenceLog

    db = open_db(cfg.db_path)
    try:
        checkpoints = EvidenceLog.open(db, cfg.log_origin, key_file=None).checkpoints()
    finally:
        db.close()
    size = max((c.checkpoint.size for c in checkpoints), default=0)
    return size, len(checkpoints)


def _wait_views(
    cfg: CollectorConfig,
    chain: str,
    done: Callable[[list[AnchorView]], bool],
    timeout: float,
) -> list[AnchorView]:
    from anchor.service import anchor_views

    deadline = time.monotonic() + timeout
    while True:
        views = [v for v in anchor_views(cfg) if v.chain == chain]
        if done(views) or time.monotonic() > deadline:
            return views
        time.sleep(0.5)


def _log_and_anchor(
    cfg: CollectorConfig, chain: str, chain_url: str, console: Console, timeout: float = 90.0
) -> AnchorOutcome:
    """The log's final size and, when anchoring, its anchors: the last one must cover the
    whole log and every one must be final on the node."""
    out = AnchorOutcome(*_log_size(cfg))
    if chain == "none" or out.log_size == 0:
        return out
    size = out.log_size

    def covered(views: list[AnchorView]) -> bool:
        return any(v.tree_size >= size and v.state in ("included", "finalized") for v in views)

    from demo.chains import check_anchors, demo_chain

    dev_chain = demo_chain(chain)
    console.print(f"waiting for the checkpoint of size {size} to be anchored…")
    views = _wait_views(cfg, chain, covered, timeout)
    if dev_chain.settle_note and covered(views):
        target = max(v.block_number or 0 for v in views if v.state in ("included", "finalized"))
        console.print(f"anchors included up to block {target}; {dev_chain.settle_note}…")
        drive = dev_chain.settle(chain_url, target)
        out.notes.append(drive.explain())
        if not drive.final:
            out.not_final_reason = drive.explain()

    def all_final(views: list[AnchorView]) -> bool:
        return covered(views) and all(v.state == "finalized" for v in views)

    views = _wait_views(cfg, chain, all_final, timeout)
    out.count = len(views)
    out.final = sum(1 for v in views if v.state == "finalized")
    out.anchored_size = max(
        (v.tree_size for v in views if v.state in ("included", "finalized")), default=0
    )
    out.problems = check_anchors(chain, chain_url, cfg.log_origin, views)
    out.notes += [f"on the node: {p}" for p in out.problems]
    if not out.all_final and not out.not_final_reason:
        out.not_final_reason = "not final: " + ", ".join(
            f"size {v.tree_size} {v.state}" + (f" ({v.reason})" if v.reason else "")
            for v in views
            if v.state != "finalized"
        )
    if out.count < out.checkpoints:
        out.notes.append(
            f"{out.count} of {out.checkpoints} checkpoints anchored: the anchorer anchors the "
            "newest checkpoint on each pass, one tx at a time; an older one it skipped is "
            "proven a prefix of an anchored one by the bundle's consistency proofs"
        )
    newest = max(views, key=lambda v: v.tree_size, default=None)
    if newest is not None:
        out.notes.append(
            f"anchored: log size {newest.tree_size} in block {newest.block_number}, "
            f"tx {newest.tx_id} ({newest.state}); {out.final} of {out.count} anchors final"
        )
    return out


def _inspect(
    cfg: CollectorConfig,
    farms: list[str],
    node_url: str | None,
    chain: str,
    report_dir: Path,
    console: Console,
) -> bool:
    """What an inspector does: export each farm's evidence, verify it against the chain node
    with the log key pinned, and write the report. True when every bundle passes."""
    from anchor.evidence import EvidenceLog
    from collector.export import export_bundle
    from inspector.report import write_report
    from inspector.verify import verify_bundle

    db = open_db(cfg.db_path)
    try:
        vkey = EvidenceLog.open(db, cfg.log_origin, cfg.log_key_file).verifier().vkey
    finally:
        db.close()
    report_dir.mkdir(parents=True, exist_ok=True)
    all_passed = True
    for farm in farms:
        bundle = export_bundle(
            cfg, farm=farm, field=None, gateway=None, start=0.0, end=time.time() + 60
        )
        (report_dir / f"{farm}.fpb").write_bytes(bundle)
        result = verify_bundle(
            bundle,
            nodes=[node_url] if node_url else [],
            chain=chain if node_url else None,
            offline=node_url is None,
            log_key=vkey,
        )
        files = write_report(result, report_dir / f"{farm}.html", pdf=False)
        console.print(f"evidence for {farm}: {result.summary_line()}  → {files.html}")
        all_passed = all_passed and result.passed
    return all_passed


def _public_key_hex(g: DemoGateway) -> str:
    from fieldproof.keys import load_key_file

    return public_key_bytes(load_key_file(g.config_path.parent / "gateway.key")).hex()
