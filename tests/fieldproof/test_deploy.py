"""The shipped deployment files hold together: scripts parse, every systemd unit runs a
`fieldproof` command that exists, with a restart policy, its own user and the hardening
settings; the compose file names the server-side services. (The units and compose stack cannot
run on these machines — no systemd as PID 1, no Docker engine — so this is what can be checked;
the Mosquitto TLS/ACL config itself runs for real in test_broker_security.py.)"""

from __future__ import annotations

import configparser
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from fieldproof.cli import cli
from fieldproof.config import CollectorConfig, load_model

PROJECT = Path(__file__).resolve().parents[2]
DEPLOY = PROJECT / "deploy"
SCRIPTS = sorted(DEPLOY.glob("**/*.sh")) + sorted((DEPLOY.parent / "scripts").glob("*"))
SERVICES = sorted(DEPLOY.glob("systemd/*.service"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(DEPLOY.parent)))
def test_shell_scripts_parse(script: Path) -> None:
    first = script.read_text().splitlines()[0] if script.stat().st_size else ""
    if first.startswith("#!") and "python" in first:  # scripts/ also holds Python tools
        compile(script.read_text(), str(script), "exec")
        return
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


# --------------------------------------------------------------------------------------------
# privilege: each service reaches only its own keys (issue 13, finding 8). No container engine
# or systemd runs here, so this reads what decides it: compose volumes, users and environment;
# the units' users, InaccessiblePaths and EnvironmentFile; the paths in the config each reads.
# --------------------------------------------------------------------------------------------

COMPOSE = DEPLOY / "compose"


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _secrets(cfg: CollectorConfig) -> dict[str, Path]:
    """Every secret a server config names, by what it is."""
    e = cfg.enrollment
    assert cfg.mqtt.tls is not None and cfg.mqtt.tls.key_file is not None
    assert e.ca_dir is not None and e.state_dir is not None and e.tls_key_file is not None
    assert cfg.anchor.key_file is not None
    return {
        "log signing key": cfg.log_key_file,
        "collector MQTT key": cfg.mqtt.tls.key_file,
        "CA key": e.ca_dir / "ca.key",
        "enrollment TLS key": e.tls_key_file,
        "token seal key": e.state_dir / "token-seal.key",
        "anchor key": cfg.anchor.key_file,
    }


OWN = {
    "collector": {"log signing key", "collector MQTT key"},
    "enroll": {"CA key", "enrollment TLS key", "token seal key"},
    "anchor": {"anchor key"},
}


def _compose() -> tuple[dict[str, Any], CollectorConfig]:
    doc = yaml.safe_load((COMPOSE / "compose.yaml").read_text())
    cfg = load_model(CollectorConfig, COMPOSE / "collector.toml", "NO_ENV_OVERRIDES_IN_TESTS")
    return doc, cfg


def _mounts(service: dict[str, Any]) -> list[tuple[str, Path]]:
    """(source: volume name or host path, target in the container)."""
    out = []
    for v in service.get("volumes", []):
        source, target = v.split(":")[:2]
        out.append((source, Path(target)))
    return out


def test_compose_services_reach_only_their_own_keys() -> None:
    doc, cfg = _compose()
    secrets = _secrets(cfg)
    services = doc["services"]
    key_volume: dict[str, str] = {}  # which volume holds each key, by the service that owns it
    for name, own in OWN.items():
        mounts = _mounts(services[name])
        for what, path in secrets.items():
            holders = [src for src, target in mounts if _under(path, [target])]
            if what in own:
                assert holders, f"{name} cannot reach its {what} ({path})"
                key_volume[what] = holders[0]
            else:
                assert not holders, f"{name} reaches the {what} ({path}) through {holders}"
    # no other long-running service mounts a volume that holds a key it does not own
    for name, svc in services.items():
        if "tools" in svc.get("profiles", []):
            continue  # the one-off pki tool of init-pki.sh, never started by `up`
        if name == "volumes-init":  # busybox: chown and chmod, then it exits
            script = svc["command"][-1]
            words = {w for w in re.split(r"[\s;&|]+", script) if w}
            assert words & {"cat", "cp", "tar", "wget", "nc"} == set() and "ports" not in svc
            assert svc["image"].startswith("busybox")
            continue
        sources = {src for src, _ in _mounts(svc)}
        for what, volume in key_volume.items():
            if volume in sources:
                assert what in OWN.get(name, set()), f"{name} mounts {volume}, which holds {what}"
    # separate users: none root, none the same
    users = {name: services[name]["user"] for name in OWN}
    assert len({u.split(":")[0] for u in users.values()}) == len(OWN)
    assert all(not u.startswith("0") for u in users.values())
    # volumes-init hands each key volume to the uid of the service that owns it
    init = services["volumes-init"]
    script = " ".join(init["command"])
    for what, volume in key_volume.items():
        owner = next(n for n, own in OWN.items() if what in own)
        target = next(t for s, t in _mounts(init) if s == volume)
        uid = users[owner].split(":")[0]
        assert re.search(rf"chown -R {uid}:\d+ {re.escape(str(target))} ", script), (what, uid)
        assert re.search(rf"chmod 0700 {re.escape(str(target))}\b", script), what


def test_compose_secrets_in_the_environment_go_only_where_needed() -> None:
    doc, cfg = _compose()
    services = doc["services"]
    for name, svc in services.items():
        assert "env_file" not in svc, f"{name} gets the whole .env"
    admin = {"INFLUX_ADMIN_TOKEN", "INFLUX_ADMIN_PASSWORD"}
    for name, svc in services.items():
        env = " ".join(str(v) for v in (svc.get("environment") or {}).values())
        used = set(re.findall(r"\$\{(\w+)", env))
        if name != "influxdb":
            assert not used & admin, f"{name} gets the InfluxDB admin credentials"
    # the collector writes with a login that may only write the bucket, and has no other
    influx = cfg.influx
    assert influx.username == "collector" and influx.password_env is not None
    assert influx.token_env is None and not influx.create_database
    env = services["collector"]["environment"]
    assert set(env) == {influx.password_env}
    assert "COLLECTOR_INFLUX_PASSWORD" in env[influx.password_env]
    init = (COMPOSE / "influxdb-init" / "fieldproof.sh").read_text().replace("\\\n", " ")
    line = next(ln for ln in init.splitlines() if "--username collector" in ln)
    assert "--write-bucket" in line and "--read-bucket" not in line
    assert "all-access" not in line and "operator" not in line
    # the enrollment and anchor services get no InfluxDB credential at all
    for name in ("enroll", "anchor"):
        env_text = " ".join(str(v) for v in (services[name].get("environment") or {}).values())
        assert "INFLUX" not in env_text


def _dockerignore_re(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _excluded(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = rel.split("/")
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        rx = _dockerignore_re(pattern.lstrip("!").strip("/"))
        if any(rx.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def _dockerfile() -> list[tuple[str, list[str]]]:
    """(instruction, arguments) of the compose Dockerfile, continuation lines joined."""
    text = (COMPOSE / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), shlex.split(rest)))
    return out


def test_no_secret_can_enter_an_image_layer() -> None:
    ignore = COMPOSE / "Dockerfile.dockerignore"  # BuildKit reads it beside the Dockerfile
    patterns = [ln.strip() for ln in ignore.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]  # fmt: skip
    secret_files = [
        ".env", "deploy/compose/.env", "deploy/compose/pki/broker/server.key",
        "deploy/compose/pki/broker/ca.pem", "collector.key", "var/lib/log.key",
        "data/collector.sqlite", "data/collector.sqlite-wal", "anchor.env", ".git/config",
    ]  # fmt: skip
    for rel in secret_files:
        assert _excluded(rel, patterns), f"{rel} would be sent to the image build"
    copied = []
    for word, args in _dockerfile():
        assert word != "ADD", "ADD fetches and unpacks; COPY named paths only"
        assert word not in ("ARG", "ENV") or not re.search(
            r"TOKEN|PASSWORD|SECRET|KEY", " ".join(args), re.I
        ), f"a secret-looking {word}: {args}"
        if word == "COPY":
            sources = [a for a in args[:-1] if not a.startswith("--")]
            for src in sources:
                assert src not in (".", "./", "*"), "COPY of the whole context"
                assert ".env" not in src and not src.endswith((".key", ".pem"))
                assert (PROJECT / src).exists(), f"COPY {src}: no such path"
                assert not _excluded(src, patterns), f"COPY {src} is excluded by the ignore file"
                copied.append(src)
    # what is copied holds no secret-looking file
    for src in copied:
        base = PROJECT / src
        files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
        for f in files:
            rel = f.relative_to(PROJECT).as_posix()
            if "__pycache__" in rel:
                continue
            assert not re.search(r"(^|/)\.env|\.(key|pem|sqlite)$", rel), rel


def test_systemd_units_reach_only_their_own_keys() -> None:
    cfg = load_model(CollectorConfig, DEPLOY / "examples" / "collector.toml", "NO_ENV_IN_TESTS")
    secrets = _secrets(cfg)
    assert cfg.anchor.sponsor_key_file is not None
    secrets["anchor sponsor key"] = cfg.anchor.sponsor_key_file
    env_files = {"collector": Path("/etc/fieldproof/collector.env"),
                 "anchor": Path("/etc/fieldproof/anchor.env")}  # fmt: skip
    own = {**OWN, "anchor": {"anchor key", "anchor sponsor key"}}
    units = {name: _unit(DEPLOY / "systemd" / f"fieldproof-{name}.service")["Service"]
             for name in own}  # fmt: skip
    users = {name: svc["User"] for name, svc in units.items()}
    assert len(set(users.values())) == len(units), users
    for name, svc in units.items():
        hidden = [Path(p.lstrip("-")) for p in svc.get("InaccessiblePaths", "").split()]
        writable = [Path(p) for p in svc.get("ReadWritePaths", "").split()]
        state = [Path("/var/lib") / d for d in svc.get("StateDirectory", "").split()]
        assert svc.get("StateDirectoryMode") == "0700", name
        for what, path in secrets.items():
            if what in own[name]:
                assert not _under(path, hidden), f"{name} hides its own {what}"
                assert _under(path, writable + state), f"{name} cannot reach its {what}"
            else:
                assert _under(path, hidden), f"{name} can read the {what} ({path})"
        for owner, env_file in env_files.items():
            if owner == name:
                assert svc.get("EnvironmentFile", "").lstrip("-") == str(env_file)
            else:
                assert _under(env_file, hidden), f"{name} can read {env_file}"
                assert str(env_file) not in svc.get("EnvironmentFile", "")
    # the CRL is re-signed with the CA key: by the enrollment user, who alone can read it
    crl = _unit(DEPLOY / "systemd" / "fieldproof-crl-refresh.service")["Service"]
    assert crl["User"] == users["enroll"]
    assert _under(secrets["log signing key"], [Path(p.lstrip("-"))
                  for p in crl["InaccessiblePaths"].split()])  # fmt: skip
