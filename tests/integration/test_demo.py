"""The README's promise: `fieldproof demo` runs the whole path on this machine and exits 0 only
when every published reading is verified, in InfluxDB and in the log, every anchor of the log is
final on the chain the demo started, and the exported evidence verifies against that chain.

* the default chain: a real VeChainThor node (``thor solo``, built by scripts/peers), whose
  anchors the demo makes final by moving the chain forward (solo finalizes by epochs);
* ``--chain evm``: a real anvil dev chain;
* ``--influx-api v2``: every reading through ``/api/v2/write`` of an InfluxDB 1.8 with auth
  on, the bucket being ``--database``; the demo's counts use the token, and so does the
  inspector's ``verify --against-influx`` run on the bundle the demo exported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fieldproof.services import InfluxDB18, PeerMissing, ServiceError

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def run_demo(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[
    dict[str, str], str, str
]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fieldproof",
            "demo",
            "--interval",
            "0.5",
            "--workdir",
            str(tmp_path),
            "--report-dir",
            str(tmp_path / "reports"),
            *args,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("demo OK"), last
    counts = dict(re.findall(r"(\w+)=(\w+)", last))
    assert int(counts["published"]) > 0
    assert counts["published"] == counts["verified"] == counts["stored"]
    assert counts["missing"] == "0"
    check_table_and_words(counts, proc.stdout, " ".join(proc.stderr.split()))
    return counts, proc.stdout, proc.stderr.replace("\n", " ")


def check_table_and_words(counts: dict[str, str], stdout: str, stderr: str) -> None:
    """The table says per gateway what it counts (messages, readings) and adds up to the
    summary line; the printed words say which counts are readings, which messages, and what
    the log's entries are beyond the messages."""
    assert "messages" in stdout and "published" in stdout and "stored" in stdout
    rows = [line.split() for line in stdout.splitlines() if line.strip().startswith("gw-")]
    assert len(rows) == int(counts["gateways"]), stdout
    columns = list(zip(*(row[2:6] for row in rows), strict=True))
    messages, published, verified, stored = ([int(v) for v in col] for col in columns)
    assert sum(messages) == int(counts["messages"])
    assert sum(published) == int(counts["published"])
    assert sum(verified) == int(counts["verified"])
    assert sum(stored) == int(counts["stored"])
    assert "published, verified and stored are readings" in stderr, stderr
    assert f"messages={counts['messages']} counts the signed messages" in stderr
    words = re.search(
        r"log_size=(\d+) counts evidence-log entries: (\d+) messages \+ (\d+) registry "
        r"event\(s\) \(the enrollment of each of the (\d+) gateways\)"
        r"(?: \+ (\d+) completeness seal)?",
        stderr,
    )
    assert words, stderr
    size, logged, events, enrolled = (int(words.group(i)) for i in range(1, 5))
    seals = int(words.group(5) or 0)
    assert size == int(counts["log_size"]) and logged == int(counts["messages"])
    assert events == enrolled == int(counts["gateways"])
    assert size == logged + events + seals


def check_anchored(counts: dict[str, str], stderr: str, chain: str) -> None:
    # every message plus the enrollments (and the collector's seals: check_table_and_words)
    # is in the log, and that whole log is anchored
    assert int(counts["log_size"]) >= int(counts["messages"]) + int(counts["gateways"])
    assert counts["anchored_size"] == counts["log_size"]
    assert int(counts["anchors"]) >= 1 and counts["final"] == counts["anchors"]
    assert counts["chain"] == chain
    # the inspector's side: the farm's bundle verified against the chain
    assert re.search(rf"evidence for north-farm: PASS: .* anchored on {chain}", stderr), stderr


@pytest.mark.timeout(300)
def test_demo_default_runs_on_a_thor_solo_node(tmp_path: Path) -> None:
    counts, _, stderr = run_demo(tmp_path, "--gateways", "3", "--duration", "8")
    check_anchored(counts, stderr, "thor")
    # what made the anchors final is said, not assumed
    assert "thor solo finalizes by epochs" in stderr
    assert re.search(r"finalized is block (\d+), at or past every anchor", stderr)
    assert "of " + counts["anchors"] + " anchors final" in stderr
    assert "PASS" in (tmp_path / "reports" / "north-farm.html").read_text()
    assert (tmp_path / "reports" / "river-farm.fpb").stat().st_size > 0


@pytest.mark.timeout(300)
def test_demo_on_an_evm_dev_chain(tmp_path: Path) -> None:
    counts, _, stderr = run_demo(
        tmp_path, "--chain", "evm", "--gateways", "2", "--duration", "6"
    )
    check_anchored(counts, stderr, "evm")
    assert (tmp_path / "reports" / "north-farm.fpb").stat().st_size > 0
    assert "PASS" in (tmp_path / "reports" / "north-farm.html").read_text()


@pytest.mark.timeout(300)
def test_demo_writes_through_the_v2_api_of_influxdb_18_with_auth(tmp_path: Path) -> None:
    try:
        influx = InfluxDB18(tmp_path / "influx18", auth=("demo-admin", "dem0-secret"))
        influx.start()
    except (PeerMissing, ServiceError) as exc:
        pytest.fail(str(exc), pytrace=False)  # fail, never skip: scripts/test builds the peers
    try:
        counts, _, stderr = run_demo(
            tmp_path / "demo",
            "--chain",
            "none",
            "--gateways",
            "2",
            "--duration",
            "6",
            "--influx-url",
            influx.url,
            "--influx-api",
            "v2",
            "--influx-token",
            influx.token,
            "--database",
            "demo_v2",
        )
        assert counts["influx"] == "v2" and counts["chain"] == "none"
        assert "(v2 API)" in stderr
        # the server's own count, as its admin: every reading went to the bucket
        series = influx.query('SELECT count("seq") FROM /.*/ GROUP BY "gateway"', db="demo_v2")
        total = 0
        for s in series:
            rows = s["values"]
            assert isinstance(rows, list)
            total += int(rows[0][1])
        assert total == int(counts["stored"])
        # and the inspector compares the exported evidence with that database, with the token
        bundle = tmp_path / "demo" / "reports" / "north-farm.fpb"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "fieldproof",
                "verify",
                str(bundle),
                "--offline",
                "--json",
                "--against-influx",
                influx.url,
                "--database",
                "demo_v2",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "FIELDPROOF_INFLUX_TOKEN": influx.token},
        )
        result = json.loads(proc.stdout)
        cmp = result["influx"]
        assert cmp["error"] is None, cmp
        assert cmp["evidence_points"] > 0
        assert cmp["matched"] == cmp["evidence_points"] == cmp["database_points"]
        assert (cmp["changed"], cmp["added"], cmp["deleted"]) == (0, 0, 0)
        assert "dem0-secret" not in proc.stdout + proc.stderr
    finally:
        influx.stop()
