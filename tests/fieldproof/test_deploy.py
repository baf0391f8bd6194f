"""The shipped deployment files hold together: scripts parse, every systemd unit runs a
`fieldproof` command that exists, with a restart policy, its own user and the hardening
settings; the compose file names the server-side services. (The units and compose stack cannot
run on these machines — no systemd as PID 1, no Docker engine — so this is what can be checked;
the Mosquitto TLS/ACL config itself runs for real in test_broker_security.py.)"""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from fieldproof.cli import cli

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SCRIPTS = sorted(DEPLOY.glob("**/*.sh")) + sorted((DEPLOY.parent / "scripts").glob("*"))
SERVICES = sorted(DEPLOY.glob("systemd/*.service"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY.parent)))
def test_shell_scripts_parse(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def _command_exists(argv: list[str]) -> bool:
    group: click.Command = cli
    for word in argv:
        if word.startswith("-"):
            break
        if not isinstance(group, click.Group):
            return False
        sub = group.get_command(click.Context(group), word)
        if sub is None:
            return False
        group = sub
    return True


def test_units_exist() -> None:
    names = {p.name for p in SERVICES}
    assert {
        "fieldproof-gateway.service",
        "fieldproof-collector.service",
        "fieldproof-anchor.service",
    } <= names


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_service_units(unit: Path) -> None:
    svc = _unit(unit)["Service"]
    argv = shlex.split(svc["ExecStart"])
    if Path(argv[0]).name == "fieldproof":
        assert _command_exists(argv[1:]), f"{unit.name}: no such command {argv[1:]}"
        assert svc.get("User"), f"{unit.name} runs as root"
        assert svc.get("NoNewPrivileges") == "yes"
        assert svc.get("ProtectSystem") == "strict"
        assert svc.get("PrivateTmp") == "yes"
        if svc.get("Type", "simple") != "oneshot":
            assert svc.get("Restart") in ("always", "on-failure")


def test_compose_names_the_server_side() -> None:
    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = set(doc["services"])
    assert {"mosquitto", "influxdb", "grafana"} <= services
    assert any("collector" in s for s in services)
