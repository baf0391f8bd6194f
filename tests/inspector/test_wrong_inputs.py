"""Wrong inputs are named as such, once, through the CLI an inspector runs (issue 16 #4):
a wrong ``--log-key`` is one ``log_key_mismatch`` (not an error per entry, never ``None`` in
the output); ``--against-influx`` on a database without the bundle's gateways says "wrong
database?" (not that every point was deleted); a cut-short file says so with its size (not a
CBOR error under ``0/0 messages``). Collector state from the collector's own classes
(tests/support/bundles.Farm); the InfluxDB is the suite's real influxd."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from collector.export import export_bundle
from fieldproof.services import InfluxDB
from inspector.cli import verify_command
from inspector.verify import cbor_size_needed
from tests.support.bundles import Farm, rewrite

T0 = time.time() - 7200
MESSAGES = 70


@dataclass
class Exported:
    farm: Farm
    path: Path
    data: bytes
    gateway: str


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    root = tmp_path_factory.mktemp("wrong-inputs")
    farm = Farm(root / "collector")
    g = farm.enroll("farm-a", "north")
    farm.run(g, T0, MESSAGES)
    farm.checkpoint()
    data = export_bundle(farm.config, farm="farm-a", field=None, gateway=None, start=T0,
                         end=T0 + 7000)
    path = root / "farm-a.fpb"
    path.write_bytes(data)
    yield Exported(farm, path, data, g.gateway)
    farm.close()


def verify(*args: str) -> Result:
    return CliRunner().invoke(verify_command, [*args, "--offline"])


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.strip().startswith("ERROR")]


def test_the_right_key_passes(exported: Exported) -> None:
    """The baseline the other tests differ from: the same bundle with its log's key."""
    r = verify(str(exported.path), "--log-key", exported.farm.vkey)
    assert r.exit_code == 0, r.output
    assert f"{MESSAGES}/{MESSAGES} messages" in r.output


@pytest.mark.parametrize("collector_id", ["test-collector", "another-collector"],
                         ids=["same log name, another key", "another log's key"])
def test_a_wrong_log_key_is_one_finding_that_names_it(
        exported: Exported, tmp_path: Path, collector_id: str) -> None:
    other = Farm(tmp_path / "other", collector_id=collector_id)
    try:
        r = verify(str(exported.path), "--log-key", other.vkey)
    finally:
        other.close()
    assert r.exit_code == 1, r.output
    errors = error_lines(r.output)
    assert len(errors) == 1, r.output
    assert "log_key_mismatch" in errors[0]
    assert "not signed by the log key you gave" in errors[0] and "check --log-key" in errors[0]
    assert f"fieldproof.example/log/{collector_id}" in errors[0]
    assert "None" not in r.output
    assert f"0/{MESSAGES} messages" in r.output and "1 error(s)" in r.output


def test_a_forged_checkpoint_under_the_right_name_is_still_a_bad_checkpoint(
        exported: Exported) -> None:
    """Not every failing checkpoint is a key mistake: notes of this log's name that no key
    opens are the bundle's fault and keep their own findings."""
    def garble(o: dict[str, object]) -> None:
        for c in o["checkpoints"]:  # type: ignore[attr-defined]
            note = bytearray(c["note"])
            note[-5] ^= 1  # inside the signature's base64
            c["note"] = bytes(note)

    forged = exported.path.with_name("forged.fpb")
    forged.write_bytes(rewrite(exported.data, garble))
    r = verify(str(forged), "--log-key", exported.farm.vkey)
    assert r.exit_code == 1
    assert "log_key_mismatch" not in r.output
    assert "checkpoint_invalid" in r.output


def test_a_cut_short_file_says_copy_it_again(exported: Exported) -> None:
    cut = exported.path.with_name("cut.fpb")
    kept = len(exported.data) * 2 // 3
    cut.write_bytes(exported.data[:kept])
    r = verify(str(cut), "--log-key", exported.farm.vkey)
    assert r.exit_code == 1
    first = r.output.splitlines()[0]
    assert first.startswith(f"FAIL: the bundle cannot be read: the file is cut short ({kept:,} "
                            "of at least "), first
    assert first.endswith("bytes): copy it again")
    assert "0/0 messages" not in r.output and "CBOR" not in r.output
    assert [line.split()[1] for line in error_lines(r.output)] == ["malformed_bundle:"]
    # the JSON says the same
    j = json.loads(verify(str(cut), "--json").output)
    assert "cut short" in j["summary"] and j["findings"][0]["code"] == "malformed_bundle"


def test_the_size_a_cut_item_needs_is_a_true_lower_bound(exported: Exported) -> None:
    data = exported.data
    assert cbor_size_needed(data) is None  # whole
    for kept in (1, 2, 17, len(data) // 2, len(data) - 1):
        needs = cbor_size_needed(data[:kept])
        assert needs is not None and kept < needs <= len(data), kept


def test_a_broken_file_that_is_not_cut_keeps_the_decoders_reason(exported: Exported) -> None:
    bad = exported.path.with_name("bad.fpb")
    bad.write_bytes(exported.data + b"\x00")
    r = verify(str(bad))
    assert r.exit_code == 1
    assert "cut short" not in r.output and "after its CBOR item" in r.output


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxDB]:
    db = InfluxDB(tmp_path_factory.mktemp("influx-wrong-db"))
    db.start()
    try:
        yield db
    finally:
        db.stop()


def write_points(url: str, database: str, lines: list[str]) -> None:
    httpx.post(f"{url}/query", data={"q": f"CREATE DATABASE {database}"},
               timeout=10).raise_for_status()
    httpx.post(f"{url}/write", params={"db": database, "precision": "s"},
               content="\n".join(lines), timeout=10).raise_for_status()


def test_against_a_database_without_these_gateways_says_wrong_database(
        exported: Exported, influx: InfluxDB) -> None:
    # another farm's database: the same farm name, other gateways
    write_points(influx.url, "elsewhere", [
        f"soil_moisture,farm=farm-a,field=north,gateway=gw-0000000000000000,sensor=s1 "
        f"value=0.3,seq=1i {int(T0) + 60 * i}" for i in range(5)])
    r = verify(str(exported.path), "--log-key", exported.farm.vkey,
               "--against-influx", influx.url, "--database", "elsewhere")
    assert r.exit_code == 1
    errors = error_lines(r.output)
    assert len(errors) == 1, r.output
    assert "influx_no_points" in errors[0]
    assert "no points of these gateways in database 'elsewhere'" in errors[0]
    assert "wrong database?" in errors[0] and exported.gateway in errors[0]
    assert "deleted compared" not in r.output and "influx_added" not in r.output


def test_a_database_with_some_of_their_points_still_shows_deletions(
        exported: Exported, influx: InfluxDB) -> None:
    """The wrong-database message must not hide real deletions: once any point of the
    bundle's gateways is there, every missing one is counted as deleted."""
    write_points(influx.url, "thinned", [
        f"soil_moisture,farm=farm-a,field=north,gateway={exported.gateway},sensor=s1 "
        f"value=0.3,seq=1i {int(T0) + 600}"])
    r = verify(str(exported.path), "--log-key", exported.farm.vkey,
               "--against-influx", influx.url, "--database", "thinned")
    assert r.exit_code == 1
    assert "influx_no_points" not in r.output
    assert "influx_deleted" in r.output
