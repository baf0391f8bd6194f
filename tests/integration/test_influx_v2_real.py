"""The collector's InfluxDB writers against the real InfluxDB 1.8.10 (``InfluxDB18``, built by
scripts/peers), on the v2 endpoint (``/api/v2/write``, token ``user:password``, bucket
``db[/rp]``) and, where the answer differs, the v1 one.

What the real server answers and what the collector must make of it:

* a missing database — 404 ``database not found``: created through ``/query`` with the same
  token and written; held (retried, not refused) when the user may not create it or
  ``create_database = false``, written once an admin creates it; a missing retention policy
  (500) is held the same way;
* a field type conflict — 400 ``partial write … dropped=N``: the good points are kept, exactly
  the refused ones are found and counted, every message stays in the evidence log;
* a wrong token — 401: a credential problem, one ERROR naming ``[influx] token_env``, retried
  with backoff, nothing committed, acknowledged or counted as refused, and everything written
  once the credentials work;
* the server stopped and started again (same data directory) under a running collector
  process: nothing lost, nothing refused.

A missing peer binary fails these tests with the message of ``peer_binary`` (run
scripts/peers); they never skip. Answers 1.8 cannot give (2.x's bucket-not-found, 422, 503,
429) are in tests/collector/test_influx_v2.py."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from anchor.evidence import EvidenceLog
from collector.influx import (
    InfluxCredentialsRefused,
    InfluxRejected,
    InfluxUnavailable,
    PointWriter,
    V1Writer,
    V2Writer,
    write_salvaging,
)
from collector.ingest import BatchResult, Incoming, Ingestor
from collector.registry import Registry
from collector.store import CollectorStore
from demo import TOKEN_ENV, influx_counts, write_collector_config
from fieldproof import wire
from fieldproof.config import InfluxConfig
from fieldproof.datadir import open_db
from fieldproof.services import InfluxDB, InfluxDB18, Mosquitto, PeerMissing, ServiceError
from tests.support.stack import Stack, wait_until

pytestmark = pytest.mark.integration

ADMIN = ("admin", "adm1n-pw")
ENV = "FIELDPROOF_TEST_V2_TOKEN"
T0 = 1_700_000_000  # sample times of the test readings (one shard group)
S = 10**9


def _influx(workdir: Path, auth: tuple[str, str] | None = None) -> InfluxDB18:
    try:
        db = InfluxDB18(workdir, auth=auth)
    except PeerMissing as e:
        missing = str(e)
    else:
        try:
            db.start()
        except ServiceError as e:
            failed = str(e)
        else:
            return db
        pytest.fail(failed, pytrace=False)
    pytest.fail(missing, pytrace=False)  # fail, never skip: scripts/test builds the peers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB18]:
    db = _influx(tmp_path_factory.mktemp("influx18"), auth=ADMIN)
    yield db
    db.stop()


def v2(
    server: InfluxDB18,
    token: str,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    create_database: bool = True,
) -> V2Writer:
    monkeypatch.setenv(ENV, token)
    return V2Writer(
        InfluxConfig(
            api="v2",
            url=server.url,
            bucket=bucket,
            token_env=ENV,
            timeout_s=10,
            create_database=create_database,
        )
    )


def values(server: InfluxDB18, db: str, q: str) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for series in server.query(q, db=db):
        got = series.get("values", [])
        assert isinstance(got, list)
        rows += got
    return rows


def databases(server: InfluxDB18) -> set[str]:
    return {str(row[0]) for row in values(server, "", "SHOW DATABASES")}


class Recording:
    """A PointWriter that passes everything to a real writer and keeps what happened."""

    def __init__(self, inner: PointWriter) -> None:
        self.inner = inner
        self.calls = 0
        self.errors: list[Exception] = []

    def write(self, lines: Sequence[str]) -> None:
        self.calls += 1
        try:
            self.inner.write(lines)
        except Exception as exc:
            self.errors.append(exc)
            raise

    def close(self) -> None:
        self.inner.close()


# ----------------------------------------------------------------------------- missing database


def test_missing_database_is_created_with_the_same_token(
    server: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "made_by_v2" not in databases(server)
    w = v2(server, server.token, "made_by_v2/autogen", monkeypatch)
    w.write([f"reading,gateway=gw-1 value=1.5 {T0 * S}"])
    w.close()
    assert "made_by_v2" in databases(server)
    assert values(server, "made_by_v2", "SELECT value FROM reading") == [[T0 * S, 1.5]]


def test_missing_database_the_user_may_not_create_is_held_not_refused(
    server: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.query("CREATE USER \"writer\" WITH PASSWORD 'wr1ter'", db="")
    w = v2(server, "writer:wr1ter", "held", monkeypatch)
    lines = [f"reading,gateway=gw-2 value={i} {(T0 + i) * S}" for i in range(3)]
    for _ in range(2):  # held every time, never counted as refused data
        with pytest.raises(InfluxUnavailable) as held:
            write_salvaging(w, lines)
        assert not isinstance(held.value, InfluxCredentialsRefused)
        assert held.value.kind == "database_missing"
        assert 'CREATE DATABASE "held"' in str(held.value)
        assert "requires admin privilege" in str(held.value)  # the server's own words
    server.create_database("held")
    server.query('GRANT WRITE ON "held" TO "writer"', db="")
    assert write_salvaging(w, lines) == 0
    w.close()
    assert [r[1] for r in values(server, "held", "SELECT value FROM reading")] == [0, 1, 2]


def test_missing_database_with_create_database_off_is_held(
    server: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = v2(server, server.token, "not_made", monkeypatch, create_database=False)
    with pytest.raises(InfluxUnavailable, match="create_database = false") as held:
        w.write([f"reading value=1 {T0 * S}"])
    w.close()
    assert held.value.kind == "database_missing"
    assert "not_made" not in databases(server)


def test_missing_retention_policy_is_held_and_named(
    server: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = v2(server, server.token, "with_rp/nope", monkeypatch)
    with pytest.raises(InfluxUnavailable, match="retention policy not found: nope") as held:
        write_salvaging(w, [f"reading value=1 {T0 * S}"])
    w.close()
    assert held.value.kind == "retention_policy" and "[influx] bucket" in str(held.value)


# ----------------------------------------------------------------------------- type conflicts


def test_partial_write_finds_exactly_the_refused_lines(
    server: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1.8 keeps the good points of a batch and answers 400 'partial write … dropped=N'; the
    salvage bisects to exactly the N refused lines with fewer requests than one per line."""
    server.create_database("conflict_w")
    w = Recording(v2(server, server.token, "conflict_w", monkeypatch))
    w.write([f"kind,gateway=x value=0.5 {T0 * S}"])  # value is a float in this shard now
    good = [f"kind,gateway=gw-3 value={i}.5 {(T0 + i) * S}" for i in range(1, 41)]
    bad = [f'kind,gateway=gw-3 value="oops" {(T0 + 100 + i) * S}' for i in range(2)]
    lines = good[:13] + bad[:1] + good[13:30] + bad[1:] + good[30:]
    w.calls, w.errors = 0, []
    refused: list[str] = []
    assert write_salvaging(w, lines, refused) == 2
    assert refused == bad
    first = str(w.errors[0])
    assert "partial write" in first and "field type conflict" in first and "dropped=2" in first
    assert all(isinstance(e, InfluxRejected) for e in w.errors)
    assert w.calls < len(lines)
    stored = values(server, "conflict_w", "SELECT value FROM kind WHERE gateway = 'gw-3'")
    assert [r[1] for r in stored] == [i + 0.5 for i in range(1, 41)]
    w.close()


class Rig:
    """The collector's message path without MQTT: store, evidence log, registry, one
    registered gateway, an Ingestor writing through ``writer``."""

    def __init__(self, workdir: Path, writer: PointWriter) -> None:
        self.db = open_db(workdir / "collector.sqlite")
        self.evidence = EvidenceLog.open(self.db, "test.example/log/c1", workdir / "log.key")
        self.registry = Registry(self.db, self.evidence)
        self.store = CollectorStore(self.db, self.evidence)
        self.key = Ed25519PrivateKey.generate()
        pub = wire.public_key_bytes(self.key)
        self.gateway = wire.gateway_id_for(pub)
        self.registry.add(self.gateway, pub, "farm", "field")
        self.log_size_at_start = self.evidence.log.size()
        self.ingestor = Ingestor(self.store, self.registry, writer)

    def batch(self, n: int) -> list[Incoming]:
        out = []
        for seq in range(1, n + 1):
            t = T0 + seq
            readings = (
                wire.Reading("s1", "soil_moisture", "/", 0.30, t),
                wire.Reading("s1", "soil_ec", "S/m", 0.12, t),
                wire.Reading("s1", "air_temperature", "Cel", 20.0, t),
            )
            payload = wire.Payload(self.gateway, seq, 1, readings)
            out.append(
                Incoming(
                    f"fieldproof/v1/{self.gateway}/readings", wire.encode_message(payload, self.key)
                )
            )
        return out

    def count(self, server: InfluxDB18, db: str, measurement: str) -> int:
        rows = values(
            server, db, f"SELECT count(value) FROM {measurement} WHERE gateway = '{self.gateway}'"
        )
        return int(rows[0][1]) if rows else 0

    def close(self) -> None:
        self.db.close()


def test_collector_keeps_good_points_and_counts_exactly_the_conflicting_ones(
    server: InfluxDB18, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """soil_ec's ``value`` is already a string in this shard (another writer put it there):
    every soil_ec reading of the batch is refused by 1.8, everything else is stored, the
    count is exactly the soil_ec points, and every message is accepted into the log. The
    salvage splits the refused batch by measurement; soil_ec's part is refused whole, as its
    answer (dropped=6 of 6 lines) says, without a request per line."""
    server.create_database("conflict_c")
    seed = v2(server, server.token, "conflict_c", monkeypatch)
    seed.write([f'soil_ec,gateway=someone-else value="broken" {T0 * S}'])
    seed.close()
    writer = Recording(v2(server, server.token, "conflict_c", monkeypatch))
    rig = Rig(tmp_path, writer)
    try:
        result = rig.ingestor.process(rig.batch(6))
        assert (result.accepted, result.readings, result.influx_refused) == (6, 18, 6)
        # the batch, then one write per measurement: soil_ec's answer says dropped=6 of 6
        assert writer.calls == 4
        assert "dropped=6" in str(writer.errors[-1]) and len(writer.errors) == 2
        assert rig.store.counters()["influx_refused"] == 6
        assert rig.store.accepted_count() == (6, 18)
        assert rig.evidence.log.size() == rig.log_size_at_start + 6  # all kept as evidence
        assert rig.count(server, "conflict_c", "soil_moisture") == 6
        assert rig.count(server, "conflict_c", "air_temperature") == 6
        assert rig.count(server, "conflict_c", "soil_ec") == 0
    finally:
        rig.close()


# ----------------------------------------------------------------------------- credentials


def test_wrong_token_is_a_credential_problem_held_until_it_works(
    server: InfluxDB18,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The collector's token names a user the server does not know yet: 401 on every try,
    retried with backoff, one ERROR naming [influx] token_env, nothing committed (so nothing
    acknowledged or receipted) and nothing counted as refused. Once the admin creates that
    user, the same batch goes through."""
    caplog.set_level(logging.INFO)
    server.create_database("creds")
    writer = Recording(v2(server, "collector:c0llector", "creds", monkeypatch))
    rig = Rig(tmp_path, writer)
    outcome: list[BatchResult] = []
    worker = threading.Thread(target=lambda: outcome.append(rig.ingestor.process(rig.batch(4))))
    try:
        worker.start()
        wait_until(lambda: len(writer.errors) >= 4, 30, "four refused attempts")
        assert all(isinstance(e, InfluxCredentialsRefused) for e in writer.errors)
        assert "401" in str(writer.errors[0]) and "authorization failed" in str(writer.errors[0])
        assert worker.is_alive() and not outcome
        check = sqlite3.connect(f"file:{tmp_path / 'collector.sqlite'}?mode=ro", uri=True)
        try:
            assert check.execute("SELECT count(*) FROM received").fetchone()[0] == 0
            assert check.execute("SELECT count(*) FROM counters").fetchone()[0] == 0
        finally:
            check.close()
        assert rig.count(server, "creds", "soil_moisture") == 0

        server.query("CREATE USER \"collector\" WITH PASSWORD 'c0llector'", db="")
        server.query('GRANT ALL ON "creds" TO "collector"', db="")
        worker.join(60)
        assert not worker.is_alive()
    finally:
        rig.ingestor.stop_event.set()
        worker.join(10)
    (result,) = outcome
    assert (result.accepted, result.influx_refused) == (4, 0)
    assert rig.store.counters().get("influx_refused", 0) == 0
    assert rig.count(server, "creds", "soil_moisture") == 4
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "[influx] token_env = 'FIELDPROOF_TEST_V2_TOKEN'" in message
    assert "holding acks" in message
    rig.close()


def test_v1_path_wrong_password_is_a_credential_problem_too(
    server: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.create_database("creds_v1")
    monkeypatch.setenv("FIELDPROOF_TEST_V1_PASSWORD", "not-it")
    w = V1Writer(
        InfluxConfig(
            url=server.url,
            database="creds_v1",
            username="admin",
            password_env="FIELDPROOF_TEST_V1_PASSWORD",
        )
    )
    with pytest.raises(InfluxCredentialsRefused) as refused:
        write_salvaging(w, [f"reading value=1 {T0 * S}", f"reading value=2 {(T0 + 1) * S}"])
    w.close()
    text = str(refused.value)
    assert "401" in text and "[influx] username = 'admin'" in text
    assert "password_env = 'FIELDPROOF_TEST_V1_PASSWORD' (set" in text


def test_unset_token_variable_is_named(
    server: InfluxDB18, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FIELDPROOF_TEST_UNSET_TOKEN", raising=False)
    unset = "FIELDPROOF_TEST_UNSET_TOKEN"
    w = V2Writer(InfluxConfig(api="v2", url=server.url, bucket="fieldproof", token_env=unset))
    with pytest.raises(InfluxCredentialsRefused) as refused:
        write_salvaging(w, [f"reading value=1 {T0 * S}"])
    w.close()
    text = str(refused.value)
    assert "unable to parse authentication credentials" in text  # 1.8's words for no token
    assert "[influx] token_env = 'FIELDPROOF_TEST_UNSET_TOKEN' (NOT set" in text


def test_v2_api_against_a_server_without_it_is_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's InfluxDB 1.6 has no /api/v2/write: 404, held (not every line refused)."""
    with InfluxDB(tmp_path / "influx16") as old:
        assert isinstance(old, InfluxDB)
        w = V2Writer(InfluxConfig(api="v2", url=old.url, bucket="fieldproof"))
        with pytest.raises(InfluxUnavailable) as held:
            write_salvaging(w, [f"reading value=1 {T0 * S}", f"reading value=2 {T0 * S + 1}"])
        w.close()
    assert held.value.kind == "not_found" and "check [influx] url and api" in str(held.value)


# ----------------------------------------------------------------------------- down and back


@pytest.mark.timeout(180)
def test_server_stopped_and_started_under_a_running_collector_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collector process writes through /api/v2/write (auth on) while a gateway process
    publishes every 50 ms; InfluxDB 1.8 is stopped, and started again on the same data
    directory. Every published reading ends up in InfluxDB once, none is refused."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    influx = _influx(tmp_path / "influxdb", auth=ADMIN)
    stack = Stack(tmp_path, broker, influx)
    try:
        write_collector_config(
            tmp_path,
            "127.0.0.1",
            broker.port,
            influx.url,
            "downandback",
            influx_api="v2",
            influx_token=influx.token,
        )
        monkeypatch.setenv(TOKEN_ENV, influx.token)  # the collector process's environment
        g = stack.add_gateway(interval=0.05)
        stack.start_collector()
        stack.start_gateway(g)
        wait_until(lambda: stack.accepted_readings() > 50, 60, "first readings stored")
        influx.stop()
        wait_until(
            lambda: "holding acks" in stack.log("collector.log"), 60, "the collector to hold"
        )
        held_at = sum(stack.published().values())
        wait_until(
            lambda: sum(stack.published().values()) > held_at + 20,
            60,
            "the gateway to publish on while InfluxDB is down",
        )
        influx.start()
        stack.wait_holds_spooled(120)  # the collector catches up
        stack.stop_gateways()
        stack.wait_caught_up()
        published = stack.published()
        stored = influx_counts(influx.url, "downandback", influx.token, "v2")
        assert sum(published.values()) > held_at > 0
        assert stored == published
        store = stack.store()
        try:
            assert store.counters().get("influx_refused", 0) == 0
            assert store.accepted_count()[1] == sum(published.values())
            assert store.gaps() == []
        finally:
            store.db.close()
        log = stack.log("collector.log")
        assert log.count("holding acks") == 1, log
        assert "takes writes again" in log or "InfluxDB is back" in log
        r = httpx.get(f"{influx.url}/query", params={"q": "SHOW DATABASES"}, timeout=10)
        assert r.status_code == 401  # auth was on all along
    finally:
        stack.shutdown()
        broker.stop()
        influx.stop()
