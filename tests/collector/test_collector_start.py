"""A collector whose start fails closes what it had opened before the error: its database
connection and with it the data directory's lock, the witnesses' connection and HTTP clients,
the agronomy state, the InfluxDB writer it made. A process that tries again (a supervisor, the
demo, a test) starts at once on the same data directory. The garbage collector would not do
it: the lock is released by closing the connection, and the error's traceback keeps the
half-built collector alive (these tests keep it while they look)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import collector.service
from anchor.logkey import LogKeyError
from anchor.witness import CosigningWorker
from collector.influx import PointWriter, make_writer
from collector.service import Collector
from fieldproof.config import (
    CollectorConfig,
    InfluxConfig,
    LogConfig,
    MqttConfig,
    TlsConfig,
    WitnessConfig,
)
from fieldproof.datadir import running_collector
from fieldproof.errors import ConfigError
from fieldproof.formats.cosignature import CosignatureVerifier

WITNESS = "witness.fieldproof.example/start"


def config(data_dir: Path, mqtt: MqttConfig | None = None) -> CollectorConfig:
    """A collector with a witness (never asked here: no checkpoint is made), so a start opens
    everything it can: two database connections, witness clients, a thread per witness."""
    vkey = CosignatureVerifier(WITNESS, bytes(range(32))).vkey
    witness = WitnessConfig(name=WITNESS, url="http://127.0.0.1:9", vkey=vkey)
    return CollectorConfig(
        collector_id="c-start",
        data_dir=data_dir,
        mqtt=mqtt or MqttConfig(),
        log=LogConfig(witnesses=[witness]),
    )


def open_files(under: Path) -> list[str]:
    """The files under ``under`` this process holds open (database, WAL, lock file, ...)."""
    root = str(under.resolve()) + os.sep
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the fd listdir itself used, closed meanwhile
            continue
        if target.startswith(root):
            found.append(target[len(root) :])
    return sorted(found)


def witness_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("witness-")}


def shut(c: Collector) -> None:
    """What Collector.run closes at its end, for a collector whose MQTT loop never ran."""
    c.stop_witnesses()
    c.writer.close()
    c.agronomy.close()
    c.db.close()


def corrupt_log_key(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CollectorConfig:
    """Early: the database is open and locked when the log key cannot be read."""
    data_dir.mkdir(parents=True)
    key = data_dir / "log.key"
    key.write_bytes(b"not a key\n")
    key.chmod(0o600)
    return config(data_dir)


def missing_mqtt_ca(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CollectorConfig:
    """Late: everything but the MQTT client and the witness threads is open."""
    tls = TlsConfig(ca_file=data_dir.parent / "no-such-ca.pem")
    return config(data_dir, MqttConfig(port=8883, tls=tls))


def writer_cannot_be_made(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CollectorConfig:
    def refuse(cfg: InfluxConfig) -> PointWriter:
        raise ConfigError("no InfluxDB writer (test)")

    monkeypatch.setattr(collector.service, "make_writer", refuse)
    return config(data_dir)


def no_thread_for_a_witness(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> CollectorConfig:
    """The very last step: the system has no thread left for a witness."""

    def refuse(self: CosigningWorker) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(CosigningWorker, "start", refuse)
    return config(data_dir)


#: what fails -> (set it up, the error the start raises, its message)
FAILURES: dict[
    str, tuple[Callable[[Path, pytest.MonkeyPatch], CollectorConfig], type[Exception], str]
] = {
    "corrupt log key": (corrupt_log_key, LogKeyError, "is not a valid key"),
    "missing MQTT CA file": (missing_mqtt_ca, FileNotFoundError, "No such file"),
    "writer cannot be made": (writer_cannot_be_made, ConfigError, "no InfluxDB writer"),
    "no thread for a witness": (no_thread_for_a_witness, RuntimeError, "can't start"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_a_failed_start_closes_what_it_opened_and_the_next_start_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    data_dir = tmp_path / "data"
    make_failing, error, message = FAILURES[failure]
    before = witness_threads()
    writers: list[PointWriter] = []
    closed: list[PointWriter] = []
    real_make_writer = make_writer

    def recording_make_writer(cfg: InfluxConfig) -> PointWriter:
        writer = real_make_writer(cfg)
        writers.append(writer)
        real_close = writer.close

        def close() -> None:
            closed.append(writer)
            real_close()

        monkeypatch.setattr(writer, "close", close)
        return writer

    monkeypatch.setattr(collector.service, "make_writer", recording_make_writer)
    failing = make_failing(data_dir, monkeypatch)
    with pytest.raises(error, match=message) as failed:
        Collector(failing)  # makes its own InfluxDB writer (unless that is the failing step)
    # the error, whose traceback holds the half-built collector, is still alive here
    assert failed.traceback
    assert open_files(data_dir) == []
    assert running_collector(data_dir) is None  # the lock is free
    assert witness_threads() - before == set()
    assert closed == writers  # the writer it made (if it got that far) is closed

    # the operator fixes the cause; the same data directory starts at once, in this process
    monkeypatch.undo()
    (data_dir / "log.key").unlink(missing_ok=True)
    c = Collector(config(data_dir))
    try:
        assert running_collector(data_dir) is not None
        assert "collector.lock" in open_files(data_dir)
        assert len(witness_threads() - before) == 1
    finally:
        shut(c)
    assert open_files(data_dir) == []
    assert witness_threads() - before == set()


def test_a_failure_while_closing_does_not_hide_why_the_start_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "data"

    class BrokenWriter:
        def write(self, lines: object) -> None:
            pass

        def close(self) -> None:
            raise OSError("the writer's socket is gone (test)")

    monkeypatch.setattr(collector.service, "make_writer", lambda cfg: BrokenWriter())
    with (
        caplog.at_level(logging.WARNING, logger="fieldproof.collector"),
        pytest.raises(FileNotFoundError),
    ):
        Collector(missing_mqtt_ca(data_dir, monkeypatch))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "after the failed start, closing the InfluxDB writer failed too: the writer's socket "
        "is gone (test)"
    ]
    # what was opened before and after the writer is closed all the same
    assert open_files(data_dir) == []
    assert running_collector(data_dir) is None
