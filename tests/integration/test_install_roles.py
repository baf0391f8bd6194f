"""Each machine installs only its role: ``pip install .[gateway]`` into a fresh virtual
environment (as deploy/pi/install-gateway.sh does on a Pi) brings none of the server's or the
inspector's packages, and the technician's commands work from that install alone."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
#: distributions a Raspberry Pi must never compile or carry
PACKAGES = ("fieldproof", "gateway", "collector", "anchor", "inspector", "demo")
NOT_ON_A_GATEWAY = ("web3", "influxdb-client", "weasyprint", "pynacl", "coincurve", "rlp")


def test_the_pi_installer_installs_the_gateway_role() -> None:
    """What this file proves is what deploy/pi/install-gateway.sh does on a Pi."""
    script = (ROOT / "deploy" / "pi" / "install-gateway.sh").read_text()
    installs = [line for line in script.splitlines() if "/pip\" install" in line]
    assert any(line.rstrip().endswith('"${source_path}[gateway]"') for line in installs), installs


def test_gateway_role_installs_alone_and_runs(tmp_path: Path) -> None:
    # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", *PACKAGES):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [*pip, "install", "--quiet", "--disable-pip-version-check", f"{src}[gateway]"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run(
        [*pip, "list", "--format=freeze"], capture_output=True, text=True, env=env, check=True
    ).stdout.lower()
    installed = {line.split("==")[0] for line in listed.splitlines()}
    assert "paho-mqtt" in installed and "pyserial" in installed
    assert not installed & set(NOT_ON_A_GATEWAY), sorted(installed & set(NOT_ON_A_GATEWAY))

    fieldproof = str(venv / "bin" / "fieldproof")
    run = subprocess.run([fieldproof, "gateway", "--help"], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=False)  # fmt: skip
    assert run.returncode == 0 and "init" in run.stdout, run.stderr

    config = tmp_path / "gateway.toml"
    config.write_text(
        f'key_file = "{tmp_path}/gw/gateway.key"\ndata_dir = "{tmp_path}/gw"\n\n'
        '[[sensors]]\nkind = "simulated"\nname = "station"\n'
    )
    init = subprocess.run(
        [fieldproof, "gateway", "init", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert init.returncode == 0, init.stdout + init.stderr
    key = tmp_path / "gw" / "gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    # another role's command says which extra to install instead of a traceback
    verify = subprocess.run([fieldproof, "anchor", "status"], capture_output=True, text=True,
                            env=env, cwd=tmp_path, check=False)  # fmt: skip
    assert verify.returncode != 0
    assert "pip install 'fieldproof[anchor]'" in verify.stderr, verify.stderr
    assert "Traceback" not in verify.stderr
