"""One collector per data directory: ``<data_dir>/collector.lock`` (an exclusive flock taken by
``open_db(…, lock=True)``). A second collector is refused with a message naming the pid that
holds the lock and what to do; read-only commands and registry changes never need it; the
kernel frees it when the holder dies, even by SIGKILL, so no stale lock is ever left behind.
The holder is a real second process (flock conflicts only between open files)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.registry import Registry
from collector.store import CollectorStore
from fieldproof.cli import cli
from fieldproof.datadir import LOCK_FILE, DataDirLocked, open_db
from fieldproof.wire import gateway_id_for, public_key_bytes

PROJECT_ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from pathlib import Path
from fieldproof.datadir import open_db
db = open_db(Path(sys.argv[1]), lock=True)
print("locked", flush=True)
sys.stdin.read()  # hold the lock until killed or stdin closes
"""


def hold(db_path: Path) -> subprocess.Popen[str]:
    """A process holding the lock on ``db_path``'s directory, as a running collector does."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != "locked":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"the holder did not take the lock: {line!r}\n{err}")
    return proc


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "collector"
    d.mkdir()
    (tmp_path / "collector.toml").write_text(f'data_dir = "{d}"\n')
    return d


def test_second_collector_is_refused_and_sigkill_frees_the_lock(data_dir: Path) -> None:
    db_path = data_dir / "collector.sqlite"
    first = hold(db_path)
    try:
        holder = json.loads((data_dir / LOCK_FILE).read_text())
        assert holder["pid"] == first.pid  # `cat collector.lock` says who runs here
        with pytest.raises(DataDirLocked) as refused:
            open_db(db_path, lock=True)
        text = str(refused.value)
        assert f"pid {first.pid}" in text and str(data_dir) in text
        assert "fork the evidence log" in text
        assert "systemctl stop fieldproof-collector" in text and f"kill {first.pid}" in text
        # refused means untouched: the holder's record is intact
        assert json.loads((data_dir / LOCK_FILE).read_text())["pid"] == first.pid
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    assert first.returncode == -signal.SIGKILL
    db = open_db(db_path, lock=True)  # the kernel dropped the dead holder's lock
    try:
        assert json.loads((data_dir / LOCK_FILE).read_text())["pid"] == os.getpid()
    finally:
        db.close()
    second = hold(db_path)  # closing the connection released it
    second.kill()
    second.communicate()


def test_read_only_commands_and_registry_changes_need_no_lock(
    data_dir: Path, tmp_path: Path
) -> None:
    db_path = data_dir / "collector.sqlite"
    holder = hold(db_path)
    try:
        db = open_db(db_path)
        assert CollectorStore(db).accepted_count() == (0, 0)
        db.close()
        config = str(tmp_path / "collector.toml")
        status = CliRunner().invoke(cli, ["collector", "status", "--config", config])
        assert status.exit_code == 0, status.output
        assert "accepted: 0 messages" in status.output
        pub = public_key_bytes(Ed25519PrivateKey.generate())
        add = CliRunner().invoke(
            cli,
            ["collector", "devices", "add", "--config", config, "--id", gateway_id_for(pub),
             "--public-key", pub.hex(), "--farm", "f", "--field", "x"],
        )  # fmt: skip
        assert add.exit_code == 0, add.output
        listing = CliRunner().invoke(cli, ["collector", "devices", "list", "--config", config])
        assert listing.exit_code == 0 and gateway_id_for(pub) in listing.output
    finally:
        holder.kill()
        holder.communicate()


def test_a_copied_data_directory_is_called_out(
    data_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A directory copied while its collector runs carries the same log key and origin: the
    copy's collector is told (it cannot know whether the original still runs)."""
    holder = hold(data_dir / "collector.sqlite")
    try:
        copy = tmp_path / "copy"
        shutil.copytree(data_dir, copy)
        with caplog.at_level(logging.WARNING, logger="fieldproof.collector"):
            db = open_db(copy / "collector.sqlite", lock=True)
        db.close()
        warning = " ".join(r.getMessage() for r in caplog.records)
        assert f"last held by a collector for {data_dir.resolve()}" in warning
        assert "fork the evidence log" in warning
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fieldproof.collector"):
            open_db(copy / "collector.sqlite", lock=True).close()  # its own now: no warning
        assert not caplog.records
    finally:
        holder.kill()
        holder.communicate()


def test_registry_on_a_locked_database_from_this_process(data_dir: Path) -> None:
    """The collector's own connection (lock=True) is a normal connection otherwise."""
    db = open_db(data_dir / "collector.sqlite", lock=True)
    try:
        pub = public_key_bytes(Ed25519PrivateKey.generate())
        Registry(db).add(gateway_id_for(pub), pub, "f", "x")
        assert len(Registry(db).all()) == 1
    finally:
        db.close()
