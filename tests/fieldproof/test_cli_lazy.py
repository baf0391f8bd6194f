"""``fieldproof gateway run`` on a Pi loads only the gateway: the command groups of the other
users (collector, anchoring, demo) and what they pull in (rich, httpx, web3) are imported only
when their command is used. Each case runs in a fresh interpreter, so an import made by an
earlier test cannot hide one, and reads ``sys.modules`` after the command has run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from fieldproof.cli import COMMANDS, cli

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: top-level packages a gateway must not load
NOT_ON_A_GATEWAY = ("collector", "anchor", "web3", "rich", "httpx", "pygments")

PROBE = """
import json, sys
from fieldproof.cli import main
args, watched = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["fieldproof", *args]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
loaded = sorted({m.split(".")[0] for m in sys.modules} & watched)
print(json.dumps({"code": code, "loaded": loaded}))
"""


def run_fieldproof(args: list[str]) -> dict[str, object]:
    """Run ``fieldproof ARGS`` in a new interpreter: its exit code and which of
    NOT_ON_A_GATEWAY it imported."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args), json.dumps(NOT_ON_A_GATEWAY)],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=120,
        check=False,
    )
    assert out.stdout.strip(), f"no result; stderr:\n{out.stderr}"
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    result["stderr"] = out.stderr
    return result


@pytest.fixture
def gateway_config(tmp_path: Path) -> Path:
    """A gateway with a key and a simulated sensor, pointed at a port where no broker runs
    (the agent samples and spools; it never connects)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "gateway.toml"
    path.write_text(f"""key_file = "{tmp_path}/gateway.key"
data_dir = "{tmp_path}"
interval_s = 0.1

[mqtt]
host = "127.0.0.1"
port = {port}

[[sensors]]
kind = "simulated"
name = "station"
""")
    result = run_fieldproof(["gateway", "init", "--config", str(path)])
    assert result["code"] == 0, result["stderr"]
    assert result["loaded"] == [], "gateway init loaded other users' code"
    return path


def test_gateway_run_loads_no_collector_anchor_or_demo_code(
    gateway_config: Path, tmp_path: Path
) -> None:
    result = run_fieldproof(["gateway", "run", "--config", str(gateway_config), "--duration", "1"])
    assert result["code"] == 0, result["stderr"]
    assert (tmp_path / "spool.sqlite").exists(), "the agent did not run"
    assert result["loaded"] == [], f"fieldproof gateway run imported {result['loaded']}"


def test_gateway_help_loads_no_anchor_or_web3() -> None:
    """The gateway's own list mounts enroll and doctor (which use the CA code), nothing else."""
    result = run_fieldproof(["gateway", "--help"])
    assert result["code"] == 0, result["stderr"]
    loaded = result["loaded"]
    assert isinstance(loaded, list)
    assert not {"anchor", "web3", "httpx", "pygments"} & set(loaded), loaded


def test_help_still_lists_every_group() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1]
    names = [line.split()[0] for line in listed.strip().splitlines()]
    assert names == sorted(COMMANDS) == ["anchor", "collector", "demo", "export", "gateway",
                                         "log", "verify"]  # fmt: skip
    # each line carries the group's own help, so it really was loaded
    assert "Collector: verify, store and log" in listed


def test_every_group_still_runs_through_the_entry_point() -> None:
    for name in COMMANDS:
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, f"{name}: {result.output}"
    unknown = CliRunner().invoke(cli, ["gatway"])
    assert unknown.exit_code == 2 and "No such command 'gatway'" in unknown.output


def test_old_identity_import_path_still_works() -> None:
    from gateway import enroll, identity

    assert enroll.gateway_identity is identity.gateway_identity
    assert enroll.tls_paths is identity.tls_paths
    assert enroll.TlsPaths is identity.TlsPaths
    assert enroll.identity_file is identity.identity_file


def test_a_command_names_the_extra_its_install_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each command checks its role's packages up front, read from our own metadata (nested
    extras too: the collector brings the inspector's web3); an install with all of them passes."""
    import importlib.metadata

    from fieldproof import cli as cli_module

    assert cli_module.missing_packages("collector") == []
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name in ("web3", "influxdb-client"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert cli_module.missing_packages("collector") == ["influxdb-client", "web3"]
    assert cli_module.missing_packages("anchor") == ["web3"]
    assert cli_module.missing_packages("gateway") == []
    result = CliRunner().invoke(cli, ["anchor", "status"])
    assert result.exit_code != 0
    assert "pip install 'fieldproof[anchor]'" in str(result.exception) + result.output
    assert "web3" in str(result.exception) + result.output
